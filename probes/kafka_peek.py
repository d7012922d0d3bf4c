"""Kafka's paged peek: where a walk starts (the low watermark, an offset, a time, a group's committed offsets), one
page of it, and the cursor for the rest. Assign + seek only: no group joined, nothing committed.

A walk is fixed when it starts: per partition, offsets ``low`` to ``high`` (the high watermark then), so pages
neither repeat nor skip a record and the total stays put; records that arrive later belong to a new peek. Oldest
first reads partition by partition in offset order; newest first merges the partitions by record time (within a
partition always by offset, so each page takes a suffix of every partition's range and the cursor stays exact).
Reads stop at ``high``: transaction markers and aborted records take offsets that never arrive as records.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

from probes.death_fields import death_from_fields
from probes.errors import NotFound
from probes.kafka_client import KafkaAdmin
from probes.kafka_headers import header_map, header_values
from probes.models import KafkaRange, PeekCursor, PeekedMessage, PeekFrom, PeekResult, cut_body
from probes.paging import queue_tag

Marks = dict[tuple[str, int], int]


class KafkaPeek:
    def __init__(self, client: KafkaAdmin, label: str, consumer: Callable[[], Consumer], timeout: float,
                 watermarks: Callable[[list[TopicPartition]], Any]) -> None:
        self.client, self.label, self.consumer, self.timeout = client, label, consumer, timeout
        self.watermarks = watermarks  # async (partitions) -> (low, high)

    async def page(self, md: Any, topic: str, limit: int, start: PeekFrom, body_bytes: int | None) -> PeekResult:
        parts = sorted(md.topics[topic].partitions)
        notes: list[str] = []
        cursor = start.after
        if cursor is not None:
            missing = [r.partition for r in cursor.ranges if r.partition not in parts]
            if missing:
                raise NotFound(f"topic {topic!r} has no partition {missing[0]} any more: start a new peek")
            low, _high = await self.watermarks([TopicPartition(topic, r.partition) for r in cursor.ranges])
            ranges = [KafkaRange(r.partition, max(r.low, min(low[(topic, r.partition)], r.high)), r.high)
                      for r in cursor.ranges]
            gone = sum(n.low - r.low for n, r in zip(ranges, cursor.ranges, strict=True))
            if gone:
                notes.append(f"{gone:,} record(s) of this walk were deleted by retention since the last page")
            newest, first, total, scope = cursor.newest, cursor.shown, cursor.total, None
        else:
            if start.partition is not None:
                if start.partition not in parts:
                    raise NotFound(f"topic {topic!r} has no partition {start.partition} (it has {len(parts)})")
                parts = [start.partition]
            low, high = await self.watermarks([TopicPartition(topic, p) for p in parts])
            starts, scope = await self._starts(topic, parts, low, high, start, notes)
            ranges = [KafkaRange(p, starts[p], high[(topic, p)]) for p in parts]
            newest, first, total = start.newest, 0, sum(r.high - r.low for r in ranges)
            if start.partition is not None:
                scope = f"partition {start.partition}" + (f", {scope}" if scope else "")
        todo = [r for r in ranges if r.low < r.high]
        read = self._read_newest if newest else self._read_oldest
        try:
            records, rest = await asyncio.wait_for(asyncio.to_thread(read, topic, todo, limit),
                                                   self.timeout * 2 + 5)
        except TimeoutError:
            raise self.client.translate(TimeoutError(), f"peek {topic}") from None
        messages = tuple(record(first + i, r, body_bytes) for i, r in enumerate(records))
        shown = first + len(messages)
        nxt = PeekCursor("kafka", queue_tag(topic), newest, shown, total=total, ranges=tuple(rest)) if rest else None
        several = len(parts) > 1  # on a later page: the topic's partitions (the walk's first page knew better)
        order = ("newest first" + (" (partitions merged by record time)" if several else "") if newest else
                 "oldest first" + (", partition by partition" if several else ""))
        return PeekResult(broker=self.label, queue=topic, messages=messages, side_effect=None, first=first,
                          total=total, next=nxt, order=order, scope=scope, notes=tuple(notes))

    async def _starts(self, topic: str, parts: list[int], low: Marks, high: Marks, start: PeekFrom,
                      notes: list[str]) -> tuple[dict[int, int], str | None]:
        """Each partition's first offset: the low watermark, or where ``start`` says (clamped to what is kept)."""
        lo = {p: low[(topic, p)] for p in parts}
        hi = {p: high[(topic, p)] for p in parts}
        at: dict[int, int] = dict(lo)
        scope = None
        if start.offset is not None:
            o = start.offset
            at = {p: hi[p] + o if o < 0 else o for p in parts}
            scope = f"from offset {o}" if o >= 0 else f"the last {-o:,} per partition"
        elif start.since is not None:
            ms = int(start.since.timestamp() * 1000)
            spec = OffsetSpec.for_timestamp(ms)
            found = await self.client.results(self.client.admin.list_offsets(
                {TopicPartition(topic, p): spec for p in parts}, request_timeout=self.timeout), "offsets for a time")
            at = {tp.partition: r.offset if r.offset >= 0 else hi[tp.partition] for tp, r in found.items()}
            scope = f"since {start.since.astimezone(UTC).isoformat(timespec='seconds')}"
        elif start.group is not None:
            request = [ConsumerGroupTopicPartitions(start.group, [TopicPartition(topic, p) for p in parts])]
            future = self.client.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
            answer = await self.client.result(future[start.group], "committed offsets")
            committed = {tp.partition: tp.offset for tp in answer.topic_partitions
                         if tp.topic == topic and tp.offset >= 0}
            if not committed:
                raise NotFound(f"consumer group {start.group!r} has no committed offset on topic {topic!r} "
                               "(a mistyped group reads the same)")
            none = [p for p in parts if p not in committed]
            if none:
                notes.append(f"group {start.group!r} has no committed offset on partition(s) "
                             f"{', '.join(map(str, none))}: read from the retained start there")
            at = {p: committed.get(p, lo[p]) for p in parts}
            scope = f"what group {start.group!r} has not consumed (from its committed offsets)"
        return {p: min(max(at[p], lo[p]), hi[p]) for p in parts}, scope

    # ---- reading (in a thread) --------------------------------------------------------------------------------
    def _read_oldest(self, topic: str, ranges: list[KafkaRange], limit: int) -> tuple[list[Any], list[KafkaRange]]:
        """Partitions one after another, each from ``low`` up to ``high``, ``limit`` records in all."""
        consumer = self.consumer()
        out: list[Any] = []
        rest: list[KafkaRange] = []
        deadline = time.monotonic() + self.timeout * 2
        try:
            for r in ranges:
                if len(out) >= limit:
                    rest.append(r)
                    continue
                consumer.assign([TopicPartition(topic, r.partition, r.low)])
                nxt = r.low
                while len(out) < limit and nxt < r.high:
                    msg = self._poll(consumer, deadline)
                    if msg is None or msg.topic() != topic or msg.partition() != r.partition:
                        continue
                    if _eof(msg):
                        nxt = r.high  # nothing but markers left before the end
                        break
                    off = msg.offset()
                    if off >= r.high:
                        nxt = r.high
                        break
                    if off >= nxt:
                        out.append(msg)
                        nxt = off + 1
                consumer.unassign()
                if nxt < r.high:
                    rest.append(KafkaRange(r.partition, nxt, r.high))
        except (KafkaException, TimeoutError) as exc:
            raise self.client.translate(exc, f"peek {topic}") from None
        finally:
            consumer.close()  # never subscribed, never committed: leaves no group behind
        return out, rest

    def _read_newest(self, topic: str, ranges: list[KafkaRange], limit: int) -> tuple[list[Any], list[KafkaRange]]:
        """Up to ``limit`` of the newest records of every partition (read backwards in chunks, all partitions at
        once), merged newest first by record time; every partition gives up a suffix of its range."""
        bottom = {r.partition: r.low for r in ranges}
        ceiling = {r.partition: r.high for r in ranges}  # read below this next
        per: dict[int, list[Any]] = {r.partition: [] for r in ranges}  # each newest first
        deadline = time.monotonic() + self.timeout * 2
        try:
            while True:  # one round unless offsets hold no record (transaction markers, compaction)
                want = {p: (max(bottom[p], ceiling[p] - (limit - len(per[p]))), ceiling[p]) for p in per
                        if len(per[p]) < limit and ceiling[p] > bottom[p]}
                if not want:
                    break
                got = self._read_chunks(topic, want, deadline)
                for p, (lo, _hi) in want.items():
                    per[p].extend(reversed(got[p]))
                    ceiling[p] = lo
        except (KafkaException, TimeoutError) as exc:
            raise self.client.translate(exc, f"peek {topic}") from None
        heads = [(-_ms(recs[0]), p, 0) for p, recs in per.items() if recs]
        heapq.heapify(heads)
        out: list[Any] = []
        taken = {p: 0 for p in per}
        while heads and len(out) < limit:
            _key, p, i = heapq.heappop(heads)
            out.append(per[p][i])
            taken[p] = i + 1
            if i + 1 < len(per[p]):
                heapq.heappush(heads, (-_ms(per[p][i + 1]), p, i + 1))
        rest = []
        for r in ranges:
            n, recs = taken[r.partition], per[r.partition]
            if n == len(recs) and ceiling[r.partition] <= r.low:
                continue  # every record of the range shown (what is left are markers)
            high = recs[n - 1].offset() if n else r.high
            if r.low < high:
                rest.append(KafkaRange(r.partition, r.low, high))
        return out, rest

    def _read_chunks(self, topic: str, want: dict[int, tuple[int, int]], deadline: float) -> dict[int, list[Any]]:
        """Offsets ``[lo, hi)`` of every partition in ``want`` at once, each in offset order. A consumer of its
        own: an end-of-partition event left from an earlier read must not end this one."""
        got: dict[int, list[Any]] = {p: [] for p in want}
        open_parts = set(want)
        consumer = self.consumer()
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in want.items()])
        try:
            while open_parts:
                msg = self._poll(consumer, deadline)
                if msg is None or msg.topic() != topic or msg.partition() not in open_parts:
                    continue
                p = msg.partition()
                if _eof(msg):
                    open_parts.discard(p)
                    continue
                lo, hi = want[p]
                off = msg.offset()
                if off >= hi:
                    open_parts.discard(p)
                    continue
                if off >= lo and (not got[p] or off > got[p][-1].offset()):
                    got[p].append(msg)
                if off + 1 >= hi:
                    open_parts.discard(p)
        finally:
            consumer.close()  # never subscribed, never committed: leaves no group behind
        return got

    @staticmethod
    def _poll(consumer: Consumer, deadline: float) -> Any:
        if time.monotonic() >= deadline:
            raise TimeoutError
        msg = consumer.poll(0.2)
        if msg is not None:
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)
        return msg


def _eof(msg: Any) -> bool:
    err = msg.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


def _ms(msg: Any) -> int:
    kind, ms = msg.timestamp()
    return int(ms) if kind != 0 and ms is not None and ms >= 0 else -1


def record(position: int, msg: Any, body_bytes: int | None) -> PeekedMessage:
    value = msg.value() or b""
    shown, cut = cut_body(value, body_bytes)
    exact = header_values(msg.headers())
    headers = header_map(exact)
    kind, ms = msg.timestamp()
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC) if kind != 0 and ms > 0 else None
    death = death_from_fields(headers, stamp)
    key: bytes | None = msg.key()
    key_text = None
    if key is not None:
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            key_text = None
    shown_key = "" if key is None else f" · key {key_text if key_text is not None else 'base64:' + _b64(key)}"
    return PeekedMessage(position=position, body=shown, size=len(value), body_truncated=cut,
                         message_id=f"{msg.partition()}:{msg.offset()}{shown_key}",
                         timestamp=stamp, key=key, partition=msg.partition(), offset=msg.offset(),
                         headers=headers, deaths=(death,) if death else (),
                         first_death_reason=death.reason if death else None,
                         first_death_queue=death.queue if death else None,
                         key_text=key_text, header_list=exact)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
