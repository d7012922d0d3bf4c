"""Dead-letter actions on Redis: a stream, a list, or RQ's failed registry (``probes.dlq.rq_store``), by the key.

Moves are one Lua script per batch (``probes.dlq.redis_scripts``: MULTI/EXEC would run the XDEL after a failed
XADD), atomic: each message is written (XADD ``*``, LPUSH or RPUSH) and only then taken out of the source (XDEL its
id, or LREM one equal value from the old end); one the source no longer holds (someone else took it meanwhile) is
not written. A redrive's new entry gets a new id (ids must grow); the original id travels in ``qdeck-redrive-id``.

Streams are read with XRANGE from the first entry to the newest entry at the start, in batches (entries added
later belong to the next run). Lists are read from their old end (the tail, where LPUSH producers' consumers pop
with BRPOP / BLMOVE: Celery, Sidekiq; ``?list_push=right`` for RPUSH producers, RQ and Resque, whose old end is
the head), position by position, as many values as the list held at the start. A list has no ids: a value's id is a
digest of its bytes, equal values are interchangeable, and a list that someone else pops from while it is walked
may skip or repeat values (a dead-letter list usually has no consumer).

Writing to a list: ``LPUSH`` (``RPUSH`` with ``?list_push=right``), the producers' end, so a redriven message
queues up behind the waiting ones. A list holds only a body: a stream entry's other fields (provenance, qdeck's
headers) are not carried into a list, and an entry with no body field is not written to one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import redis.exceptions as rexc

from probes.dlq.model import Place, PlaceKind, Record
from probes.dlq.provenance import parked_name
from probes.dlq.redis_places import preflight
from probes.dlq.redis_records import (
    LUA_PAIRS_LIMIT,
    Held,
    Parsed,
    list_value,
    parse_entry,
    parse_value,
    stream_fields,
)
from probes.dlq.redis_scripts import MOVE_LUA, tokens
from probes.dlq.store import DeadLetterStore
from probes.dlq.writes import require_write
from probes.errors import ConfigError, NotFound, ProbeError
from probes.redact import redact_text
from probes.redis_client import checked, redis_client, redis_error
from probes.redis_rq import RqLayout
from probes.urls import BrokerTarget

SCRIPT_BYTES = 8 << 20  # one script call carries at most this much message data (Redis blocks while it runs)
SCRIPT_RECORDS = 1000
PARSE_SLICE = 100  # entries parsed between turns of the loop while a write is out

Put = Literal["x", "l", "r"]
PUT_TOKEN: dict[str, bytes] = {"x": b"x", "l": b"l", "r": b"r"}


def open_redis_store(target: BrokerTarget, source: str, **options: Any) -> DeadLetterStore:
    """RQ's failed registry (``rq:failed:<queue>``) or an RQ queue: ``RqStore``; any other key: a stream or list
    ``RedisStore`` (which it is, it finds when it connects). Options: ``list_push`` ("left" or "right"),
    ``rq_prefix``; options meant for other brokers are ignored."""
    layout = RqLayout(str(options.get("rq_prefix") or target.param("rq_prefix") or "rq"))
    registry = layout.registry(source)
    if (registry is not None and registry[0] == "failed") or layout.queue_name(source) is not None:
        from probes.dlq.rq_store import RqStore

        return RqStore(target, source, layout)
    push = options.get("list_push") or target.param("list_push")
    return RedisStore(target, source, list_push=str(push) if push else "left")


class RedisStore:
    """A Redis stream or list as a dead-letter source (``kind`` is set on connecting; None: no such key yet, as
    an import's destination may be)."""

    atomic = True

    def __init__(self, target: BrokerTarget, source: str, *, list_push: str = "left") -> None:
        if list_push not in ("left", "right"):
            raise ConfigError(f"list_push takes left (LPUSH producers: Celery, Sidekiq) or right (RPUSH: RQ, "
                              f"Resque), not {list_push!r}")
        self.target, self.source = target, source
        self.push: Put = "l" if list_push == "left" else "r"
        self.kind: PlaceKind | None = None
        self.client: Any = None
        self._mover: Any = None  # the client the move scripts go through: one connection of its own
        self._script: Any = None
        self._writing = asyncio.Event()  # set as a write goes out: the walk may parse its next batch meanwhile
        self._taken = 0  # list values of the current batch taken out of the source (the walk's position)
        self._origins: dict[str, Place] = {}  # origin name -> Place (its kind from the key's type, once)

    # ---- connection -----------------------------------------------------------------------------------------------
    async def __aenter__(self) -> RedisStore:
        self.client = redis_client(self.target, read_timeout=60.0)
        self.client.set_response_callback("XRANGE", _raw)  # every field in order, repeats too
        # A script call on a connection of its own goes out with no wait before it (a pooled call first checks
        # its connection, a pause in which the walk's parsing would run, ahead of the write instead of beside it).
        self._mover = self.client.client()
        self._script = self._mover.register_script(MOVE_LUA)
        try:
            key_type = await self._type(self.source)
            self.kind = "stream" if key_type == "stream" else "list" if key_type == "list" else None
            if key_type not in ("stream", "list", "none"):
                raise NotFound(f"{self.source!r} is a Redis {key_type}, not a stream, a list or RQ's failed "
                               "registry")
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._mover is not None:
            await self._mover.aclose()
        if self.client is not None:
            await self.client.aclose()

    async def _call(self, aw: Any) -> Any:
        return await checked(self.target, aw)

    async def _type(self, key: str) -> str:
        t = await self._call(self.client.type(key))
        return t.decode() if isinstance(t, bytes) else str(t)

    async def _require_source(self) -> PlaceKind:
        if self.kind is None:
            t = await self._type(self.source)
            self.kind = "stream" if t == "stream" else "list" if t == "list" else None
        if self.kind is None:
            db = self.target.path or 0
            hint = await RqLayout(self.target.param("rq_prefix") or "rq").hint(self.client, self._call, self.source)
            raise NotFound(f"no stream or list named {self.source!r} in Redis db {db} (" + (hint or "Redis deletes "
                           "an empty list: if it was one, it has nothing to act on") + ")")
        return self.kind

    # ---- reading --------------------------------------------------------------------------------------------------
    async def count(self) -> int | None:
        kind = await self._require_source()
        return int(await self._call(self.client.xlen(self.source) if kind == "stream"
                                    else self.client.llen(self.source)))

    async def read(self, batch: int) -> AsyncIterator[list[Record]]:
        kind = await self._require_source()
        if kind == "stream":
            async for records in self._stream_walk(batch):
                yield records
        else:
            async for parsed in self._list_walk(batch):
                yield await self._records(parsed)

    async def _stream_walk(self, batch: int) -> AsyncIterator[list[Record]]:
        """From the first entry to the newest one at the start. The next batch is read while this one is moved
        (it starts after this one's last id, whatever becomes of this one), and parsed once this one's write has
        gone out: Redis runs the write while this process parses."""
        top = await self._call(self.client.xrevrange(self.source, count=1))
        if not top:
            return
        high = top[0][0]

        async def fetch(low: bytes | str) -> tuple[bytes | None, int, list[Record]]:
            entries = await self._call(self.client.xrange(self.source, min=low, max=high, count=batch))
            if not entries:
                return None, 0, []
            await self._writing.wait()
            parsed = []
            for i in range(0, len(entries), PARSE_SLICE):
                if i:
                    await asyncio.sleep(0)  # the loop turns: the write's bytes the socket did not take go out
                parsed += [parse_entry(e, f) for e, f in entries[i:i + PARSE_SLICE]]
            return entries[-1][0], len(entries), await self._records(parsed)

        ahead = asyncio.ensure_future(fetch("-"))
        try:
            while True:
                self._writing.set()  # no write came (a dry run, an export): parse it now
                last, n, records = await ahead
                self._writing.clear()
                if last is None:
                    return
                more = last != high and n == batch
                if more:
                    ahead = asyncio.ensure_future(fetch(b"(" + last))
                yield records
                if not more:
                    return
        finally:
            if not ahead.done():
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, ProbeError):
                    await ahead

    async def _list_walk(self, batch: int) -> AsyncIterator[list[Parsed]]:
        """From the old end, ``start`` values in all: those the list held when the walk began (new ones arrive at
        the other end). ``kept``: values at the old end this walk returned and left there."""
        start = int(await self._call(self.client.llen(self.source)))
        walked = kept = 0
        while walked < start:
            n = min(batch, start - walked)
            if self.push == "l":  # LPUSH producers: the oldest value is the tail
                values = list(reversed(await self._call(self.client.lrange(self.source, -(kept + n), -(kept + 1)))))
            else:
                values = list(await self._call(self.client.lrange(self.source, kept, kept + n - 1)))
            if not values:
                return
            self._taken = 0
            yield [parse_value(v) for v in values]
            walked += len(values)
            kept += len(values) - min(self._taken, len(values))

    async def _records(self, parsed: Sequence[Parsed]) -> list[Record]:
        names = {n for n in (p.origin_name() for p in parsed) if n is not None and n not in self._origins}
        if names:
            ordered = sorted(names)
            pipe = self.client.pipeline(transaction=False)
            for name in ordered:
                pipe.type(name)
            for name, t in zip(ordered, await self._call(pipe.execute()), strict=True):
                self._origins[name] = Place("list" if t in (b"list", "list") else "stream", name)
        return [p.record(self._origins) for p in parsed]

    # ---- places ---------------------------------------------------------------------------------------------------
    def parked(self) -> Place | None:
        return Place(self.kind or "stream", parked_name(self.source))

    async def resolve(self, name: str) -> Place:
        t = await self._type(name)
        if t in ("stream", "list"):
            return Place("stream" if t == "stream" else "list", name)
        return Place(self.kind or "stream", name)

    async def preflight(self, place: Place) -> list[str]:
        return await preflight(self.client, self._call, self.target, self.source, place)

    async def ensure(self, place: Place) -> None:
        """The parked stream or list is created by its first write; here only its type is checked."""
        require_write(self.target, f"create {place.name}")
        t = await self._type(place.name)
        if t not in ("none", "stream", "list"):
            raise ProbeError(f"{place.name!r} exists and is a Redis {t}: it cannot hold parked messages")

    # ---- writing --------------------------------------------------------------------------------------------------
    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        if not pairs:
            return []
        require_write(self.target, f"write to {', '.join(sorted({p.name for _r, p, _h in pairs}))}")
        kind = await self._require_source()
        how = "x" if kind == "stream" else "R" if self.push == "l" else "L"
        results = await self._move(how, [(r, p, h, None) for r, p, h in pairs])
        self._taken += sum(why is None for why in results)
        return results

    async def write(self, place: Place, records: Sequence[Record]) -> list[str | None]:
        if not records:
            return []
        require_write(self.target, f"import into {place.name}")
        put: Put | None = None
        if await self._type(place.name) == "none":  # a new key: what the records were (list values or entries)
            put = self.push if all(not r.headers and not r.properties for r in records) else "x"
        return await self._move("n", [(r, place, {}, put) for r in records])

    async def _move(self, how: str, items: Sequence[tuple[Record, Place, Mapping[str, Any], Put | None]]
                    ) -> list[str | None]:
        """Each item in one of a few script calls (at most SCRIPT_RECORDS messages, SCRIPT_BYTES of data)."""
        results: list[str | None] = [None] * len(items)
        puts = await self._puts({p.name: p for _r, p, _h, _put in items}.values())
        keys: list[str] = [self.source]
        index: dict[str, bytes] = {}
        chunk: list[int] = []
        flat: list[bytes] = []
        size = 0
        for i, (r, place, extra, put) in enumerate(items):
            kind = put or puts[place.name]
            held = r.handle
            if kind == "x":
                values = stream_fields(r, extra)
                if len(values) > 2 * LUA_PAIRS_LIMIT:
                    results[i] = f"{len(values) // 2:,} fields: more than qdeck moves in one step ({LUA_PAIRS_LIMIT:,})"
                    continue
            else:
                value = list_value(r)
                if value is None:
                    results[i] = f"{place.name} is a list, and this stream entry has no body field to put in it"
                    continue
                values = [value]
            weight = sum(map(len, values))
            if chunk and (len(chunk) >= SCRIPT_RECORDS or size + weight > SCRIPT_BYTES):
                await self._script_call(how, keys, flat, chunk, items, results)
                keys, index, chunk, flat, size = [self.source], {}, [], [], 0
            d = index.get(place.name)
            if d is None:
                keys.append(place.name)
                d = index[place.name] = b"%d" % len(keys)
            handle = held.key if how != "n" and isinstance(held, Held) else b""
            flat += (d, PUT_TOKEN[kind], handle, b"%d" % len(values), *values)
            chunk.append(i)
            size += weight
        if chunk:
            await self._script_call(how, keys, flat, chunk, items, results)
        return results

    async def _script_call(self, how: str, keys: list[str], flat: list[bytes], chunk: Sequence[int],
                           items: Sequence[tuple[Record, Place, Mapping[str, Any], Put | None]],
                           results: list[str | None]) -> None:
        packed = tokens(flat)
        self._writing.set()
        try:
            out = await self._script(keys=keys, args=[how, packed])
        except rexc.ResponseError as exc:  # the script itself failed: what it did before stays done, atomically
            raise ProbeError(redact_text(f"Redis refused qdeck's move script on {self.source!r}: {exc}"[:300],
                                         self.target.secrets)) from None
        except (rexc.RedisError, OSError) as exc:
            raise redis_error(self.target, exc) from None
        for i, reply in zip(chunk, out, strict=True):
            if reply:
                results[i] = self._why(_s(reply), items[i][1])

    def _why(self, reply: str, place: Place) -> str | None:
        if not reply:
            return None
        if reply == "GONE":
            return f"no longer in {self.source} (taken out by someone else meanwhile): nothing written"
        if reply.startswith("WRONGTYPE "):
            return f"{place.name} is a Redis {reply.split(' ', 1)[1]}, not a stream or a list"
        return redact_text(f"{place.name}: {reply}"[:300], self.target.secrets)

    async def _puts(self, places: Any) -> dict[str, Put]:
        """How each place is written: by its key's type now (the script checks it again), else by its kind."""
        ordered: list[Place] = list(places)
        pipe = self.client.pipeline(transaction=False)
        for p in ordered:
            pipe.type(p.name)
        out: dict[str, Put] = {}
        for p, t in zip(ordered, await self._call(pipe.execute()), strict=True):
            kind = _s(t) if _s(t) in ("stream", "list") else p.kind
            if kind not in ("stream", "list"):  # a place of another broker's kind: like the source
                kind = self.kind or "stream"
            out[p.name] = "x" if kind == "stream" else self.push
        return out

    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        """Records confirmed at their destination by an interrupted run (``publish`` removes its own)."""
        await self._take(records)
        return records

    async def delete(self, records: Sequence[Record]) -> None:
        require_write(self.target, f"delete messages in {self.source}")
        await self._take(records)

    async def _take(self, records: Sequence[Record]) -> None:
        if not records:
            return
        kind = await self._require_source()
        self._writing.set()
        if kind == "stream":
            for i in range(0, len(records), 1000):
                await self._call(self.client.xdel(self.source, *(r.id for r in records[i:i + 1000])))
            self._taken += len(records)
            return
        pipe = self.client.pipeline(transaction=True)
        for r in records:
            value = r.handle.key if isinstance(r.handle, Held) else r.body
            pipe.lrem(self.source, -1 if self.push == "l" else 1, value)
        self._taken += sum(int(n) for n in await self._call(pipe.execute()))

    async def release(self, records: Sequence[Record]) -> None:
        return None  # nothing is held: a record stays where it is until a script moves it


def _raw(response: Any, **_options: Any) -> Any:
    return response


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
