"""Redis Streams transport: XADD requests (pipelined when several are due at once), XREAD the run's reply stream.

The reply stream ``qdeck:reply:<run>`` is private to the run: it is trimmed as replies are read (so a long run does
not grow Redis) and deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.exceptions as rexc

from loadgen.transports.base import ReplyHandler
from probes.redis_client import checked, redis_client
from probes.urls import BrokerTarget

READ_COUNT = 128
BLOCK_MS = 100
TRIM_EVERY = 5000


class RedisTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue = target, queue
        self.reply_to = f"qdeck:reply:{run_id}"
        self.client = redis_client(target)
        self.reader = redis_client(target)
        self._task: asyncio.Task[None] | None = None
        self.reader_error: BaseException | None = None

    async def start(self, on_reply: ReplyHandler) -> None:
        await checked(self.target, self.client.ping())
        await checked(self.target, self.reader.ping())
        self._task = asyncio.create_task(self._read(on_reply), name="qdeck-redis-replies")

    async def _read(self, on_reply: ReplyHandler) -> None:
        last = b"0-0"
        since_trim = 0
        try:
            while True:
                res: Any = await self.reader.xread({self.reply_to: last}, count=READ_COUNT, block=BLOCK_MS)
                now = time.time_ns()
                for _stream, entries in res or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        body = fields.get(b"body")
                        if body is not None:
                            on_reply(body, now)
                    since_trim += len(entries)
                if since_trim >= TRIM_EVERY:
                    await self.reader.xtrim(self.reply_to, minid=last)
                    since_trim = 0
        except asyncio.CancelledError:
            raise
        except (rexc.RedisError, OSError) as exc:
            self.reader_error = exc

    async def send(self, bodies: list[bytes]) -> None:
        if len(bodies) == 1:
            await checked(self.target, self.client.xadd(self.queue, {"body": bodies[0]}))
            return
        pipe = self.client.pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(self.queue, {"body": body})
        await checked(self.target, pipe.execute())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.delete(self.reply_to)
        for c in (self.client, self.reader):
            with contextlib.suppress(rexc.RedisError, OSError):
                await c.aclose()
