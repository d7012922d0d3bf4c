"""RQ's Redis layout (python-rq 1.x-3.x): queues, their registries and workers as rows; jobs as peeked messages.

Keys (``rq`` is RQ's ``RQ_KEY_PREFIX``; ``?rq_prefix=`` on the broker URL changes it):
``rq:queues`` (set of queue keys) · ``rq:queue:<q>`` (list of job ids; absent while the queue is empty) ·
``rq:job:<id>`` (hash: origin, status, description, data = zlib(serialized (func, instance, args, kwargs)),
enqueued_at / started_at / ended_at, worker_name, and before RQ 1.12 exc_info = zlib(traceback)) ·
``rq:results:<id>`` (RQ >= 1.12: a stream of results; a failure has exc_string = base64(zlib(traceback))) ·
registries, sorted sets per queue: ``rq:wip:<q>`` (started, RQ >= 2; ``rq:started:<q>`` before), ``rq:failed:<q>``,
``rq:finished:<q>``, ``rq:deferred:<q>``, ``rq:scheduled:<q>``, ``rq:canceled:<q>`` · ``rq:workers`` and
``rq:workers:<q>`` (sets of worker keys).

The failed registry is RQ's dead-letter queue: a row of its own, marked dead-letter and fed by its queue. Job data
is never unpickled: the function name is read from the pickle's opcodes (``pickletools``, which runs nothing).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import pickletools
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from probes.models import ConsumerInfo, DeathRecord, PeekedMessage, QueueStats, cut_body

Call = Callable[[Awaitable[Any]], Awaitable[Any]]
REGISTRIES = ("wip", "started", "failed", "finished", "deferred", "scheduled", "canceled")
INFLATE_LIMIT = 1 << 20  # the most of a compressed traceback or job data qdeck inflates


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


class RqLayout:
    def __init__(self, prefix: str = "rq") -> None:
        self.prefix = prefix
        self.queue_prefix = f"{prefix}:queue:"

    def is_internal_stream(self, key: str) -> bool:
        return key.startswith(f"{self.prefix}:results:")

    def queue_name(self, key: str) -> str | None:
        """The RQ queue a list key holds, or None (RQ's temporary ``_compact:`` lists included)."""
        if key.startswith(self.queue_prefix) and not key.startswith(self.queue_prefix + "_compact:"):
            return key[len(self.queue_prefix):]
        return None

    def registry(self, key: str) -> tuple[str, str] | None:
        """(registry, queue) for a registry key."""
        head, sep, rest = key.partition(":")
        if head != self.prefix or not sep:
            return None
        registry, sep, queue = rest.partition(":")
        return (registry, queue) if sep and registry in REGISTRIES and queue else None

    # ---- snapshot rows ------------------------------------------------------------------------------------
    async def rows(self, client: Any, call: Call, broker: str, list_keys: Iterable[str]) -> list[QueueStats]:
        """A row per RQ queue (registered in ``rq:queues`` or holding jobs) and one per failed registry."""
        members = await call(client.smembers(f"{self.prefix}:queues"))
        names = {n for n in (self.queue_name(_s(m)) for m in [*members, *list_keys]) if n is not None}
        if not names:
            return []
        ordered = sorted(names)
        pipe = client.pipeline(transaction=False)
        for name in ordered:
            pipe.llen(self.queue_prefix + name)
            for registry in REGISTRIES:
                pipe.zcard(f"{self.prefix}:{registry}:{name}")
            pipe.scard(f"{self.prefix}:workers:{name}")
        replies = await call(pipe.execute())
        width = len(REGISTRIES) + 2
        rows = []
        for i, name in enumerate(ordered):
            depth, *counts, workers = (int(v) for v in replies[i * width:(i + 1) * width])
            by = dict(zip(REGISTRIES, counts, strict=True))
            started = by.pop("wip") + by.pop("started")
            failed_key = f"{self.prefix}:failed:{name}"
            config = {"started": str(started), **{k: str(v) for k, v in by.items()}, "workers": str(workers)}
            rows.append(QueueStats(
                broker=broker, name=self.queue_prefix + name, kind="list", depth=depth, in_flight=started,
                consumers=workers, publish_rate=None, deliver_rate=None, dead_letter_target=failed_key,
                is_dead_letter=False, queue_type="rq queue", dead_letter_source="rq failed registry",
                dead_letter_queues=(failed_key,), config=config))
            rows.append(QueueStats(
                broker=broker, name=failed_key, kind="queue", depth=by["failed"], in_flight=0, consumers=0,
                publish_rate=None, deliver_rate=None, dead_letter_target=None, is_dead_letter=True,
                queue_type="rq failed registry", dead_letter_source="rq failed registry",
                config={"queue": name}))
        return rows

    # ---- peek -----------------------------------------------------------------------------------------------
    async def peek(self, client: Any, call: Call, key: str, key_type: bytes, limit: int, body_bytes: int | None,
                   *, skip: int = 0, newest: bool = False) -> tuple[tuple[PeekedMessage, ...], bool, int] | None:
        """(jobs, whether more follow, how many in all) of an RQ queue or registry from its ``skip``-th, oldest
        first (a queue's head, a registry's lowest score) or newest first; None when ``key`` is not one of RQ's."""
        registry = self.registry(key) if key_type == b"zset" else None
        if key_type == b"list" and self.queue_name(key) is not None:
            total = int(await call(client.llen(key)))
            if newest:  # the tail, read backwards; one past the page tells whether more follow
                ids = [_s(i) for i in reversed(await call(client.lrange(key, -(skip + limit + 1), -(skip + 1))))]
            else:
                ids = [_s(i) for i in await call(client.lrange(key, skip, skip + limit))]
        elif registry is not None:
            total = int(await call(client.zcard(key)))
            read = client.zrevrange if newest else client.zrange
            members = [_s(i) for i in await call(read(key, skip, skip + limit))]
            ids = [m.rpartition(":")[0] or m for m in members] if registry[0] == "wip" else members
        else:
            return None
        more, ids = len(ids) > limit, ids[:limit]
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(f"{self.prefix}:job:{job_id}")
            pipe.xrevrange(f"{self.prefix}:results:{job_id}", count=1)
        replies = await call(pipe.execute())
        dead = registry is not None and registry[0] == "failed"
        jobs = tuple(_job_message(skip + i, job_id, replies[2 * i], replies[2 * i + 1], dead, body_bytes)
                     for i, job_id in enumerate(ids))
        return jobs, more, total

    async def workers(self, client: Any, call: Call, key: str) -> list[ConsumerInfo] | None:
        """The workers listening to the RQ queue ``key`` (its consumers); None when ``key`` is not an RQ queue."""
        name = self.queue_name(key)
        if name is None:
            return None
        keys = sorted(_s(k) for k in await call(client.smembers(f"{self.prefix}:workers:{name}")))
        pipe = client.pipeline(transaction=False)
        for worker in keys:
            pipe.hgetall(worker)
        found = []
        for worker, info in zip(keys, await call(pipe.execute()), strict=True):
            fields = {_s(k): _s(v) for k, v in info.items()}
            host = " ".join(x for x in (fields.get("hostname"), fields.get("pid") and f"pid {fields['pid']}") if x)
            state = fields.get("state")
            found.append(ConsumerInfo(queue=key, tag=worker.removeprefix(f"{self.prefix}:worker:"),
                                      connection=host or None, channel=None, prefetch=None, ack_required=None,
                                      active=None if state is None else state == "busy",
                                      raw={"state": state, "current_job": fields.get("current_job")}))
        return found

    async def registered(self, client: Any, call: Call, key: str) -> bool:
        """Whether ``key`` is an RQ queue RQ knows (in ``rq:queues``), even while it is empty (no list key)."""
        return self.queue_name(key) is not None and bool(await call(client.sismember(f"{self.prefix}:queues", key)))

    async def hint(self, client: Any, call: Call, name: str) -> str | None:
        """Where an RQ queue called ``name`` keeps its jobs, when there is one."""
        if await call(client.sismember(f"{self.prefix}:queues", self.queue_prefix + name)):
            return (f"RQ queue {name!r}: peek {self.queue_prefix}{name} for its waiting jobs, "
                    f"{self.prefix}:failed:{name} for its failed jobs")
        return None


def _inflate(data: bytes) -> bytes | None:
    with contextlib.suppress(zlib.error):
        return zlib.decompressobj().decompress(data, INFLATE_LIMIT)
    return None


def _exception(job: Mapping[bytes, bytes], results: Sequence[tuple[bytes, Mapping[bytes, bytes]]]) -> str | None:
    if results:
        packed = results[0][1].get(b"exc_string")
        if packed:
            with contextlib.suppress(binascii.Error, ValueError):
                text = _inflate(base64.b64decode(packed))
                if text is not None:
                    return _s(text)
    raw = job.get(b"exc_info")
    if raw:
        return _s(_inflate(raw) or raw)
    return None


def _last_line(text: str | None) -> str | None:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


def _function(data: bytes | None) -> str | None:
    """The function name in a job's serialized (func, instance, args, kwargs): JSON, or a pickle read as opcodes."""
    if not data:
        return None
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        doc = json.loads(data)
        return doc[0] if isinstance(doc, list) and doc and isinstance(doc[0], str) else None
    with contextlib.suppress(Exception):  # a malformed pickle: pickletools raises many kinds; nothing runs
        for _op, arg, _pos in pickletools.genops(data):
            if isinstance(arg, str):
                return arg
    return None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text)
    return None


