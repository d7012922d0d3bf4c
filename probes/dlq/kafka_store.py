"""``KafkaStore``: dead-letter actions on a Kafka topic. Kafka is a log: nothing is taken out of it.

- Removing a record = committing qdeck's own consumer group, ``qdeck-dlq`` (``GROUP``; one position per
  topic-partition, for every dead-letter topic), past it. qdeck assigns partitions and never subscribes, so the
  group has no members and never rebalances anyone; ``kafka-consumer-groups --reset-offsets --group qdeck-dlq``
  makes records visible to qdeck again. A walk starts each partition at the group's committed offset (the low
  watermark when it has none) and ends at the high watermarks taken when it starts. Which records a commit passes:
  ``probes.dlq.kafka_positions`` (never one whose publish failed).
- Writes go through an idempotent producer (``acks=all``, ``enable.idempotence``), Java's key partitioner
  (murmur2), and never create a topic (``allow.auto.create.topics=false``, and a metadata check first); each is
  confirmed by its delivery report before ``publish`` returns. Key, value (null too), every header in order, and
  the CreateTime are kept; qdeck's headers replace their old values.
- ``delete`` (purge, delete) commits past the records; with ``delete_records=True`` (the CLI's ``purge --force``)
  it also deletes them from the log (DeleteRecords) up to where every record of the walk was deleted.
- ``<topic>.parked`` is created by ``ensure`` like the source (its partition count and replication factor).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic, OffsetSpec  # type: ignore[attr-defined]

from probes.dlq.kafka_positions import Key, Positions
from probes.dlq.kafka_records import original_partition, produce_args, to_record
from probes.dlq.model import Place, Record
from probes.dlq.provenance import parked_name
from probes.dlq.writes import require_write
from probes.errors import ConfigError, NotFound, ProbeError
from probes.kafka_client import KafkaAdmin, client_config
from probes.urls import BrokerTarget

GROUP = "qdeck-dlq"  # the consumer group whose committed offsets say what qdeck has taken out of each topic
T = TypeVar("T")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_PENDING = "pending"
Plan = dict[int, tuple[int, int]]  # partition -> (first offset to read, high watermark)


class KafkaStore:
    atomic = False

    def __init__(self, target: BrokerTarget, source: str, *, delete_records: bool = False,
                 timeout: float = 10.0, **_options: Any) -> None:
        self.target, self.source = target, source
        self.delete_records = delete_records
        self.timeout = timeout
        self.client: KafkaAdmin | None = None
        self.partitions: dict[str, int] = {}  # topic -> partition count (the last metadata)
        self.replicas = 1  # the source's replication factor
        self._plan: Plan | None = None  # from count(), for the read() that follows it
        self._walk: Positions | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._consumed: dict[str, bool] = {}
        self._cut: dict[int, int] = {}  # DeleteRecords done in this walk, per partition

    # ---- connection --------------------------------------------------------------------------------------
    async def __aenter__(self) -> KafkaStore:
        self.client = KafkaAdmin(self.target, self.timeout)
        await self._metadata()
        if self.source not in self.partitions:
            raise NotFound(f"topic {self.source!r} not found at Kafka {self.admin.where}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        consumer, self._consumer, self._producer = self._consumer, None, None
        if consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                await asyncio.to_thread(consumer.close)  # never subscribed: leaves no member behind

    @property
    def admin(self) -> KafkaAdmin:
        if self.client is None:
            raise ProbeError("the Kafka dead-letter store is not connected (use it in 'async with')")
        return self.client

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A blocking client call in a thread (each bounds its own wait); driver errors become ProbeErrors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except (KafkaException, TimeoutError, RuntimeError) as exc:  # RuntimeError: a client closed under it
            raise self.admin.translate(exc, what) from None

    async def _metadata(self) -> None:
        # every topic at once: a metadata request naming a topic makes brokers with auto-creation create it
        md = await self.admin.call(self.admin.admin.list_topics, timeout=self.timeout, what="metadata")
        self.partitions = {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}
        source = md.topics.get(self.source)
        if source is not None and source.partitions:
            self.replicas = max(1, len(next(iter(source.partitions.values())).replicas))

    def _settings(self) -> dict[str, Any]:
        conf = client_config(self.target, self.timeout)
        conf["error_cb"] = self.admin._on_error  # an authentication failure explains a timeout (translate)
        return conf

    def _reader(self) -> Consumer:
        if self._consumer is None:
            conf = self._settings()
            conf.update({"group.id": GROUP, "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest",
                         "receive.message.max.bytes": 200_000_000})
            try:
                self._consumer = Consumer(conf)
            except KafkaException as exc:
                raise self.admin.translate(exc, "consumer settings") from None
        return self._consumer

    def _writer(self) -> Producer:
        if self._producer is None:
            conf = self._settings()
            conf.update({"acks": "all", "enable.idempotence": True, "allow.auto.create.topics": False,
                         "partitioner": "murmur2_random", "linger.ms": 5,
                         "message.timeout.ms": int(self.timeout * 3000)})
            try:
                self._producer = Producer(conf)
            except KafkaException as exc:
                raise self.admin.translate(exc, "producer settings") from None
        return self._producer

    # ---- reading ----------------------------------------------------------------------------------------------
    async def _make_plan(self) -> Plan:
        """Per partition: from the group's committed offset (the low watermark when none, or below it) to the
        high watermark now."""
        admin = self.admin
        parts = [TopicPartition(self.source, p) for p in range(self.partitions[self.source])]
        request = [ConsumerGroupTopicPartitions(GROUP, parts)]
        answer = await admin.result(admin.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
                                    [GROUP], "qdeck's committed offsets")
        committed = {tp.partition: tp.offset for tp in answer.topic_partitions if tp.offset >= 0}
        earliest, latest = OffsetSpec.earliest(), OffsetSpec.latest()  # type: ignore[no-untyped-call]
        low = await admin.results(admin.admin.list_offsets({tp: earliest for tp in parts},
                                                           request_timeout=self.timeout), "watermarks")
        high = await admin.results(admin.admin.list_offsets({tp: latest for tp in parts},
                                                            request_timeout=self.timeout), "watermarks")
        plan: Plan = {}
        for tp in parts:
            lo, hi = max(0, low[tp].offset), max(0, high[tp].offset)
            plan[tp.partition] = (min(max(committed.get(tp.partition, lo), lo), hi), hi)
        return plan

    async def count(self) -> int | None:
        """Records the group has not passed (for the progress bar); the walk that follows reads exactly these."""
        self._plan = await self._make_plan()
        return sum(high - start for start, high in self._plan.values())

    async def read(self, batch: int) -> AsyncIterator[list[Record]]:
        plan = self._plan if self._plan is not None else await self._make_plan()
        self._plan = None
        walk = self._walk = Positions({p: start for p, (start, _high) in plan.items()})
        self._cut = {}
        self._consumed.clear()  # a new action asks the broker again who consumes what
        todo = {p: span for p, span in plan.items() if span[0] < span[1]}
        if not todo:
            return
        consumer = self._reader()
        await self._run(f"read {self.source}", self._assign, consumer,
                        [TopicPartition(self.source, p, start) for p, (start, _h) in todo.items()])
        stop = threading.Event()

        def fetch() -> asyncio.Future[list[Record]]:
            return asyncio.ensure_future(self._run(f"read {self.source}", self._fetch, consumer, todo, max(batch, 1),
                                                   stop))

        pending: asyncio.Future[list[Record]] | None = fetch()
        try:
            while pending is not None:
                records = await pending
                # the next batch is read (and converted) while the engine publishes this one
                pending = fetch() if todo else None
                if records:
                    walk.read(r.handle for r in records)
                    yield records
        finally:
            stop.set()
            if pending is not None:
                with contextlib.suppress(ProbeError):
                    await pending
            with contextlib.suppress(KafkaException, RuntimeError):
                await asyncio.to_thread(consumer.unassign)

    @staticmethod
    def _assign(consumer: Consumer, parts: list[TopicPartition]) -> None:
        consumer.assign(parts)
        consumer.resume(parts)  # an earlier walk of this store paused them at its end

    def _fetch(self, consumer: Consumer, todo: dict[int, tuple[int, int]], batch: int,
               stop: threading.Event) -> list[Record]:
        """Up to ``batch`` records of the partitions still open, each below its high watermark; a partition
        closes at its end (transaction markers take offsets that never arrive as records)."""
        out: list[Record] = []
        idle_until = time.monotonic() + self.timeout * 2
        while todo and len(out) < batch and not stop.is_set():
            msgs = consumer.consume(batch - len(out), 0.2)
            if not msgs:
                if out:
                    break
                if time.monotonic() > idle_until:
                    raise TimeoutError
                continue
            idle_until = time.monotonic() + self.timeout * 2
            for msg in msgs:
                p = msg.partition()
                err = msg.error()
                if p not in todo or msg.topic() != self.source:
                    continue
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    self._close(consumer, todo, p)
                    continue
                offset: int = msg.offset() or 0
                if offset >= todo[p][1]:
                    self._close(consumer, todo, p)
                    continue
                if offset < todo[p][0]:
                    continue
                out.append(to_record(msg, self.partitions))
                todo[p] = (offset + 1, todo[p][1])
                if offset + 1 >= todo[p][1]:
                    self._close(consumer, todo, p)
        return out

    def _close(self, consumer: Consumer, todo: dict[int, tuple[int, int]], p: int) -> None:
        del todo[p]
        consumer.pause([TopicPartition(self.source, p)])

    # ---- places -----------------------------------------------------------------------------------------------
    def parked(self) -> Place | None:
        return Place("topic", parked_name(self.source))

    async def resolve(self, name: str) -> Place:
        if not _TOPIC_NAME.match(name) or name in (".", ".."):
            raise ConfigError(f"{name!r} is not a Kafka topic name (letters, digits, '.', '_' and '-', at most 249)")
        return Place("topic", name)

    async def preflight(self, place: Place) -> list[str]:
        await self._metadata()
        problems = []
        if place.name not in self.partitions:
            problems.append("it does not exist (qdeck never creates a destination topic)")
        elif not await self._has_consumers(place.name):
            problems.append("nobody consumes it (no consumer group with members reads it)")
        if place.name == self.source:
            problems.append("it is the source itself")
        return problems

    async def _has_consumers(self, topic: str) -> bool:
        """Whether a consumer group with members is assigned the topic or has committed offsets on it."""
        if topic in self._consumed:
            return self._consumed[topic]
        admin = self.admin
        listing = await admin.result(admin.admin.list_consumer_groups(request_timeout=self.timeout),
                                     "consumer groups")
        ids = sorted(g.group_id for g in listing.valid if g.group_id != GROUP)
        described = await admin.results(admin.admin.describe_consumer_groups(ids, request_timeout=self.timeout),
                                        "consumer groups") if ids else {}
        active = [gid for gid, d in described.items() if d.members]
        found = any(tp.topic == topic for gid in active for m in described[gid].members
                    for tp in (m.assignment.topic_partitions if m.assignment else []))
        if not found and active:
            offsets = await admin.results(
                {gid: admin.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(gid)],
                                                              request_timeout=self.timeout)[gid] for gid in active},
                "committed offsets")
            found = any(tp.topic == topic and tp.offset >= 0 for o in offsets.values() for tp in o.topic_partitions)
        self._consumed[topic] = found
        return found

    async def ensure(self, place: Place) -> None:
        await self._metadata()
        if place.name in self.partitions:
            return
        require_write(self.target, f"create topic {place.name}")
        new = NewTopic(place.name, num_partitions=self.partitions[self.source], replication_factor=self.replicas)
        try:
            await self.admin.result(self.admin.admin.create_topics([new], request_timeout=self.timeout)[place.name],
                                    f"create topic {place.name}")
        except ProbeError:
            await self._metadata()
            if place.name not in self.partitions:
                raise
        await self._wait_for_topic(place.name)

    async def _wait_for_topic(self, name: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            await self._metadata()
            if name in self.partitions or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    # ---- writing ----------------------------------------------------------------------------------------------
    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        require_write(self.target, f"write to {', '.join(sorted({p.name for _r, p, _h in pairs}))}")
        if any(p.name not in self.partitions for _r, p, _h in pairs):
            await self._metadata()  # created since?
        items = [(r, p.name, self._partition(p, None), h) for r, p, h in pairs]
        results = await self._run("publish", self._produce, items)
        if self._walk is not None:
            self._walk.failed(_key(r) for (r, _p, _h), why in zip(pairs, results, strict=True) if why is not None)
        return results

    async def write(self, place: Place, records: Sequence[Record]) -> list[str | None]:
        require_write(self.target, f"import into {place.name}")
        await self._metadata()
        items = [(r, place.name, self._partition(place, original_partition(r)), None) for r in records]
        return await self._run(f"import into {place.name}", self._produce, items)

    def _partition(self, place: Place, fallback: int | None) -> int:
        """The place's partition where the topic has it, else ``fallback`` where it has that, else -1 (the
        partitioner: murmur2 of the key, as Java producers place keyed records)."""
        count = self.partitions.get(place.name, 0)
        for p in (place.partition, fallback):
            if p is not None and 0 <= p < count:
                return p
        return -1

    def _produce(self, items: Sequence[tuple[Record, str, int, dict[str, Any] | None]]) -> list[str | None]:
        """Produce every record and wait for every delivery report: per record None (written, acks=all) or why
        not."""
        producer = self._writer()
        results: list[str | None] = [_PENDING] * len(items)
        fatal = False

        def report(i: int, topic: str) -> Callable[[Any, Any], None]:
            def delivered(err: Any, _msg: Any) -> None:
                nonlocal fatal
                results[i] = None if err is None else f"{topic}: {err.str()}"
                fatal = fatal or (err is not None and err.fatal())
            return delivered

        for i, (r, topic, partition, extra) in enumerate(items):
            if topic not in self.partitions:
                results[i] = f"{topic}: the topic does not exist (qdeck never creates a destination topic)"
                continue
            key, value, headers, stamp = produce_args(r, extra)
            while True:
                try:
                    producer.produce(topic, value, key, partition=partition, headers=headers, timestamp=stamp,
                                     on_delivery=report(i, topic))
                    break
                except BufferError:
                    producer.poll(0.05)  # the local queue is full: serve delivery reports and go on
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    results[i] = f"{topic}: {err.str() if isinstance(err, KafkaError) else exc}"
                    break
        left = producer.flush(self.timeout * 3 + 5)
        if left:
            for i, why in enumerate(results):
                if why == _PENDING:
                    results[i] = f"{items[i][1]}: not confirmed within {self.timeout * 3 + 5:g} s"
        if fatal or left:
            self._producer = None  # an idempotent producer's fatal error ends it: the next publish builds another
        return results

    # ---- settling -----------------------------------------------------------------------------------------------
    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        if not records:
            return []
        require_write(self.target, f"remove messages from {self.source}")
        passed = await self._advance(records)
        return [r for r in records if _key(r) in passed]

    async def delete(self, records: Sequence[Record]) -> None:
        if not records:
            return
        require_write(self.target, f"delete messages in {self.source}")
        await self._advance(records)
        walk = self._walk
        if not self.delete_records or walk is None:
            return
        cut = {p: o for p, o in walk.deletable.items() if o > self._cut.get(p, walk.start.get(p, 0))}
        if cut:
            where = [TopicPartition(self.source, p, o) for p, o in sorted(cut.items())]
            futures = self.admin.admin.delete_records(where, request_timeout=self.timeout)
            await self.admin.results(futures, f"delete records in {self.source}")
            self._cut.update(cut)

    async def _advance(self, records: Sequence[Record]) -> set[Key]:
        walk = self._walk
        if walk is None:
            raise ProbeError(f"no walk of {self.source} is under way: only records it read can be removed")
        moved, passed = walk.removed(_key(r) for r in records)
        if moved:
            offsets = [TopicPartition(self.source, p, o) for p, o in sorted(moved.items())]
            await self._run(f"commit {GROUP} on {self.source}", self._commit, offsets)
            walk.committed_to(moved)
        return passed

    def _commit(self, offsets: list[TopicPartition]) -> None:
        done = self._reader().commit(offsets=offsets, asynchronous=False) or []
        for tp in done:
            if tp.error is not None:
                raise KafkaException(tp.error)

    async def release(self, records: Sequence[Record]) -> None:
        if self._walk is not None:
            self._walk.released(_key(r) for r in records)  # failed ones stay failed: never passed


def _key(r: Record) -> Key:
    handle = r.handle
    if isinstance(handle, tuple) and len(handle) == 2:
        return int(handle[0]), int(handle[1])
    p, _, o = r.id.partition(":")
    return int(p), int(o)
