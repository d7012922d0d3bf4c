"""``KafkaProbe``: topics with watermarks and key configs, consumer groups with lag, and a peek that never
joins a group or commits (assign + seek)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, OffsetSpec, ResourceType  # type: ignore[attr-defined]

from probes.errors import NotFound, ProbeError
from probes.kafka_client import KafkaAdmin, client_config
from probes.kafka_headers import header_map, header_values, origin_topic
from probes.kafka_peek import KafkaPeek
from probes.models import (
    PEEK_BODY_BYTES,
    BrokerOverview,
    BrokerSnapshot,
    ConsumerInfo,
    GroupLag,
    PartitionLag,
    PeekFrom,
    PeekResult,
    QueueStats,
)
from probes.naming import DEFAULT_DLQ_PATTERNS, matches_dlq_name
from probes.paging import check_start
from probes.urls import BrokerTarget

KEY_CONFIGS = ("retention.ms", "retention.bytes", "cleanup.policy", "min.insync.replicas")
ORIGIN_SAMPLE = 5  # records read from the end of each dead-letter partition to learn where they came from
NO_COMMIT = "no committed offset"


class KafkaProbe:
    def __init__(self, target: BrokerTarget, *, dlq_patterns: Sequence[str] = DEFAULT_DLQ_PATTERNS,
                 timeout: float = 5.0, include_internal: bool = False) -> None:
        self.target = target
        from_url = target.param("dlq_patterns")
        self.dlq_patterns = tuple(from_url.split(",")) if from_url else tuple(dlq_patterns)
        self.client = KafkaAdmin(target, timeout)
        self.timeout = timeout
        self.include_internal = include_internal
        # dead-letter topic -> (high watermarks when sampled, origin topics its records' headers name)
        self._origins: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {}

    async def aclose(self) -> None:
        return None  # AdminClient has no close; its threads end with the object

    async def _metadata(self) -> Any:
        return await self.client.call(self.client.admin.list_topics, timeout=self.timeout, what="metadata")

    def _topics(self, md: Any) -> list[str]:
        return sorted(t for t in md.topics if self.include_internal or not t.startswith("__"))

    async def _guarded(self, what: str, coro: Any) -> Any:
        """Every failure becomes a ProbeError; after one the AdminClient is rebuilt (a long-lived client can
        stay broken after a broker restart while a fresh one works)."""
        try:
            return await coro
        except NotFound:
            raise
        except ProbeError:
            self.client.rebuild()
            raise
        except Exception as exc:  # a driver surprise: still one line, never an internal error
            self.client.rebuild()
            raise self.client.translate(exc, what) from None

    # ---- snapshot -------------------------------------------------------------------------------------
    async def snapshot(self) -> BrokerSnapshot:
        result: BrokerSnapshot = await self._guarded("snapshot", self._snapshot())
        return result

    async def _snapshot(self) -> BrokerSnapshot:
        started, t0 = time.time(), time.perf_counter()
        md = await self._metadata()
        topics = self._topics(md)
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(md.topics[t].partitions)]
        (low, high), configs, groups = await asyncio.gather(
            self._watermarks(partitions), self._configs(topics), self._groups(md))
        per_topic_lag: dict[str, list[GroupLag]] = {}
        group_rows: list[GroupLag] = []
        for group_id, state, members, committed, assigned in groups:
            known = sorted(t for t in {t for t, _ in committed} | {t for t, _ in assigned} if t in md.topics)
            if not known:  # neither commits nor assignments: listed by the broker, so listed here
                group_rows.append(GroupLag(
                    broker=self.target.label, group=group_id, source="", lag=0, state=state, members=members,
                    consumed=None, note=f"{NO_COMMIT} and no partitions assigned: its topics are unknown"))
            for topic in known:
                row = self._group_lag(group_id, state, members, topic, md, committed, low, high)
                group_rows.append(row)
                per_topic_lag.setdefault(topic, []).append(row)
        member_count = {t: sum(r.members for r in rows) for t, rows in per_topic_lag.items()}
        fed_by = await self._dead_letter_origins(md, topics, low, high)
        feeds: dict[str, list[str]] = {}
        for dlq_topic, origins in fed_by.items():
            for origin in origins:
                feeds.setdefault(origin, []).append(dlq_topic)
        queues = []
        for topic in topics:
            parts = sorted(md.topics[topic].partitions)
            retained = sum(high[(topic, p)] - low[(topic, p)] for p in parts)
            lags = per_topic_lag.get(topic, [])
            dlq = matches_dlq_name(topic, self.dlq_patterns)
            targets = tuple(sorted(feeds.get(topic, ())))
            queues.append(QueueStats(
                broker=self.target.label, name=topic, kind="topic", depth=retained, in_flight=0,
                consumers=member_count.get(topic, 0), publish_rate=None, deliver_rate=None,
                dead_letter_target=targets[0] if targets else None, is_dead_letter=dlq, queue_type="topic",
                dead_letter_source="name pattern" if dlq else ("record headers" if targets else None),
                dead_letter_queues=targets,
                lag=max((r.lag for r in lags), default=None), partitions=len(parts),
                appended=sum(high[(topic, p)] for p in parts),
                config=configs.get(topic, {})))
        controller = md.controller_id
        overview = BrokerOverview(
            broker=self.target.label, kind="kafka", version=None,
            node=f"controller {controller} of {len(md.brokers)} broker(s)" if controller is not None and
            controller >= 0 else f"{len(md.brokers)} broker(s)",
            cluster=md.cluster_id, queues=len(queues), messages=sum(q.depth for q in queues),
            ready=sum(q.depth for q in queues), unacked=0, consumers=sum(r.members for r in group_rows),
            connections=None, publish_rate=None, deliver_rate=None, scope=f"{len(groups)} consumer group(s)",
            raw={"brokers": {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}})
        return BrokerSnapshot(broker=self.target.label, kind="kafka", taken_at=started,
                              duration_s=time.perf_counter() - t0, overview=overview, queues=tuple(queues),
                              groups=tuple(sorted(group_rows, key=lambda g: (g.group, g.source))))

    async def _watermarks(self, partitions: list[TopicPartition]
                          ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        if not partitions:
            return {}, {}
        admin = self.client.admin
        earliest, latest = OffsetSpec.earliest(), OffsetSpec.latest()  # type: ignore[no-untyped-call]
        early = await self.client.results(admin.list_offsets({tp: earliest for tp in partitions},
                                                             request_timeout=self.timeout), "watermarks")
        late = await self.client.results(admin.list_offsets({tp: latest for tp in partitions},
                                                            request_timeout=self.timeout), "watermarks")
        return ({(tp.topic, tp.partition): max(0, r.offset) for tp, r in early.items()},
                {(tp.topic, tp.partition): max(0, r.offset) for tp, r in late.items()})

    async def _configs(self, topics: list[str]) -> dict[str, dict[str, str]]:
        if not topics:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in topics]
        found = await self.client.results(self.client.admin.describe_configs(resources,
                                                                             request_timeout=self.timeout),
                                          "topic configs")
        return {res.name: {k: str(v.value) for k, v in entries.items() if k in KEY_CONFIGS}
                for res, entries in found.items()}

    async def _groups(self, md: Any) -> list[tuple[str, str | None, int, dict[tuple[str, int], int],
                                                   set[tuple[str, int]]]]:
        """(group, state, members, committed offsets, assigned partitions) for every consumer group."""
        admin = self.client.admin
        described = await self._describe_groups()
        ids = sorted(described)
        if not ids:
            return []
        offsets = await self.client.results(
            {gid: admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(gid)],
                                                    request_timeout=self.timeout)[gid] for gid in ids},
            "committed offsets")
        out = []
        for gid in ids:
            desc = described[gid]
            committed = {(tp.topic, tp.partition): tp.offset for tp in offsets[gid].topic_partitions
                         if tp.offset >= 0}
            assigned = {(tp.topic, tp.partition) for m in desc.members
                        for tp in (m.assignment.topic_partitions if m.assignment else [])}
            state = getattr(desc.state, "name", None) or (str(desc.state) if desc.state is not None else None)
            out.append((gid, state, len(desc.members), committed, assigned))
        return out

    async def _describe_groups(self) -> dict[str, Any]:
        """Every consumer group's description (state, members, assignments), by group id."""
        admin = self.client.admin
        listing = await self.client.result(admin.list_consumer_groups(request_timeout=self.timeout),
                                           "consumer groups")
        ids = sorted(g.group_id for g in listing.valid)
        if not ids:
            return {}
        return await self.client.results(admin.describe_consumer_groups(ids, request_timeout=self.timeout),
                                         "consumer groups")

    def _group_lag(self, group: str, state: str | None, members: int, topic: str, md: Any,
                   committed: dict[tuple[str, int], int], low: dict[tuple[str, int], int],
                   high: dict[tuple[str, int], int]) -> GroupLag:
        rows = []
        for p in sorted(md.topics[topic].partitions):
            lo, hi = low.get((topic, p), 0), high.get((topic, p), 0)
            c = committed.get((topic, p))
            # no commit yet: counted as the group would start with auto.offset.reset=earliest (the retained
            # start); the broker does not know the group's reset policy, so the note says what is assumed
            lag = max(0, hi - c) if c is not None else hi - lo
            rows.append(PartitionLag(partition=p, committed=c, low=lo, high=hi, lag=lag))
        consumed = sum(r.committed for r in rows if r.committed is not None)
        missing = [r.partition for r in rows if r.committed is None]
        note = None
        if missing:
            where = "" if len(missing) == len(rows) else f" on partition(s) {', '.join(map(str, missing))}"
            note = (f"{NO_COMMIT}{where}: lag counts the retained backlog there, as auto.offset.reset=earliest "
                    f"would read it (0 there with latest)")
        return GroupLag(broker=self.target.label, group=group, source=topic, lag=sum(r.lag for r in rows),
                        state=state, members=members, consumed=consumed, partitions=tuple(rows), note=note)

    async def _dead_letter_origins(self, md: Any, topics: list[str], low: dict[tuple[str, int], int],
                                   high: dict[tuple[str, int], int]) -> dict[str, tuple[str, ...]]:
        """Dead-letter topic (by name) -> the topics its newest records' headers say they came from (Spring
        ``kafka_dlt-original-topic``, Connect ``__connect.errors.topic``, qdeck ``source``). One consumer reads
        the last few records of every such partition; a topic whose watermarks did not move is not re-read."""
        starts: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}
        stale: dict[str, tuple[int, ...]] = {}
        for topic in topics:
            if not matches_dlq_name(topic, self.dlq_patterns):
                continue
            parts = sorted(md.topics[topic].partitions)
            marks = tuple(high.get((topic, p), 0) for p in parts)
            if self._origins.get(topic, ((), ()))[0] == marks:
                continue
            stale[topic] = marks
            for p in parts:
                lo, hi = low.get((topic, p), 0), high.get((topic, p), 0)
                if hi > lo:
                    starts[(topic, p)], ends[(topic, p)] = max(lo, hi - ORIGIN_SAMPLE), hi
        if stale:
            found: dict[str, set[str]] = {t: set() for t in stale}
            if starts:
                try:
                    records = await asyncio.wait_for(asyncio.to_thread(self._sample, starts, ends),
                                                     self.timeout + 2)
                except (ProbeError, TimeoutError, KafkaException):
                    records = []  # origins stay unknown this time; the snapshot itself does not fail
                    stale = {}
                for msg in records:
                    origin = origin_topic(header_map(header_values(msg.headers())))
                    if origin and msg.topic() in found:
                        found[msg.topic()].add(origin)
            for topic, marks in stale.items():
                self._origins[topic] = (marks, tuple(sorted(found[topic])))
        return {t: origins for t, (_marks, origins) in self._origins.items() if t in md.topics and origins}

    # ---- consumers --------------------------------------------------------------------------------------
    async def consumers(self, queue: str | None = None) -> Sequence[ConsumerInfo]:
        if queue is not None:
            md = await self._guarded("metadata", self._metadata())
            if queue not in md.topics or md.topics[queue].error is not None:
                raise NotFound(f"topic {queue!r} not found at Kafka {self.client.where}")
        described = await self._guarded("consumer groups", self._describe_groups())
        found = []
        for gid in sorted(described):
            for m in described[gid].members:
                tps = m.assignment.topic_partitions if m.assignment else []
                for topic in sorted({tp.topic for tp in tps}):
                    if queue is None or topic == queue:
                        found.append(ConsumerInfo(queue=topic, tag=f"{gid}/{m.member_id}", connection=m.host,
                                                  channel=m.client_id, prefetch=None, ack_required=None,
                                                  active=True))
        return found

    # ---- peek (probes.kafka_peek) ----------------------------------------------------------------------------
    async def peek(self, queue: str, limit: int, *, force: bool = False, partition: int | None = None,
                   offset: int | None = None, body_bytes: int | None = PEEK_BODY_BYTES,
                   start: PeekFrom | None = None) -> PeekResult:
        """Up to ``limit`` records from where ``start`` says (``partition`` and ``offset`` are shorthands for its
        fields; offset negative: that many before the end), oldest first partition by partition unless it asks
        for newest first. Assigns and seeks: no group, no commit."""
        if limit < 1:
            raise ProbeError("peek needs a message count of at least 1")
        start = start or PeekFrom()
        if partition is not None or offset is not None:
            start = dataclasses.replace(start, partition=partition, offset=offset)
        check_start("kafka", queue, start)
        result: PeekResult = await self._guarded(f"peek {queue}", self._peek(queue, limit, start, body_bytes))
        return result

    async def _peek(self, queue: str, limit: int, start: PeekFrom, body_bytes: int | None) -> PeekResult:
        md = await self._metadata()
        if queue not in md.topics or md.topics[queue].error is not None:
            raise NotFound(f"topic {queue!r} not found at Kafka {self.client.where}")
        pager = KafkaPeek(self.client, self.target.label, self._consumer, self.timeout, self._watermarks)
        return await pager.page(md, queue, limit, start, body_bytes)

    def _consumer(self) -> Consumer:
        conf = client_config(self.target, self.timeout)
        conf.update({"group.id": f"qdeck-peek-{uuid.uuid4().hex}", "enable.auto.commit": False,
                     "enable.auto.offset.store": False, "enable.partition.eof": True,
                     "receive.message.max.bytes": 200_000_000})
        return Consumer(conf)

    def _sample(self, starts: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]) -> list[Any]:
        """Every partition in ``starts`` at once, each read up to its end offset (or end-of-partition)."""
        consumer = self._consumer()
        out: list[Any] = []
        open_parts = set(starts)
        deadline = time.monotonic() + self.timeout
        try:
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            while open_parts and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                tp = (msg.topic(), msg.partition())
                if tp not in open_parts:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                    open_parts.discard(tp)
                    continue
                out.append(msg)
                if (msg.offset() or 0) + 1 >= ends[tp]:
                    open_parts.discard(tp)
        except KafkaException as exc:
            raise self.client.translate(exc, "dead-letter origins") from None
        finally:
            consumer.close()
        return out


__all__ = ["KafkaError", "KafkaProbe"]
