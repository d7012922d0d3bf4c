"""Redis Streams transport: XADD requests without waiting on the round trip, XREAD the run's reply stream.

Requests go out on a connection of their own: each batch of XADDs is packed by hand and written at once, and a
separate task reads the XADD replies, so the sender never waits on Redis (waiting showed up as schedule lag). An
error reply (a full Redis, a key of the wrong type) aborts the run at the next send, with Redis's message.

The reply stream ``qdeck:reply:<run>`` is private to the run: it is trimmed as replies are read (so a long run does
not grow Redis) and deleted at the end. Replies are read raw (no per-entry dicts) and handed over in slices, with
the loop given back between slices so that the sender is never held up for a whole read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.exceptions as rexc
from redis.asyncio.connection import AbstractConnection

from loadgen.transports.base import ReplyHandler
from probes.errors import ProbeError
from probes.redis_client import checked, redis_client, redis_error
from probes.urls import BrokerTarget

READ_COUNT = 256
SLICE = 32  # replies handled between two yields to the loop
BLOCK_MS = 100
TRIM_EVERY = 5000


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def xadd_head(stream: str) -> bytes:
    """The RESP prefix of ``XADD <stream> * body``; append one bulk string (the body) per command."""
    return b"*5\r\n$4\r\nXADD\r\n" + _bulk(stream.encode()) + _bulk(b"*") + _bulk(b"body")


def pack_xadds(head: bytes, bodies: list[bytes]) -> bytes:
    return b"".join([head + b"$%d\r\n%b\r\n" % (len(b), b) for b in bodies])


def pack_xread(stream: bytes, last: bytes, count: int, block_ms: int) -> bytes:
    return (b"*8\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n" + _bulk(b"%d" % count) + b"$5\r\nBLOCK\r\n"
            + _bulk(b"%d" % block_ms) + b"$7\r\nSTREAMS\r\n" + _bulk(stream) + _bulk(last))


def xread_entries(res: Any) -> list[Any]:
    """The entries ``[[id, [field, value, ...]], ...]`` of a raw one-stream XREAD reply (RESP2 list of
    ``[stream, entries]`` or RESP3 map ``{stream: entries}``); [] on a timeout."""
    if not res:
        return []
    return next(iter(res.values())) if isinstance(res, dict) else res[0][1]


class RedisTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue = target, queue
        self.reply_to = f"qdeck:reply:{run_id}"
        self.client = redis_client(target)
        self._xadd_head = xadd_head(queue)
        self._out: AbstractConnection | None = None
        self._in: AbstractConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.send_error: ProbeError | None = None  # the first failure of either connection; raised by send()

    async def start(self, on_reply: ReplyHandler) -> None:
        await checked(self.target, self.client.ping())
        pool = self.client.connection_pool
        self._out = out = await checked(self.target, pool.get_connection())  # type: ignore[no-untyped-call]
        self._in = inn = await checked(self.target, pool.get_connection())  # type: ignore[no-untyped-call]
        self._tasks = [asyncio.create_task(self._read(inn, on_reply), name="qdeck-redis-replies"),
                       asyncio.create_task(self._read_acks(out), name="qdeck-redis-acks")]

    async def _read_acks(self, conn: AbstractConnection) -> None:
        try:
            while True:
                await conn.read_response()
        except (rexc.RedisError, OSError) as exc:
            self.send_error = redis_error(self.target, exc)

    async def _read(self, conn: AbstractConnection, on_reply: ReplyHandler) -> None:
        stream = self.reply_to.encode()
        last = b"0-0"
        since_trim = 0
        try:
            while True:
                await conn.send_packed_command(pack_xread(stream, last, READ_COUNT, BLOCK_MS), check_health=False)
                entries = xread_entries(await conn.read_response())
                if not entries:
                    continue
                now = time.time_ns()
                for i in range(0, len(entries), SLICE):
                    if i:
                        await asyncio.sleep(0)
                    for _entry_id, fields in entries[i:i + SLICE]:
                        if len(fields) >= 2 and fields[0] == b"body":
                            on_reply(fields[1], now)
                last = entries[-1][0]
                since_trim += len(entries)
                if since_trim >= TRIM_EVERY:
                    await conn.send_packed_command(b"*4\r\n$5\r\nXTRIM\r\n" + _bulk(stream) + b"$5\r\nMINID\r\n"
                                                   + _bulk(last), check_health=False)
                    await conn.read_response()
                    since_trim = 0
        except (rexc.RedisError, OSError) as exc:
            self.send_error = redis_error(self.target, exc)

    async def send(self, bodies: list[bytes]) -> None:
        if self.send_error is not None:
            raise self.send_error
        assert self._out is not None, "send() before start()"
        await checked(self.target, self._out.send_packed_command(pack_xadds(self._xadd_head, bodies),
                                                                 check_health=False))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in (self._out, self._in):  # cancelled mid-read: never reused, so disconnected, not released
            if conn is not None:
                with contextlib.suppress(rexc.RedisError, OSError):
                    await conn.disconnect()
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.delete(self.reply_to)
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.aclose()
