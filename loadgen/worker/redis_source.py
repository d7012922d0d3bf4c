"""Redis Streams source: a consumer group, XACK once the outcome is durable, XAUTOCLAIM for entries dead workers
left pending.

Requests are stream entries with a ``body`` field; replies are XADDed to the request's ``reply_to`` stream; dead
letters go to ``<queue>:dlq`` with the body and ``reason``/``source``/``attempts``/``failed_at`` fields.

Settling a batch checks every write (a pipeline without a transaction runs every command whatever the others did,
and MULTI/EXEC does not roll back a failed one either): the replies' and dead letters' XADDs go first and each
result is read; a refused reply (WRONGTYPE, OOM, a key no UTF-8 spells) is dead-lettered with the reason, and that
XADD is checked too; only then are the entries whose outcome is durable XACKed. An entry neither replied to nor
dead-lettered stays pending: it is taken over again after ``claim_idle`` (by this worker or another) and retried.

The entries a worker is working on are kept fresh (XCLAIM to itself, JUSTID, every third of ``claim_idle``), so a
batch that takes longer than ``claim_idle`` is never taken over by another worker, nor by this one's next XAUTOCLAIM.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.exceptions as rexc

from loadgen.brokers.redis_resp import bulk, xadd_head
from loadgen.worker.source import (
    CLAIM_IDLE_S,
    DEFAULT_GROUP,
    DeadLetter,
    Delivery,
    Outgoing,
    Settlement,
    merge_reply_failures,
    reply_failed,
    summarise,
)
from probes.redis_client import checked, redis_client
from probes.urls import BrokerTarget

# A blocking read's timeout is precise to Redis's timer (hz 10 by default: 100 ms); shorter waits are polled.
PRECISE_BELOW_S = 0.2
POLL_STEP_S = 0.001
MAX_HEADS = 1024  # reply destinations whose packed XADD head is kept (a run each; forgotten all at once past it)


class RedisSource:
    def __init__(self, target: BrokerTarget, queue: str, *, group: str = DEFAULT_GROUP, consumer: str,
                 claim_idle_s: float = CLAIM_IDLE_S, dead_letter: str | None = None) -> None:
        self.target, self.queue, self.group, self.consumer = target, queue, group, consumer
        self.dead_letter_name = dead_letter or f"{queue}:dlq"
        self.claim_idle_ms = max(int(claim_idle_s * 1000), 1)
        self.client = redis_client(target)
        self._next_claim = 0.0
        self._claim_cursor = b"0-0"
        self._stopped = False
        self._in_hand: set[Any] = set()  # entry ids fetched and not yet settled
        self._keeper: asyncio.Task[None] | None = None
        self._heads: dict[str, bytes] = {}  # reply destination -> its XADD's packed head (one per load run)

    async def start(self) -> None:
        try:
            await checked(self.target, self.client.xgroup_create(self.queue, self.group, id="0", mkstream=True))
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_fresh())

    async def reconnect(self) -> None:
        """redis-py makes new connections by itself: check Redis answers and re-create the group (a Redis restarted
        without persistence lost the stream and its group). Entries in hand stay pending: reclaimed after claim-idle."""
        with contextlib.suppress(rexc.RedisError, OSError):  # every pooled connection is stale: drop them all
            await self.client.connection_pool.disconnect()
        await checked(self.target, self.client.ping())
        await self.start()
        self._next_claim = 0.0
        self._claim_cursor = b"0-0"

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        if self._stopped:
            return []
        if time.monotonic() >= self._next_claim:
            claimed = await self._claim(max_items)
            if claimed:
                return self._take(claimed)
        if timeout_s >= PRECISE_BELOW_S:
            reply: Any = await checked(self.target, self.client.xreadgroup(
                self.group, self.consumer, {self.queue: ">"}, count=max_items, block=int(timeout_s * 1000)))
        else:
            reply = await self._read_until(max_items, time.monotonic() + timeout_s)
        now = time.time_ns()
        out: list[Delivery] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(_delivery(entry_id, fields, now))
        return self._take(out)

    async def _read_until(self, max_items: int, deadline: float) -> Any:
        """Redis ends a BLOCK that times out only at its next timer tick (hz 10: up to 100 ms late), so a batch's
        last few milliseconds of ``max_wait`` are waited here: non-blocking reads, 1 ms apart, until the deadline."""
        while True:
            reply = await checked(self.target, self.client.xreadgroup(
                self.group, self.consumer, {self.queue: ">"}, count=max_items))
            left = deadline - time.monotonic()
            if reply or left <= 0:
                return reply
            await asyncio.sleep(min(POLL_STEP_S, left))

    def _take(self, deliveries: list[Delivery]) -> list[Delivery]:
        for d in deliveries:
            self._in_hand.add(d.handle)
        return deliveries

    async def _claim(self, max_items: int) -> list[Delivery]:
        """Take over entries pending longer than claim_idle (their consumer died); scans the PEL a page per call.
        An entry this worker is still working on is not handed out twice."""
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
        return [_delivery(eid, fields, now) for eid, fields in entries
                if fields is not None and eid not in self._in_hand]

    async def _keep_fresh(self) -> None:
        """Reset the idle time of the entries in hand, so that no XAUTOCLAIM takes them while they are worked on."""
        every = max(self.claim_idle_ms / 3000, 0.05)
        while True:
            await asyncio.sleep(every)
            ids = list(self._in_hand)
            if not ids:
                continue
            with contextlib.suppress(Exception):  # a failed refresh only risks a duplicate; the next one retries
                await self.client.xclaim(self.queue, self.group, self.consumer, 0, ids, justid=True)

    async def settle(self, replies: list[Outgoing], dead: list[DeadLetter], done: list[Delivery]) -> Settlement:
        try:
            return await self._settle(replies, dead, done)
        finally:
            for d in done:
                self._in_hand.discard(d.handle)

    async def _settle(self, replies: list[Outgoing], dead: list[DeadLetter], done: list[Delivery]) -> Settlement:
        out = Settlement()
        refused: list[DeadLetter] = []
        sendable: list[tuple[Outgoing, bytes]] = []
        heads = self._heads
        for r in replies:
            head = heads.get(r.destination)
            if head is None:
                try:
                    head = xadd_head(r.destination)
                except UnicodeEncodeError as exc:  # not a key Redis can be sent: this reply alone is refused
                    refused.append(reply_failed(r, f"{type(exc).__name__}: {exc}"))
                    continue
                if len(heads) >= MAX_HEADS:
                    heads.clear()
                heads[r.destination] = head
            sendable.append((r, head))
        dead = merge_reply_failures(dead, refused)
        # 1. replies and dead letters, each result checked
        reply_results = await checked(self.target, self._xadd_replies(sendable)) if sendable else []
        dead_results: list[Any] = []
        if dead:
            pipe = self.client.pipeline(transaction=False)
            for d in dead:
                pipe.xadd(self.dead_letter_name, self._record(d))
            dead_results = await checked(self.target, pipe.execute(raise_on_error=False))
        dead_ok = {id(d.delivery) for d, res in zip(dead, dead_results, strict=True)
                   if not isinstance(res, BaseException)}
        failed_dead = [(d, res) for d, res in zip(dead, dead_results, strict=True) if isinstance(res, BaseException)]
        failed_replies: list[DeadLetter] = []
        for (r, _key), res in zip(sendable, reply_results, strict=True):
            if not isinstance(res, BaseException):
                out.replied += 1
            elif id(r.delivery) not in dead_ok:  # already dead-lettered (its error reply failed): nothing to add
                failed_replies.append(reply_failed(r, _error_text(res)))
        out.reply_failures = len(refused) + sum(isinstance(res, BaseException) for res in reply_results)
        out.dead_lettered = len(dead_ok)
        if refused or failed_replies:
            out.problems.append(summarise(f"{out.reply_failures} replies could not be published, dead-lettering them "
                                          f"instead", [f.reason for f in refused + failed_replies]))
        # 2. the refused replies' dead letters, checked too
        if failed_replies:
            pipe = self.client.pipeline(transaction=False)
            for f in failed_replies:
                pipe.xadd(self.dead_letter_name, self._record(f))
            second = await checked(self.target, pipe.execute(raise_on_error=False))
            for f, res in zip(failed_replies, second, strict=True):
                if isinstance(res, BaseException):
                    failed_dead.append((f, res))
                else:
                    out.dead_lettered += 1
                    dead_ok.add(id(f.delivery))
        lost = {id(d.delivery) for d, _res in failed_dead} - dead_ok
        # 3. XACK what is durable; the rest (lost: neither reply nor dead letter written) stays pending, to be
        # claimed again and retried
        durable = [d.handle for d in done if id(d) not in lost]
        if durable:
            await checked(self.target, self.client.xack(self.queue, self.group, *durable))
        if lost:
            out.held = len(lost)
            out.problems.append(summarise(f"{len(lost)} requests neither replied to nor dead-lettered, left pending "
                                          f"to be retried after {self.claim_idle_ms / 1000:g} s",
                                          [f"dead letter to {self.dead_letter_name!r} failed: {_error_text(res)}"
                                           for _d, res in failed_dead]))
        return out

    async def _xadd_replies(self, sendable: list[tuple[Outgoing, bytes]]) -> list[Any]:
        """Each reply's XADD, packed by hand and written at once on a connection of the pool (redis-py's pipeline
        packed and parsed each command: over half of the worker's CPU per streamed chunk); each result is the
        entry id, or the ``ResponseError`` of a reply Redis refused (as ``raise_on_error=False`` gives them)."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(b"".join([head + bulk(r.body) for r, head in sendable]),
                                           check_health=False)
            results: list[Any] = []
            for _ in sendable:
                try:
                    results.append(await conn.read_response())
                except rexc.ResponseError as exc:  # this reply's error; the connection reads on
                    results.append(exc)
            return results
        except BaseException:
            await conn.disconnect()  # replies left unread on it: never handed out again as it is
            raise
        finally:
            await pool.release(conn)

    def _record(self, d: DeadLetter) -> dict[Any, Any]:
        return {"body": d.delivery.body, **d.fields(self.queue)}

    async def stop_fetching(self) -> list[Delivery]:
        self._stopped = True
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:  # entries stay pending in the group; XAUTOCLAIM hands them to a live worker
            self._in_hand.discard(d.handle)

    async def aclose(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        with contextlib.suppress(rexc.RedisError, OSError):
            await self.client.aclose()


def _error_text(exc: BaseException) -> str:
    """A Redis error as its reply says it (``WRONGTYPE Operation against ...``); redis-py's own classes by name."""
    if type(exc) is rexc.ResponseError:
        return str(exc)[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


def _delivery(entry_id: Any, fields: dict[bytes, bytes] | None, now: int) -> Delivery:
    body = (fields or {}).get(b"body")
    if body is None:
        return Delivery(b"", entry_id, now, problem="stream entry has no 'body' field")
    return Delivery(body, entry_id, now)
