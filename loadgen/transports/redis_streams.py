"""Redis Streams transport: XADD requests without waiting on the round trip, XREAD the run's reply stream.

Requests go out on a connection of their own: each batch of XADDs is packed by hand and written at once, and a
separate task reads the XADD replies, so the sender never waits on Redis (waiting showed up as schedule lag). An
error reply (a full Redis, a key of the wrong type) aborts the run at the next send, with Redis's message. A dropped
connection (a Redis restart) is re-made in the background, backing off up to 1 s between tries; meanwhile sends
raise ``ConnectionLost`` (the engine counts those requests unsent and reports the outage), and the reply reader goes
on from the last reply it read.

The reply stream ``qdeck:reply:<run>`` is private to the run: it is trimmed as replies are read (so a long run does
not grow Redis) and deleted at the end. Replies are read raw (no per-entry dicts) and handed over in slices, with
the loop given back between slices so that the sender is never held up for a whole read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.exceptions as rexc
from redis.asyncio.connection import AbstractConnection

from loadgen.brokers.redis_resp import pack_xadds, pack_xread, pack_xtrim_minid, xadd_head, xread_entries
from loadgen.transports.base import ReplyHandler
from probes.errors import ConnectionLost, ProbeError
from probes.redis_client import checked, redis_client, redis_error
from probes.urls import BrokerTarget

READ_COUNT = 256
SLICE = 32  # replies handled between two yields to the loop
BLOCK_MS = 100
TRIM_EVERY = 5000


class RedisTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue = target, queue
        self.reply_to = f"qdeck:reply:{run_id}"
        self.client = redis_client(target)
        self._xadd_head = xadd_head(queue)
        self._out: AbstractConnection | None = None
        self._in: AbstractConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_reply: ReplyHandler | None = None
        self._last = b"0-0"  # the last reply read: a reconnected reader goes on from there
        self.send_error: ProbeError | None = None  # an error reply (a full Redis, a wrong key type): ends the run
        self._lost: ConnectionLost | None = None  # set while the connection is down and being re-made
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0
        self._written = 0  # XADDs written on the current connection
        self._acked = 0  # XADD replies read back from it
        self._unconfirmed = 0  # XADDs written that no reply confirmed when their connection dropped (not yet taken)

    async def start(self, on_reply: ReplyHandler) -> None:
        self._on_reply = on_reply
        await checked(self.target, self.client.ping())
        await self._connect()

    async def _connect(self) -> None:
        assert self._on_reply is not None
        pool = self.client.connection_pool
        self._out = out = await checked(self.target, pool.get_connection())  # type: ignore[no-untyped-call]
        self._in = inn = await checked(self.target, pool.get_connection())  # type: ignore[no-untyped-call]
        self._tasks = [asyncio.create_task(self._read(inn, self._on_reply), name="qdeck-redis-replies"),
                       asyncio.create_task(self._read_acks(out), name="qdeck-redis-acks")]

    def _failed(self, exc: BaseException) -> None:
        """A reader or a write failed: an error reply ends the run; a dropped connection is re-made."""
        if self._closing:
            return
        if isinstance(exc, rexc.ResponseError) or not isinstance(exc, rexc.ConnectionError | rexc.TimeoutError
                                                                 | OSError):
            self.send_error = self.send_error or redis_error(self.target, exc)
            return
        if self._lost is None:
            cause = redis_error(self.target, exc)
            self._unconfirmed += self._written - self._acked
            self._written = self._acked = 0
            self._lost = ConnectionLost(f"{cause}; reconnecting")
            self._reconnecting = asyncio.create_task(self._reconnect(), name="qdeck-redis-reconnect")

    async def _reconnect(self) -> None:
        """Drop both connections and make new ones, backing off ×2 from 50 ms to 1 s between tries."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._disconnect()
        delay = 0.05
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self.client.ping()
                await self._connect()
            except (rexc.RedisError, OSError, ProbeError):
                await self._disconnect()
                delay = min(delay * 2, 1.0)
                continue
            self.reconnects += 1
            self._lost = None
            return

    async def _disconnect(self) -> None:
        for conn in (self._out, self._in):  # cancelled mid-read: never reused, so disconnected, not released
            if conn is not None:
                with contextlib.suppress(rexc.RedisError, OSError):
                    await conn.disconnect()
        self._out = self._in = None

    async def _read_acks(self, conn: AbstractConnection) -> None:
        try:
            while True:
                await conn.read_response()
                self._acked += 1
        except (rexc.RedisError, OSError) as exc:
            self._failed(exc)

    async def _read(self, conn: AbstractConnection, on_reply: ReplyHandler) -> None:
        stream = self.reply_to.encode()
        since_trim = 0
        try:
            while True:
                await conn.send_packed_command(pack_xread(stream, self._last, READ_COUNT, BLOCK_MS),
                                               check_health=False)
                entries = xread_entries(await conn.read_response())
                if not entries:
                    continue
                now = time.perf_counter_ns()
                for i in range(0, len(entries), SLICE):
                    if i:
                        await asyncio.sleep(0)
                    for _entry_id, fields in entries[i:i + SLICE]:
                        if len(fields) >= 2 and fields[0] == b"body":
                            on_reply(fields[1], now)
                self._last = last = entries[-1][0]
                since_trim += len(entries)
                if since_trim >= TRIM_EVERY:
                    await conn.send_packed_command(pack_xtrim_minid(stream, last), check_health=False)
                    await conn.read_response()
                    since_trim = 0
        except (rexc.RedisError, OSError) as exc:
            self._failed(exc)

    async def send(self, bodies: list[bytes]) -> None:
        if self.send_error is not None:
            raise self.send_error
        if self._lost is not None:
            raise self._lost
        assert self._out is not None, "send() before start()"
        try:
            await self._out.send_packed_command(pack_xadds(self._xadd_head, bodies), check_health=False)
            self._written += len(bodies)
        except (rexc.RedisError, OSError) as exc:
            self._failed(exc)
            raise self.send_error or self._lost or redis_error(self.target, exc) from None

    def failure(self) -> ProbeError | None:
        return self.send_error

    def take_unconfirmed(self) -> int:
        """How many of the requests last written went unconfirmed when a connection dropped (Redis may never have
        got them): the engine ends the newest that many in flight at once, as errors, instead of timeouts."""
        n, self._unconfirmed = self._unconfirmed, 0
        return n

    async def aclose(self) -> None:
        self._closing = True
        for task in [*self._tasks, *([self._reconnecting] if self._reconnecting else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.delete(self.reply_to)
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.aclose()
