"""Dead-letter actions on RQ's failed registry (``rq:failed:<queue>``), with RQ's own requeue semantics.

A record is one failed job: its id, the job hash exactly (``properties``, field by field, bytes), the job's data
inflated as the body (for ``--match``; the hash keeps it compressed), the job's latest result entry (RQ >= 1.12
keeps the exception there) as the header ``rq-result``, the origin queue (``Place("rq", queue)``), the exception's
last line as the reason (``probes.redis_rq``, as the peek shows it), created_at / ended_at as its times.

A redrive is ``FailedJobRegistry.requeue`` (python-rq 1.12 to 3.0 do the same), in one Lua script per batch, so
each job is requeued entirely or not at all: out of the registry (only if it is still there: a job requeued
meanwhile by RQ or another qdeck is left alone), status ``queued``, ``started_at`` / ``ended_at`` emptied,
``exc_info`` set to RQ's empty value, ``enqueued_at`` now, ``origin`` the queue, ``timeout`` RQ's default (180 s)
when the job has none, the job's ``ttl`` (if any) set as its expiry, the id RPUSHed on ``rq:queue:<queue>`` (RQ's
end: workers pop the head) and the queue added to ``rq:queues``. The rest of the hash is kept, and with it
qdeck's ``qdeck-redrive-id`` / ``qdeck-redrive-count`` fields (RQ keeps unknown fields when the job fails again:
the loop guard counts across failures). RQ has no parked place: a job past ``--max-redrives`` is skipped and stays
in the failed registry. Delete is ``registry.remove(job, delete_job=True)``: out of the registry, and the job hash,
its dependents / dependencies sets, results and executions deleted. Rate-limited jobs (RQ 3's ``rate_limit_key``)
are left to RQ (its requeue re-acquires the limit's slot).

Import into ``rq:failed:<queue>`` restores failed jobs as RQ's ``FailedJobRegistry.add`` does (score and hash
expiry from the job's ``failure_ttl``, one year by default); into ``rq:queue:<queue>`` (or a bare queue name) it
enqueues them as a requeue does. A job id that exists already with a different hash is not overwritten.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import redis.exceptions as rexc

from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID, parse_count, parse_id
from probes.dlq.redis_records import name_of, raw_name, value_bytes
from probes.dlq.redis_scripts import REQUEUE_LUA, tokens
from probes.dlq.writes import require_write
from probes.errors import NotFound, ProbeError, Unsupported
from probes.redact import redact_text
from probes.redis_client import checked, redis_client, redis_error
from probes.redis_rq import RqLayout, _exception, _inflate, _last_line, _time
from probes.urls import BrokerTarget

RESULT_HEADER = "rq-result"
DEFAULT_TIMEOUT = 180  # rq.defaults.DEFAULT_JOB_TIMEOUT: a Queue's default_timeout
DEFAULT_FAILURE_TTL = 31536000  # rq.defaults.DEFAULT_FAILURE_TTL: one year
NO_EXC_INFO = zlib.compress(b"")  # what RQ's requeue stores as exc_info (``job._exc_info = ''``, then saved)
NO_REASON = "failed (no exception recorded)"  # as the peek says it

def rq_time(when: datetime) -> str:
    """RQ's ``utcformat``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RqStore:
    """RQ's failed registry of one queue as a dead-letter source; an RQ queue (``rq:queue:<q>``) only as an
    import's destination."""

    atomic = True

    def __init__(self, target: BrokerTarget, source: str, layout: RqLayout) -> None:
        self.target, self.source, self.rq = target, source, layout
        registry = layout.registry(source)
        self.queue = registry[1] if registry is not None else layout.queue_name(source) or source
        self.is_registry = registry is not None
        self.client: Any = None
        self._script: Any = None
        self._taken = 0

    async def __aenter__(self) -> RqStore:
        self.client = redis_client(self.target, read_timeout=60.0)
        self._script = self.client.register_script(REQUEUE_LUA)
        try:
            await self._call(self.client.ping())
        except BaseException:
            await self.client.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def _call(self, aw: Any) -> Any:
        return await checked(self.target, aw)

    def _job(self, job_id: str) -> str:
        return f"{self.rq.prefix}:job:{job_id}"

    def _queue_key(self, queue: str) -> str:
        return f"{self.rq.queue_prefix}{queue}"

    async def _require_registry(self) -> None:
        if not self.is_registry:
            raise Unsupported(f"{self.source!r} is an RQ queue (waiting jobs), not a dead-letter source: its failed "
                              f"jobs are in {self.rq.prefix}:failed:{self.queue}")
        t = _s(await self._call(self.client.type(self.source)))
        if t == "none" and not await self._call(self.client.sismember(f"{self.rq.prefix}:queues",
                                                                       self._queue_key(self.queue))):
            raise NotFound(f"RQ has no queue {self.queue!r} in Redis db {self.target.path or 0} "
                           f"({self._queue_key(self.queue)} is not in {self.rq.prefix}:queues)")
        if t not in ("zset", "none"):
            raise NotFound(f"{self.source!r} is a Redis {t}, not RQ's failed registry")

    # ---- reading --------------------------------------------------------------------------------------------------
    async def count(self) -> int | None:
        await self._require_registry()
        return int(await self._call(self.client.zcard(self.source)))

    async def read(self, batch: int) -> AsyncIterator[list[Record]]:
        """By rank, lowest score (the earliest to expire: the oldest failure) first, as many jobs as the registry
        held at the start; new failures score higher and are left to the next run."""
        await self._require_registry()
        start = int(await self._call(self.client.zcard(self.source)))
        walked = kept = 0
        while walked < start:
            n = min(batch, start - walked)
            ids = [_s(i) for i in await self._call(self.client.zrange(self.source, kept, kept + n - 1))]
            if not ids:
                return
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._job(job_id))
                pipe.xrevrange(f"{self.rq.prefix}:results:{job_id}", count=1)
            replies = await self._call(pipe.execute())
            self._taken = 0
            yield [self._record(job_id, replies[2 * i], replies[2 * i + 1]) for i, job_id in enumerate(ids)]
            walked += len(ids)
            kept += len(ids) - min(self._taken, len(ids))

    def _record(self, job_id: str, job: Mapping[bytes, bytes], results: Sequence[Any]) -> Record:
        props = {name_of(k): bytes(v) for k, v in job.items()}
        text = {k: _s(v) for k, v in props.items() if k not in ("data", "exc_info", "result", "meta")}
        data = job.get(b"data")
        body = (_inflate(data) or b"") if data else b""
        headers: tuple[tuple[str, Any], ...] = ()
        if results:
            headers = ((RESULT_HEADER, {name_of(k): bytes(v) for k, v in results[0][1].items()}),)
        if not job:
            return Record(id=job_id, body=b"", reason="job hash missing (expired or deleted)", handle=job_id)
        origin = text.get("origin")
        return Record(id=job_id, body=body, headers=headers, properties=props, timestamp=_time(text.get("created_at")),
                      died_at=_time(text.get("ended_at")), reason=_last_line(_exception(job, results)) or NO_REASON,
                      origin=Place("rq", origin) if origin else None, origin_source="origin" if origin else None,
                      redrives=parse_count(props.get(REDRIVE_COUNT)), original_id=parse_id(props.get(REDRIVE_ID)),
                      handle=job_id)

    # ---- places ---------------------------------------------------------------------------------------------------
    def parked(self) -> Place | None:
        return None  # RQ has no such place: a looping job is skipped and stays in the failed registry

    async def resolve(self, name: str) -> Place:
        return Place("rq", self.rq.queue_name(name) or name)

    async def preflight(self, place: Place) -> list[str]:
        if place.kind != "rq":
            return [f"an RQ job goes to an RQ queue, not a Redis {place.kind}"]
        if self.rq.registry(place.name) is not None:
            return ["it is one of RQ's registries: failed jobs are requeued to RQ queues"]
        qkey = self._queue_key(place.name)
        pipe = self.client.pipeline(transaction=False)
        pipe.type(qkey)
        pipe.sismember(f"{self.rq.prefix}:queues", qkey)
        pipe.scard(f"{self.rq.prefix}:workers:{place.name}")
        key_type, known, workers = await self._call(pipe.execute())
        if _s(key_type) not in ("list", "none"):
            return [f"{qkey} is a Redis {_s(key_type)}, not an RQ queue"]
        if _s(key_type) == "none" and not known:
            return [f"it does not exist: RQ has no queue {place.name!r} ({qkey} is not in {self.rq.prefix}:queues)"]
        return [] if int(workers) else ["nobody consumes it: no RQ worker listens on it"]

    async def ensure(self, place: Place) -> None:
        require_write(self.target, f"create {place.name}")

    # ---- writing --------------------------------------------------------------------------------------------------
    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        if not pairs:
            return []
        require_write(self.target, f"requeue jobs of {self.source} to "
                                   f"{', '.join(sorted({p.name for _r, p, _h in pairs}))}")
        results: list[str | None] = [None] * len(pairs)
        head = [self.rq.prefix, rq_time(datetime.now(UTC)), NO_EXC_INFO, DEFAULT_TIMEOUT]
        argv: list[bytes] = []
        sent: list[int] = []
        for i, (r, place, extra) in enumerate(pairs):
            why = self._refuse(r, place)
            if why is not None:
                results[i] = why
                continue
            values = [v for k, x in extra.items() for v in (raw_name(k), value_bytes(x))]
            argv += [r.id.encode(), place.name.encode("utf-8", "surrogateescape"), b"%d" % len(values), *values]
            sent.append(i)
        if sent:
            try:
                out = await self._script(keys=[self.source], args=[*head, tokens(argv)])
            except rexc.ResponseError as exc:
                raise ProbeError(redact_text(f"Redis refused qdeck's requeue script on {self.source!r}: {exc}"[:300],
                                             self.target.secrets)) from None
            except (rexc.RedisError, OSError) as exc:
                raise redis_error(self.target, exc) from None
            for i, reply in zip(sent, out, strict=True):
                results[i] = self._why(_s(reply), pairs[i][0], pairs[i][1])
        self._taken += sum(why is None for why in results)
        return results

    def _refuse(self, r: Record, place: Place) -> str | None:
        if place.kind != "rq":
            return f"an RQ job goes to an RQ queue, not a Redis {place.kind} ({place.name})"
        if self.rq.registry(place.name) is not None:
            return f"{place.name} is one of RQ's registries: failed jobs are requeued to RQ queues"
        if not r.properties:
            return "its job hash is gone (expired or deleted): nothing to requeue (delete it from the registry)"
        if r.properties.get("rate_limit_key") and r.properties.get("rate_limit_concurrency"):
            return "a rate-limited job: requeue it with RQ itself (its requeue takes a slot of the limit)"
        return None

    def _why(self, reply: str, r: Record, place: Place) -> str | None:
        if not reply:
            return None
        if reply == "GONE":
            return f"job {r.id} is no longer in {self.source} (requeued or removed meanwhile): nothing done"
        if reply == "NOJOB":
            return f"job {r.id}'s hash is gone (expired or deleted): nothing to requeue"
        if reply.startswith("WRONGTYPE "):
            return f"{self._queue_key(place.name)} is a Redis {reply.split(' ', 1)[1]}, not an RQ queue"
        return redact_text(f"{self._queue_key(place.name)}: {reply}"[:300], self.target.secrets)

    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        """Jobs requeued by an interrupted run (``publish`` takes its own out of the registry)."""
        if records:
            self._taken += int(await self._call(self.client.zrem(self.source, *(r.id for r in records))))
        return records

    async def delete(self, records: Sequence[Record]) -> None:
        """``registry.remove(job, delete_job=True)``: out of the registry, the job and its keys deleted."""
        require_write(self.target, f"delete jobs in {self.source}")
        if not records:
            return
        p = self.rq.prefix
        pipe = self.client.pipeline(transaction=True)
        for r in records:
            job = self._job(r.id)
            pipe.zrem(self.source, r.id)
            pipe.delete(job, f"{job}:dependents", f"{job}:dependencies", f"{p}:results:{r.id}",
                        f"{p}:executions:{r.id}")
            origin = _s(r.properties.get("origin", b""))
            if origin:
                pipe.lrem(self._queue_key(origin), 0, r.id)
            group = _s(r.properties.get("group_id", b""))
            if group:
                pipe.srem(f"{p}:group:{group}", r.id)
        await self._call(pipe.execute())
        self._taken += len(records)

    async def release(self, records: Sequence[Record]) -> None:
        return None

    async def write(self, place: Place, records: Sequence[Record]) -> list[str | None]:
        """Import: failed jobs back into a failed registry (as ``FailedJobRegistry.add``), or enqueued on a queue
        (as a requeue); a job id whose hash exists already and differs is refused."""
        if not records:
            return []
        require_write(self.target, f"import into {place.name}")
        registry = self.rq.registry(place.name)
        if registry is not None and registry[0] != "failed":
            return [f"{place.name}: qdeck imports into RQ's failed registry or a queue, not its {registry[0]} "
                    "registry"] * len(records)
        queue = registry[1] if registry is not None else self.rq.queue_name(place.name) or place.name
        qkey = self._queue_key(queue)
        pipe = self.client.pipeline(transaction=False)
        pipe.type(place.name if registry is not None else qkey)
        for r in records:
            pipe.hgetall(self._job(r.id))
        key_type, *existing = await self._call(pipe.execute())
        want = "zset" if registry is not None else "list"
        if _s(key_type) not in (want, "none"):
            return [f"{place.name} is a Redis {_s(key_type)}, not RQ's"] * len(records)
        results: list[str | None] = [None] * len(records)
        pipe = self.client.pipeline(transaction=True)
        spans: list[tuple[int, int, int]] = []  # (record index, first reply, replies)
        now = time.time()
        for i, (r, found) in enumerate(zip(records, existing, strict=True)):
            mapping = {raw_name(k): value_bytes(v) for k, v in r.properties.items()}
            if not mapping:
                results[i] = f"job {r.id} has no job hash in the export: nothing to import"
                continue
            if found and dict(found) != mapping:
                results[i] = f"job {r.id} exists already in Redis with a different hash: not overwritten"
                continue
            first = len(pipe.command_stack)
            pipe.hset(self._job(r.id), mapping=mapping)
            if registry is not None:  # a microsecond apart: the registry keeps the export's order (oldest first)
                self._restore_failed(pipe, r, place.name, queue, now + i * 1e-6)
            else:
                self._enqueue(pipe, r, qkey, queue)
            spans.append((i, first, len(pipe.command_stack) - first))
        if spans:
            replies = await self._call(pipe.execute(raise_on_error=False))
            for i, first, n in spans:
                bad = next((x for x in replies[first:first + n] if isinstance(x, BaseException)), None)
                if bad is not None:
                    results[i] = redact_text(f"{place.name}: {bad}"[:300], self.target.secrets)
        return results

    def _restore_failed(self, pipe: Any, r: Record, registry: str, queue: str, now: float) -> None:
        ttl = _int(r.properties.get("failure_ttl"), DEFAULT_FAILURE_TTL)
        if ttl > 0:
            job = self._job(r.id)
            for key in (job, f"{job}:dependents", f"{job}:dependencies"):
                pipe.expire(key, ttl)
        pipe.zadd(registry, {r.id: ttl if ttl < 0 else now + ttl})
        pipe.sadd(f"{self.rq.prefix}:queues", self._queue_key(queue))
        result = r.header(RESULT_HEADER)
        if isinstance(result, dict) and result:
            pipe.xadd(f"{self.rq.prefix}:results:{r.id}", {raw_name(k): value_bytes(v) for k, v in result.items()},
                      maxlen=10, approximate=True)

    def _enqueue(self, pipe: Any, r: Record, qkey: str, queue: str) -> None:
        job = self._job(r.id)
        pipe.hset(job, mapping={"status": "queued", "started_at": "", "ended_at": "", "exc_info": NO_EXC_INFO,
                                "enqueued_at": rq_time(datetime.now(UTC)), "origin": queue})
        pipe.hsetnx(job, "timeout", DEFAULT_TIMEOUT)
        ttl = _int(r.properties.get("ttl"), 0)
        if ttl > 0:
            for key in (job, f"{job}:dependents", f"{job}:dependencies"):
                pipe.expire(key, ttl)
        pipe.rpush(qkey, r.id)
        pipe.sadd(f"{self.rq.prefix}:queues", qkey)


def _int(value: Any, default: int) -> int:
    try:
        return int(float(_s(value))) if value not in (None, b"", "") else default
    except ValueError:
        return default


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
