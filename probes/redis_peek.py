"""Redis's paged peek: streams by entry id (oldest or newest first, from a time or after a group's last-delivered
entry), a group's pending entries (idle time, delivery count, consumer), lists and RQ's keys by position.

A stream walk is fixed when it starts: ids from its start to the newest entry then, so pages neither repeat nor skip
an entry and the total stays put. Pending entries page by id (XPENDING, oldest first: it has no reverse). Lists have
no ids: pages are positions, and a list pushed or popped between pages shifts under them (the result says so).
Nothing here consumes, acknowledges or claims.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from probes.death_fields import death_from_fields
from probes.errors import NotFound, Unsupported
from probes.models import PeekCursor, PeekedMessage, PeekFrom, PeekResult, cut_body
from probes.paging import queue_tag
from probes.redis_rq import RqLayout

Call = Callable[[Awaitable[Any]], Awaitable[Any]]
BODY_FIELDS = ("payload", "body", "data", "message", "value")
LIST_NOTE = "a list has no ids: pages are positions, and pushes or pops between pages shift them"


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


class RedisPeek:
    def __init__(self, client: Any, call: Call, label: str, rq: RqLayout, db: str) -> None:
        self.client, self.call, self.label, self.rq, self.db = client, call, label, rq, db

    def _result(self, queue: str, messages: tuple[PeekedMessage, ...], first: int, total: int | None,
                nxt: PeekCursor | None, order: str, scope: str | None = None,
                notes: tuple[str, ...] = ()) -> PeekResult:
        return PeekResult(broker=self.label, queue=queue, messages=messages, side_effect=None, first=first,
                          total=total, next=nxt, order=order, scope=scope, notes=notes)

    async def page(self, queue: str, key_type: bytes, limit: int, start: PeekFrom,
                   body_bytes: int | None) -> PeekResult:
        cursor = start.after
        pending = cursor.pending if cursor is not None else start.pending
        if key_type == b"stream":
            if pending is not None:
                return await self._pending(queue, pending, limit, start, body_bytes)
            return await self._stream(queue, limit, start, body_bytes)
        asked = [flag for flag, value in (("--since", start.since), ("--group", start.group),
                                          ("--pending", pending)) if value is not None]
        if asked or (cursor is not None and (cursor.low is not None or cursor.ranges)):
            what = "a list" if key_type == b"list" else f"a Redis {_s(key_type)}"
            raise Unsupported(f"{' and '.join(asked) or '--after (a stream cursor)'} is for Redis streams; "
                              f"{queue!r} is {what}")
        newest = cursor.newest if cursor is not None else start.newest
        skip = (cursor.skip or 0) if cursor is not None else 0
        jobs = await self.rq.peek(self.client, self.call, queue, key_type, limit, body_bytes, skip=skip,
                                  newest=newest)
        if jobs is not None:
            messages, more, total = jobs
            order = "newest first" if newest else "oldest first"
            notes: tuple[str, ...] = ()
        elif key_type == b"list":
            total = int(await self.call(self.client.llen(queue)))
            if newest:
                items = list(reversed(await self.call(self.client.lrange(queue, -(skip + limit + 1), -(skip + 1)))))
            else:
                items = list(await self.call(self.client.lrange(queue, skip, skip + limit)))
            more, items = len(items) > limit, items[:limit]
            messages = tuple(body_message(skip + i, item, body_bytes) for i, item in enumerate(items))
            order = "from the tail (RPUSH's end)" if newest else "from the head (index 0)"
            notes = (LIST_NOTE,)
        elif key_type == b"none":
            hint = await self.rq.hint(self.client, self.call, queue)
            raise NotFound(f"no stream or list named {queue!r} in Redis db {self.db}" + (f" ({hint})" if hint else ""))
        else:
            raise NotFound(f"{queue!r} is a Redis {_s(key_type)}, not a stream or list")
        shown = skip + len(messages)
        nxt = PeekCursor("redis", queue_tag(queue), newest, shown, skip=shown) if more else None
        return self._result(queue, messages, skip, total, nxt, order, notes=notes)

    async def _stream(self, queue: str, limit: int, start: PeekFrom, body_bytes: int | None) -> PeekResult:
        cursor = start.after
        scope = None
        if cursor is not None:
            low, high = cursor.low or "-", cursor.high or "+"
            newest, first, total = cursor.newest, cursor.shown, cursor.total
        else:
            newest, first = start.newest, 0
            low, total = "-", None
            if start.since is not None:
                low = str(max(0, int(start.since.timestamp() * 1000)))
                scope = f"since {start.since.astimezone(UTC).isoformat(timespec='seconds')}"
            elif start.group is not None:
                info = await self._group(queue, start.group)
                low = "(" + _s(info.get("last-delivered-id", "0-0"))
                lag = info.get("lag")  # Redis >= 7; None there after deletions, absent before
                total = int(lag) if isinstance(lag, int) else None
                scope = f"what group {start.group!r} has not read (after its last-delivered entry)"
            else:
                total = int(await self.call(self.client.xlen(queue)))
            top = await self.call(self.client.xrevrange(queue, count=1))
            if not top:
                return self._result(queue, (), 0, 0, None, "newest first" if newest else "oldest first", scope)
            high = _s(top[0][0])  # the walk ends at the newest entry now: later ones belong to a new peek
        if newest:
            entries = await self.call(self.client.xrevrange(queue, max=high, min=low, count=limit + 1))
        else:
            entries = await self.call(self.client.xrange(queue, min=low, max=high, count=limit + 1))
        more, entries = len(entries) > limit, entries[:limit]
        messages = tuple(stream_message(first + i, eid, fields, body_bytes) for i, (eid, fields) in enumerate(entries))
        nxt = None
        if more:
            last = "(" + _s(entries[-1][0])
            nxt = PeekCursor("redis", queue_tag(queue), newest, first + len(messages), total=total,
                             low=low if newest else last, high=last if newest else high)
        return self._result(queue, messages, first, total, nxt, "newest first" if newest else "oldest first", scope)

    async def _group(self, queue: str, group: str) -> Mapping[str, Any]:
        groups = await self.call(self.client.xinfo_groups(queue))
        for g in groups:
            if _s(g.get("name")) == group:
                return dict(g)
        names = ", ".join(sorted(repr(_s(g.get("name"))) for g in groups)) or "none"
        raise NotFound(f"stream {queue!r} has no consumer group {group!r} (it has: {names})")

    async def _pending(self, queue: str, group: str, limit: int, start: PeekFrom,
                       body_bytes: int | None) -> PeekResult:
        """The group's pending entries list, oldest first, each with its consumer, idle time and delivery count
        (at the time of reading) and the entry itself when the stream still holds it."""
        cursor = start.after
        scope = f"pending entries of group {group!r}"
        if cursor is not None:
            low, first, total = cursor.low or "-", cursor.shown, cursor.total
        else:
            await self._group(queue, group)
            first, low, total = 0, "-", None
            if start.since is not None:
                low = str(max(0, int(start.since.timestamp() * 1000)))
                scope += f" since {start.since.astimezone(UTC).isoformat(timespec='seconds')}"
            else:
                summary = await self.call(self.client.xpending(queue, group))
                total = int(summary.get("pending", 0))
        rows = await self.call(self.client.xpending_range(queue, group, min=low, max="+", count=limit + 1))
        more, rows = len(rows) > limit, rows[:limit]
        pipe = self.client.pipeline(transaction=False)
        for row in rows:
            pipe.xrange(queue, min=row["message_id"], max=row["message_id"], count=1)
        found = await self.call(pipe.execute()) if rows else []
        messages = []
        for i, (row, entry) in enumerate(zip(rows, found, strict=True)):
            extra: dict[str, Any] = {"consumer": _s(row["consumer"]), "idle_ms": int(row["time_since_delivered"]),
                                     "delivery_count": int(row["times_delivered"])}
            if entry:
                eid, fields = entry[0]
                messages.append(stream_message(first + i, eid, fields, body_bytes, **extra))
            else:
                eid = _s(row["message_id"])
                messages.append(PeekedMessage(
                    position=first + i, body=b"", size=0, body_truncated=False, message_id=eid,
                    timestamp=_id_time(eid), headers={"entry": "gone from the stream (trimmed or deleted) but "
                                                              "still pending: XACK it or XCLAIM it to clear"},
                    **extra))
        nxt = None
        if more:
            nxt = PeekCursor("redis", queue_tag(queue), False, first + len(messages), total=total, pending=group,
                             low="(" + _s(rows[-1]["message_id"]))
        return self._result(queue, tuple(messages), first, total, nxt, "oldest first", scope)


def _id_time(eid: str) -> datetime | None:
    ms = eid.split("-")[0]
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC) if ms.isdigit() else None


def body_message(position: int, body: bytes, body_bytes: int | None, **extra: Any) -> PeekedMessage:
    shown, cut = cut_body(body, body_bytes)
    return PeekedMessage(position=position, body=shown, size=len(body), body_truncated=cut, **extra)


def stream_message(position: int, entry_id: bytes, fields: Mapping[bytes, bytes], body_bytes: int | None,
                   **extra: Any) -> PeekedMessage:
    decoded = {_s(k): v for k, v in fields.items()}
    body_key = next((k for k in BODY_FIELDS if k in decoded), None)
    body = decoded.pop(body_key) if body_key is not None else b""  # no body field: the fields are the message
    headers = {k: _s(v) for k, v in decoded.items()}
    eid = _s(entry_id)
    stamp = _id_time(eid)
    death = death_from_fields(headers, stamp)
    deaths = (death,) if death else ()
    return body_message(position, body, body_bytes, message_id=eid, timestamp=stamp, headers=headers, deaths=deaths,
                        first_death_reason=deaths[0].reason if deaths else None,
                        first_death_queue=deaths[0].queue if deaths else None, **extra)
