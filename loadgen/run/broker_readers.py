"""How ``broker_sampler`` reads the request queue on each broker: one cheap call a reading, on a connection of its
own (see ``loadgen.run.broker_sampler`` for what each figure means and how often it is read).

- Redis: ``XINFO GROUPS`` (``XLEN`` before the group exists; ``XRANGE`` counting on Redis < 7, at most
  ``LAG_COUNT_LIMIT``);
- RabbitMQ: a passive ``queue.declare`` (ready messages and consumers, exact);
- Kafka: the admin API, the group's end and committed offsets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from probes.errors import NotFound, ProbeError
from probes.urls import BrokerTarget

LAG_COUNT_LIMIT = 10_000  # Redis < 7: entries counted after the group's last-delivered id, at most

__all__ = ["LAG_COUNT_LIMIT", "Backend", "Figures", "KafkaBackend", "RabbitMQBackend", "RedisBackend", "backend_for"]


@dataclass(frozen=True, slots=True)
class Figures:
    depth: int | None
    in_flight: int | None = None
    consumers: int | None = None
    lag: int | None = None


class Backend(Protocol):
    async def sample(self) -> Figures:
        """One reading of the queue; connects first when not connected. Raises ``ProbeError`` (or a driver's)."""
        ...

    def source(self) -> str:
        """Which broker calls gave which figure (what was used so far)."""
        ...

    async def reset(self) -> None:
        """Drop the connection after a failed reading: the next one makes a new one."""
        ...

    async def aclose(self) -> None: ...


def backend_for(target: BrokerTarget, queue: str, group: str | None, timeout_s: float) -> Backend:
    if target.kind == "redis":
        return RedisBackend(target, queue, group, timeout_s)
    if target.kind == "rabbitmq":
        return RabbitMQBackend(target, queue, timeout_s)
    if target.kind == "kafka":
        return KafkaBackend(target, queue, group, timeout_s)
    raise ProbeError(f"no broker sampler for {target.kind} brokers")


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


class _Sources:
    """What each figure came from, in the order first used (a run may see "no group yet", then the group)."""

    def __init__(self, default: str) -> None:
        self.default = default
        self.used: dict[str, None] = {}

    def add(self, text: str) -> None:
        self.used.setdefault(text, None)

    def text(self) -> str:
        return "; then ".join(self.used) if self.used else self.default


class RedisBackend:
    def __init__(self, target: BrokerTarget, queue: str, group: str | None, timeout_s: float) -> None:
        from probes.redis_client import redis_client

        self.target, self.queue, self.group = target, queue, group
        self.client = redis_client(target, timeout=timeout_s, read_timeout=timeout_s)
        self.sources = _Sources(f"Redis XINFO GROUPS {queue}")

    def source(self) -> str:
        return self.sources.text()

    async def sample(self) -> Figures:
        from probes.redis_client import checked

        try:
            groups = await checked(self.target, self.client.xinfo_groups(self.queue))
        except NotFound:
            self.sources.add("no stream yet: nothing waiting")
            return Figures(depth=0, in_flight=0, consumers=0, lag=0)
        group = self._pick(groups)
        if group is None:
            length = int(await checked(self.target, self.client.xlen(self.queue)))
            self.sources.add("Redis XLEN while the stream has no consumer group (every entry waits)")
            return Figures(depth=length, in_flight=0, consumers=0, lag=length)
        name = _s(group["name"])
        lag = group.get("lag")
        if lag is None:
            last = _s(group.get("last-delivered-id", "0-0"))
            after = await checked(self.target, self.client.xrange(self.queue, min=f"({last}", max="+",
                                                                  count=LAG_COUNT_LIMIT))
            lag = len(after or ())
            self.sources.add(f"Redis XINFO GROUPS, group {name}: depth = lag counted with XRANGE after the group's "
                             f"last-delivered id (this Redis gives no lag; at most {LAG_COUNT_LIMIT:,}), in_flight = "
                             "pending, consumers = the group's consumers")
        else:
            self.sources.add(f"Redis XINFO GROUPS (exact), group {name}: depth = lag = entries not yet delivered, "
                             "in_flight = pending (delivered, not acknowledged), consumers = the group's consumers")
        return Figures(depth=int(lag), in_flight=int(group.get("pending") or 0),
                       consumers=int(group.get("consumers") or 0), lag=int(lag))

    def _pick(self, groups: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        from loadgen.worker.source import DEFAULT_GROUP

        if not groups:
            return None
        named = {_s(g["name"]): g for g in groups}
        for wanted in (self.group, DEFAULT_GROUP):
            if wanted is not None and wanted in named:
                return named[wanted]
        return max(groups, key=lambda g: int(g.get("consumers") or 0))

    async def reset(self) -> None:
        return None  # redis-py drops a failed connection and makes a new one for the next command

    async def aclose(self) -> None:
        await self.client.aclose()


class RabbitMQBackend:
    SOURCE = ("RabbitMQ passive queue.declare (exact; the management API's figures trail by up to 5 s): depth = "
              "ready messages, consumers; in_flight (unacknowledged) and lag not given")

    def __init__(self, target: BrokerTarget, queue: str, timeout_s: float) -> None:
        from loadgen.brokers.amqp import AmqpLink

        self.target, self.queue, self.timeout_s = target, queue, timeout_s
        self.link: AmqpLink | None = None

    def source(self) -> str:
        return self.SOURCE

    async def sample(self) -> Figures:
        from loadgen.brokers.amqp import AmqpLink

        link = self.link
        if link is None or link.closed.done() or link.connection.is_closed:
            await self.reset()
            link = self.link = await AmqpLink.open(self.target, timeout=max(self.timeout_s - 1, 1.0))
        frame = await link.call(link.channel.queue_declare, self.queue, passive=True, what=f"queue {self.queue!r}")
        return Figures(depth=int(frame.method.message_count), consumers=int(frame.method.consumer_count))

    async def reset(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            await link.aclose()

    async def aclose(self) -> None:
        await self.reset()


class KafkaBackend:
    def __init__(self, target: BrokerTarget, queue: str, group: str | None, timeout_s: float) -> None:
        from loadgen.worker.runner import WorkerOptions
        from probes.kafka_client import KafkaAdmin

        self.target, self.queue, self.timeout_s = target, queue, timeout_s
        self.group = group or WorkerOptions(queue=queue).group_for("kafka")
        self.admin = KafkaAdmin(target, timeout_s)
        self.partitions: list[int] | None = None

    def source(self) -> str:
        return (f"Kafka admin API, group {self.group}: depth = lag = end offsets - committed offsets (records taken "
                "but not yet committed included), consumers = group members; in_flight not given")

    async def sample(self) -> Figures:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

        admin = self.admin.admin
        if self.partitions is None:
            md = await self.admin.call(admin.list_topics, self.queue, timeout=self.timeout_s, what="metadata")
            topic = md.topics.get(self.queue)
            if topic is None or topic.error is not None or not topic.partitions:
                return Figures(depth=0, consumers=0, lag=0)  # no topic yet: nothing waiting
            self.partitions = sorted(topic.partitions)
        tps = [TopicPartition(self.queue, p) for p in self.partitions]
        wait = self.timeout_s
        futures: dict[tuple[str, int], Any] = {}
        for name, spec in (("end", OffsetSpec.latest()), ("start", OffsetSpec.earliest())):  # type: ignore[no-untyped-call]
            for tp, fut in admin.list_offsets({tp: spec for tp in tps}, request_timeout=wait).items():
                futures[(name, tp.partition)] = fut
        futures[("committed", 0)] = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(self.group, tps)], request_timeout=wait)[self.group]
        futures[("group", 0)] = admin.describe_consumer_groups([self.group], request_timeout=wait)[self.group]
        got = await self.admin.results(futures, "consumer group lag")
        committed = {tp.partition: tp.offset for tp in got[("committed", 0)].topic_partitions if tp.offset >= 0}
        lag = 0
        for p in self.partitions:
            end, start = max(0, got[("end", p)].offset), max(0, got[("start", p)].offset)
            lag += max(0, end - committed.get(p, start))
        return Figures(depth=lag, consumers=len(got[("group", 0)].members), lag=lag)

    async def reset(self) -> None:
        self.partitions = None
        self.admin.rebuild()  # a long-lived client can stay broken after a broker restart while a new one works

    async def aclose(self) -> None:
        return None  # AdminClient has no close; its threads end with the object

