"""``RedisProbe``: streams (groups, pending, lag) and list queues, found by a budgeted SCAN; peeks never consume.

Job frameworks' layouts are recognised: RQ (``probes.redis_rq``) and Celery's Redis transport
(``probes.redis_celery``). Dead-letter entries carry provenance fields (qdeck's worker: ``reason``, ``source``,
``attempts``, ``failed_at``; others: ``original_stream``, ``original_id``, ``group``, ``consumer``, ``deliveries``,
``error``); the peek turns them into death records (``probes.death_fields``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Mapping, Sequence
from typing import Any

from probes.errors import NotFound, ProbeError
from probes.models import (
    PEEK_BODY_BYTES,
    BrokerOverview,
    BrokerSnapshot,
    ConsumerInfo,
    GroupLag,
    PeekFrom,
    PeekResult,
    QueueStats,
)
from probes.naming import DEFAULT_DLQ_PATTERNS, matches_dlq_name
from probes.paging import check_start
from probes.redis_celery import BINDING_PREFIX, celery_bound, celery_queues
from probes.redis_client import checked, redis_client
from probes.redis_peek import RedisPeek
from probes.redis_rq import RqLayout
from probes.redis_scan import ScanBudget, scan_type
from probes.urls import BrokerTarget

DEFAULT_LIST_PATTERNS = ("*queue*", "celery", "*dlq*", "*dead*", "*jobs*", "*tasks*")
PENDING_SAMPLE = 100  # XPENDING range size for oldest idle / highest delivery count
LAG_COUNT_LIMIT = 10_000  # Redis < 7: lag counted with XRANGE up to this many entries


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


class RedisProbe:
    def __init__(self, target: BrokerTarget, *, dlq_patterns: Sequence[str] = DEFAULT_DLQ_PATTERNS,
                 list_patterns: Sequence[str] = DEFAULT_LIST_PATTERNS, scan_calls: int = 100,
                 scan_count: int = 1000, scan_seconds: float = 2.0, timeout: float = 10.0) -> None:
        self.target = target
        self.dlq_patterns = tuple(dlq_patterns)
        from_url = target.param("list_patterns")
        self.list_patterns = tuple(from_url.split(",")) if from_url else tuple(list_patterns)
        self.scan = (scan_calls, scan_count, scan_seconds)
        self.rq = RqLayout(target.param("rq_prefix") or "rq")
        self.client = redis_client(target, timeout=timeout, read_timeout=timeout)
        self._version: tuple[int, ...] | None = None
        self._version_text: str | None = None

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _call(self, coro: Any) -> Any:
        """Await a redis-py call, translating its errors into ``ProbeError``s with no secret in them."""
        return await checked(self.target, coro)

    async def version(self) -> tuple[int, ...]:
        if self._version is None:
            info = await self._call(self.client.info("server"))
            self._version_text = _s(info.get("redis_version", "0"))
            self._version = tuple(int(p) for p in self._version_text.split(".") if p.isdigit())
        return self._version

    # ---- snapshot -------------------------------------------------------------------------------------
    async def snapshot(self) -> BrokerSnapshot:
        started, t0 = time.time(), time.perf_counter()
        version = await self.version()
        calls, count, seconds = self.scan
        budget = ScanBudget(max_calls=calls, count=count, max_seconds=seconds)
        streams, streams_done = await self._call(scan_type(self.client, "stream", budget, calls * 2 // 5))
        lists, lists_done = await self._call(scan_type(self.client, "list", budget, calls * 4 // 5 - budget.calls))
        bindings, bindings_done = await self._call(scan_type(self.client, "set", budget, calls - budget.calls,
                                                             match=BINDING_PREFIX + "*"))
        notes = []
        if not (streams_done and lists_done and bindings_done):
            dbsize = await self._call(self.client.dbsize())
            notes.append(f"partial: the key scan stopped at its budget ({budget.calls} SCAN calls of COUNT "
                         f"{budget.count}, {budget.max_seconds:g} s) in a keyspace of {dbsize:,} keys; "
                         "some streams, lists or Celery queues may be missing")
        list_keys = {_s(k) for k in lists}
        layouts = await self.rq.rows(self.client, self._call, self.target.label, list_keys)
        celery = await celery_queues(self.client, self._call, self.target.label, bindings,
                                     lambda name: matches_dlq_name(name, self.dlq_patterns))
        notes += celery.notes
        claimed = {q.name for q in layouts} | celery.keys
        stream_names = sorted({n for n in (_s(k) for k in streams) if not self.rq.is_internal_stream(n)})
        list_names = sorted(k for k in list_keys - claimed if any(fnmatch.fnmatchcase(k, p) for p in self.list_patterns)
                            or matches_dlq_name(k, self.dlq_patterns))
        per_stream = await asyncio.gather(*(self._stream(name, version) for name in stream_names))
        queues = [q for q, _ in per_stream if q is not None]
        groups = [g for _, gs in per_stream for g in gs]
        queues += await self._lists(list_names)
        queues += layouts + celery.rows
        queues.sort(key=lambda q: q.name)
        overview = BrokerOverview(
            broker=self.target.label, kind="redis", version=self._version_text, node=f"{self.target.host}:"
            f"{self.target.port}", cluster=None, queues=len(queues), messages=sum(q.depth for q in queues),
            ready=sum(q.depth for q in queues), unacked=sum(q.in_flight for q in queues),
            consumers=sum(q.consumers for q in queues), connections=None, publish_rate=None, deliver_rate=None,
            scope=f"db {self.target.path or 0}")
        return BrokerSnapshot(broker=self.target.label, kind="redis", taken_at=started,
                              duration_s=time.perf_counter() - t0, overview=overview, queues=tuple(queues),
                              partial=bool(notes), notes=tuple(notes), groups=tuple(groups))

    async def _stream(self, name: str, version: tuple[int, ...]) -> tuple[QueueStats | None, list[GroupLag]]:
        try:
            info = await self._call(self.client.xinfo_stream(name))
            raw_groups = await self._call(self.client.xinfo_groups(name))
        except NotFound:
            return None, []  # deleted between SCAN and XINFO; any other failure fails the snapshot
        length = int(info.get("length", 0))
        groups = [await self._group(name, g, version) for g in raw_groups]
        consumers = sum(int(g.get("consumers", 0)) for g in raw_groups)
        dlq = matches_dlq_name(name, self.dlq_patterns)
        stats = QueueStats(
            broker=self.target.label, name=name, kind="stream", depth=length,
            in_flight=sum(int(g.get("pending", 0)) for g in raw_groups), consumers=consumers,
            publish_rate=None, deliver_rate=None, dead_letter_target=None, is_dead_letter=dlq, queue_type="stream",
            dead_letter_source="name pattern" if dlq else None, lag=max((g.lag for g in groups), default=None),
            raw={"length": length, "groups": len(raw_groups)},
            appended=int(info["entries-added"]) if info.get("entries-added") is not None else None)  # Redis ≥ 7
        return stats, groups

    async def _group(self, stream: str, g: Mapping[str, Any], version: tuple[int, ...]) -> GroupLag:
        group = _s(g["name"])
        pending = int(g.get("pending", 0))
        lag = g.get("lag") if version >= (7,) else None
        exact = True
        if lag is None:  # Redis < 7, or 7 after deletions: count the entries after last-delivered-id
            last = _s(g.get("last-delivered-id", "0-0"))
            after = await self._call(self.client.xrange(stream, min=f"({last}", max="+", count=LAG_COUNT_LIMIT))
            lag, exact = len(after), len(after) < LAG_COUNT_LIMIT
        oldest_idle = max_deliveries = None
        if pending:
            sample = await self._call(self.client.xpending_range(stream, group, min="-", max="+",
                                                                 count=PENDING_SAMPLE))
            if sample:
                oldest_idle = max(int(p["time_since_delivered"]) for p in sample)
                max_deliveries = max(int(p["times_delivered"]) for p in sample)
        entries_read = g.get("entries-read")
        return GroupLag(broker=self.target.label, group=group, source=stream, lag=int(lag), state=None,
                        members=int(g.get("consumers", 0)), pending=pending,
                        consumed=int(entries_read) if entries_read is not None else None, lag_exact=exact,
                        oldest_pending_idle_ms=oldest_idle, max_delivery_count=max_deliveries)

    async def _lists(self, names: Sequence[str]) -> list[QueueStats]:
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        lengths = await self._call(pipe.execute())
        rows = []
        for name, n in zip(names, lengths, strict=True):
            dlq = matches_dlq_name(name, self.dlq_patterns)
            rows.append(QueueStats(broker=self.target.label, name=name, kind="list", depth=int(n), in_flight=0,
                                   consumers=0, publish_rate=None, deliver_rate=None, dead_letter_target=None,
                                   is_dead_letter=dlq, queue_type="list",
                                   dead_letter_source="name pattern" if dlq else None))
        return rows

    # ---- consumers ------------------------------------------------------------------------------------
    async def consumers(self, queue: str | None = None) -> Sequence[ConsumerInfo]:
        if queue:
            streams = [queue]
        else:
            calls, count, seconds = self.scan
            keys, _complete = await self._call(scan_type(self.client, "stream",
                                                         ScanBudget(calls, count, seconds), calls))
            streams = sorted({n for n in (_s(k) for k in keys) if not self.rq.is_internal_stream(n)})
        found: list[ConsumerInfo] = []
        for stream in streams:
            key_type = await self._call(self.client.type(stream))
            if key_type == b"list" and queue:
                return await self.rq.workers(self.client, self._call, stream) or []
            if key_type == b"none" and queue:
                # RQ and kombu delete a queue's list when it empties: an idle queue is not a typo
                if await self.rq.registered(self.client, self._call, queue):
                    return await self.rq.workers(self.client, self._call, queue) or []
                if await celery_bound(self.client, self._call, queue, self._binding_keys):
                    return []
                raise NotFound(f"no stream or list named {queue!r} in Redis db {self.target.path or 0}")
            if key_type != b"stream":  # a list has no consumer registry: nobody to list
                continue
            for g in await self._call(self.client.xinfo_groups(stream)):
                for c in await self._call(self.client.xinfo_consumers(stream, g["name"])):
                    found.append(ConsumerInfo(queue=stream, tag=f"{_s(g['name'])}/{_s(c['name'])}", connection=None,
                                              channel=None, prefetch=None, ack_required=True, active=None,
                                              pending=_int(c.get("pending")), idle_ms=_int(c.get("idle")),
                                              raw=dict(c)))
        return found

    async def _binding_keys(self) -> list[bytes]:
        calls, count, seconds = self.scan
        keys, _complete = await self._call(scan_type(self.client, "set", ScanBudget(calls, count, seconds), calls,
                                                     match=BINDING_PREFIX + "*"))
        return list(keys)

    # ---- peek (probes.redis_peek) -----------------------------------------------------------------------------
    async def peek(self, queue: str, limit: int, *, force: bool = False,
                   body_bytes: int | None = PEEK_BODY_BYTES, start: PeekFrom | None = None) -> PeekResult:
        if limit < 1:
            raise ProbeError("peek needs a message count of at least 1")
        start = start or PeekFrom()
        check_start("redis", queue, start)
        key_type = await self._call(self.client.type(queue))
        pager = RedisPeek(self.client, self._call, self.target.label, self.rq, str(self.target.path or 0))
        return await pager.page(queue, key_type, limit, start, body_bytes)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str | bytes) and str(_s(value)).isdigit() else None


__all__ = ["RedisProbe"]
