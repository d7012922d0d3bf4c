"""Redis Streams source: a consumer group, XACK after the reply, XAUTOCLAIM for entries dead workers left pending.

Requests are stream entries with a ``body`` field; replies are XADDed to the request's ``reply_to`` stream; dead
letters go to ``<queue>:dlq`` with the body and ``reason``/``source``/``attempts``/``failed_at`` fields.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis.exceptions as rexc

from loadgen.worker.source import DeadLetter, Delivery
from probes.redis_client import checked, redis_client
from probes.urls import BrokerTarget


class RedisSource:
    def __init__(self, target: BrokerTarget, queue: str, *, group: str = "qdeck-workers", consumer: str,
                 claim_idle_s: float = 30.0, dead_letter: str | None = None) -> None:
        self.target, self.queue, self.group, self.consumer = target, queue, group, consumer
        self.dead_letter_name = dead_letter or f"{queue}:dlq"
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.client = redis_client(target)
        self._next_claim = 0.0
        self._claim_cursor = b"0-0"
        self._stopped = False

    async def start(self) -> None:
        try:
            await checked(self.target, self.client.xgroup_create(self.queue, self.group, id="0", mkstream=True))
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        if self._stopped:
            return []
        if time.monotonic() >= self._next_claim:
            claimed = await self._claim(max_items)
            if claimed:
                return claimed
        block = int(timeout_s * 1000)
        reply: Any = await checked(self.target, self.client.xreadgroup(
            self.group, self.consumer, {self.queue: ">"}, count=max_items, block=block if block > 0 else None))
        now = time.time_ns()
        out: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(_delivery(entry_id, fields, now))
        return out

    async def _claim(self, max_items: int) -> list[Delivery]:
        """Take over entries pending longer than claim_idle (their consumer died); scans the PEL a page per call."""
        try:
            res = await checked(self.target, self.client.xautoclaim(
                self.queue, self.group, self.consumer, self.claim_idle_ms, start_id=self._claim_cursor,
                count=max_items))
        except Exception as exc:
            if "NOGROUP" in str(exc):
                await self.start()
                return []
            raise
        cursor, entries = res[0], res[1]
        self._claim_cursor = cursor
        if cursor in (b"0-0", "0-0"):
            self._next_claim = time.monotonic() + max(self.claim_idle_ms / 2000, 0.1)
        now = time.time_ns()
        out = [_delivery(eid, fields, now) for eid, fields in entries if fields is not None]
        return out

    async def settle(self, replies: list[tuple[str, bytes]], dead: list[DeadLetter], done: list[Delivery]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for dest, body in replies:
            pipe.xadd(dest, {"body": body})
        for d in dead:
            record: dict[Any, Any] = {"body": d.delivery.body, **d.fields(self.queue)}
            pipe.xadd(self.dead_letter_name, record)
        if done:
            pipe.xack(self.queue, self.group, *[d.handle for d in done])
        await checked(self.target, pipe.execute())

    async def stop_fetching(self) -> list[Delivery]:
        self._stopped = True
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        return None  # entries stay pending in the group; XAUTOCLAIM hands them to a live worker

    async def aclose(self) -> None:
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.aclose()


def _delivery(entry_id: Any, fields: dict[bytes, bytes] | None, now: int) -> Delivery:
    body = (fields or {}).get(b"body")
    if body is None:
        return Delivery(b"", entry_id, now, problem="stream entry has no 'body' field")
    return Delivery(body, entry_id, now)