def _job_message(position: int, job_id: str, job: Mapping[bytes, bytes],
                 results: Sequence[tuple[bytes, Mapping[bytes, bytes]]], dead: bool,
                 body_bytes: int | None) -> PeekedMessage:
    if not job:
        return PeekedMessage(position=position, body=b"", size=0, body_truncated=False, message_id=job_id,
                             headers={"job": "missing: its hash expired or was deleted"})
    text = {_s(k): _s(v) for k, v in job.items() if k not in (b"data", b"exc_info", b"result")}
    data = _inflate(job.get(b"data", b"")) if job.get(b"data") else None
    description = text.get("description") or ""
    exc = _exception(job, results)
    headers: dict[str, str | None] = {
        "origin": text.get("origin"), "status": text.get("status"), "function": _function(data),
        "description": description or None, "enqueued_at": text.get("enqueued_at"),
        "started_at": text.get("started_at"), "ended_at": text.get("ended_at"),
        "worker_name": text.get("worker_name"), "exception": exc}
    shown = {k: v for k, v in headers.items() if v}
    body = description.encode()
    if data:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            json.loads(data)  # JSONSerializer data is readable text: show it as the body
            body = data
    ended = _time(text.get("ended_at"))
    deaths: tuple[DeathRecord, ...] = ()
    if dead:
        deaths = (DeathRecord(queue=text.get("origin"), reason=_last_line(exc) or "failed (no exception recorded)",
                              count=1, time=ended, original_id=job_id, consumer=text.get("worker_name") or None),)
    cut, truncated = cut_body(body, body_bytes)
    return PeekedMessage(position=position, body=cut, size=len(body), body_truncated=truncated, message_id=job_id,
                         timestamp=_time(text.get("enqueued_at")), headers=shown, deaths=deaths,
                         first_death_reason=deaths[0].reason if deaths else None,
                         first_death_queue=deaths[0].queue if deaths else None)


__all__ = ["REGISTRIES", "RqLayout"]
