"""Kafka source (confluent-kafka): a consumer group, offsets committed only once each request's outcome is durable
(at most every COMMIT_INTERVAL_S while serving, on every revocation, and once more when stopping). The interval
has a trailing edge: what a settle leaves uncommitted (a commit was made less than COMMIT_INTERVAL_S before) is
committed by a timer COMMIT_INTERVAL_S after that commit, if no settle came first. So a worker that goes idle does
not hold done offsets uncommitted until it stops: its group lag reaches 0, and a rebalance that starts while it is
idle finds nothing left to commit (a broker may refuse the commit made on revocation: noida-db does, with
ILLEGAL_GENERATION, and the records done since the last commit are then consumed again by the partition's next owner).

Replies are produced to the request's ``reply_to`` topic; dead letters to ``<queue>.dlq`` with
``reason``/``source``/``attempts``/``failed_at`` headers, by a producer with ``acks=all`` whose delivery is awaited
before the offset can be committed. A reply the broker refuses (an invalid topic name, text no UTF-8 spells, a
delivery that failed) becomes a dead letter with the reason, so its offset completes and the partition's commits go
on. A dead letter that cannot be delivered is retried (with a backoff) until it is, or until the worker stops: its
offset stays uncommitted meanwhile, and a worker that stops first leaves it to be consumed again.

Commits are per partition up to the lowest offset still in progress (batches may finish out of order). A rebalance
revokes partitions: what is done on them is committed there and then, and the rest of their bookkeeping is dropped
(a later completion of a revoked offset commits nothing: the partition's next owner consumes it again), so no
commit ever covers a partition the worker no longer owns. Topics the worker creates get ``partitions`` partitions
and ``replication_factor`` replicas, said in a log line.

The blocking consumer polls on one private thread and replies go through another, so a reply never waits behind
an idle poll. Every call on the consumer — polls, commits, the rebalance callbacks inside a poll — is made on the
polling thread: confluent-kafka (2.x) lets one thread at a time into a client's calls, so a commit made on the reply
thread while holding the commit lock waited for the poll to return, and the poll, running the revocation callback,
waited for that lock — the worker stopped consuming for good (found with py-spy in the rebalance test). The
interval commits are asynchronous and queued on the polling thread between polls; their outcome comes back through
``on_commit`` there: a failed one is due again, and the trailing commit retries it. Only the revocation's commit
(inside the callback) and the final one wait for their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from loadgen.brokers.kafka_topics import ensure_topics
from loadgen.worker.source import (
    DeadLetter,
    Delivery,
    Outgoing,
    Settlement,
    exception_text,
    merge_reply_failures,
    reply_failed,
    summarise,
)
from probes.errors import ProbeError
from probes.kafka_client import client_config
from probes.redact import redact_text
from probes.urls import BrokerTarget

COMMIT_INTERVAL_S = 0.5  # a commit per batch loaded the group coordinator enough to stall replies for seconds
MESSAGE_TIMEOUT_MS = 10_000  # a reply or dead letter not delivered by then has failed (flushes wait longer)
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)

Key = tuple[str, int]
Notify = Callable[..., None]


class OffsetTracker:
    """Per partition, the offsets handed out and not yet done; the commit point is the lowest of them.

    Only assigned partitions are committed. Each partition has a generation, bumped when it is revoked: an offset
    taken in an older generation (or while the partition was not assigned) is no longer this worker's to commit, and
    its completion is ignored."""

    def __init__(self) -> None:
        self._open: dict[Key, dict[int, bool]] = {}
        self._next: dict[Key, int] = {}
        self._committed: dict[Key, int] = {}
        self._gen: dict[Key, int] = {}
        self._owned: set[Key] = set()
        self._lock = threading.Lock()

    def assigned(self, partitions: set[Key]) -> None:
        with self._lock:
            self._owned |= partitions

    def taken(self, topic: str, partition: int, offset: int) -> int:
        """Record an offset handed out; returns the partition's generation, for ``done`` (-1: not assigned)."""
        with self._lock:
            key = (topic, partition)
            if key not in self._owned:
                return -1
            self._open.setdefault(key, {})[offset] = False
            return self._gen.get(key, 0)

    def done(self, topic: str, partition: int, offset: int, generation: int) -> bool:
        """Mark an offset done; False (and nothing recorded) if its partition was revoked since it was taken."""
        with self._lock:
            key = (topic, partition)
            if self._gen.get(key, 0) != generation:
                return False
            offsets = self._open.get(key)
            if offsets is None or offset not in offsets:
                return False
            offsets[offset] = True
            return True

    def due(self, partitions: set[Key] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset to consume) for every partition (of ``partitions``, if given) whose commit
        point moved past what was last committed."""
        with self._lock:
            self._advance()
            return [(t, p, o) for (t, p), o in self._next.items()
                    if (partitions is None or (t, p) in partitions) and (t, p) in self._owned
                    and self._committed.get((t, p)) != o]

    def committed(self, positions: list[tuple[str, int, int]]) -> None:
        with self._lock:
            for t, p, o in positions:
                if (t, p) in self._next:
                    self._committed[(t, p)] = o

    def uncommitted(self, positions: list[tuple[str, int, int]]) -> None:
        """A commit of ``positions`` failed: each is due again (unless a later commit moved past it)."""
        with self._lock:
            for t, p, o in positions:
                if self._committed.get((t, p)) == o:
                    del self._committed[(t, p)]

    def drop(self, partitions: set[Key]) -> None:
        """Forget revoked partitions: their offsets in progress will be consumed again by their next owner."""
        with self._lock:
            self._owned -= partitions
            for key in partitions:
                self._open.pop(key, None)
                self._next.pop(key, None)
                self._committed.pop(key, None)
                self._gen[key] = self._gen.get(key, 0) + 1

    def _advance(self) -> None:
        for key, offsets in self._open.items():
            moved = None
            for off in list(offsets):  # insertion order = offset order within a partition
                if not offsets[off]:
                    break
                del offsets[off]
                moved = off + 1
            if moved is not None:
                self._next[key] = moved


# Errors after which librdkafka reconnects on its own: the link is down, not the request.
_LINK_DOWN = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})

class KafkaSource:
    def __init__(self, target: BrokerTarget, queue: str, *, group: str, dead_letter: str | None = None,
                 partitions: int = 1, replication_factor: int = 1, notify: Notify | None = None) -> None:
        self.target, self.queue, self.group = target, queue, group
        self.dead_letter_name = dead_letter or f"{queue}.dlq"
        self.partitions, self.replication_factor = partitions, replication_factor
        self._notify = notify
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdeck-kafka-poll")
        self._settler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdeck-kafka-reply")
        self._tracker = OffsetTracker()
        self._commit_lock = threading.Lock()  # a revocation's commit and the settler's never interleave
        self._stopped = False
        self._last_commit = 0.0  # monotonic time of the last commit attempted (guarded by _commit_lock)
        self._closed = False  # the consumer is closed (guarded by _commit_lock): nothing more to commit
        self._trailing: asyncio.TimerHandle | None = None  # the trailing commit, once a settle left something due
        self._trailing_problem: str | None = None  # the last trailing commit failure said (a lasting one, once)
        base = client_config(target, timeout=10.0)
        self._down_since: float | None = None  # librdkafka lost every broker at this time (monotonic)
        self._loop: asyncio.AbstractEventLoop | None = None  # the worker's loop (start): on_commit reports there
        self._consumer = Consumer({**base, "group.id": group, "enable.auto.commit": False,
                                   "error_cb": self._on_client_error, "on_commit": self._on_commit,
                                   "auto.offset.reset": "earliest", "receive.message.max.bytes": 200_000_000,
                                   "fetch.max.bytes": 50_000_000,
                                   "fetch.wait.max.ms": 5})
        self._producer = Producer({**base, "linger.ms": 0, "enable.idempotence": False,
                                   "message.timeout.ms": MESSAGE_TIMEOUT_MS})
        self._dead_producer = Producer({**base, "linger.ms": 0, "acks": "all", "enable.idempotence": False,
                                        "message.timeout.ms": MESSAGE_TIMEOUT_MS})
        self._admin = AdminClient(base)

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's own errors (it reconnects by itself): one line when every broker is gone, one when back."""
        if err.code() in _LINK_DOWN and self._down_since is None:
            self._down_since = time.monotonic()
            self._say("broker lost", f"lost the broker: {err.str()}; the Kafka client reconnects by itself",
                      reason=err.str())

    def _back(self) -> None:
        if self._down_since is not None:
            after = time.monotonic() - self._down_since
            self._down_since = None
            self._say("broker back", f"the broker is back after {after:.1f} s; serving again", after_s=round(after, 3))

    async def reconnect(self) -> None:
        """Nothing to re-make: librdkafka reconnects by itself, and the group rejoins on the next poll."""
        return None

    def _say(self, event: str, message: str, **fields: Any) -> None:
        if self._notify is not None:
            self._notify(event, message, **fields)

    async def _run(self, fn: Any, *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool or self._thread, fn, *args)
        except KafkaException as exc:
            raise ProbeError(redact_text(f"Kafka error: {exc}", self.target.secrets)[:300]) from None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        created = await self._run(lambda: ensure_topics(self._admin, self.target, (self.queue, self.dead_letter_name),
                                                        partitions=self.partitions,
                                                        replication_factor=self.replication_factor))
        for name in created:
            n, rf = self.partitions, self.replication_factor
            self._say("created topic", f"created topic {name!r} with {n} partition{'s' if n != 1 else ''}, "
                      f"replication factor {rf} (choose with --partitions, --replication-factor)",
                      topic=name, partitions=n, replication_factor=rf)
        await self._run(lambda: self._consumer.subscribe([self.queue], on_assign=self._on_assign,
                                                         on_revoke=self._on_revoke, on_lost=self._on_lost))

    # ---- rebalances (called on the polling thread, inside consume) --------------------------------------------
    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._tracker.assigned({(tp.topic, tp.partition) for tp in partitions})
        self._say("partitions assigned", f"assigned {_names(partitions)}", partitions=_list(partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        with self._commit_lock:
            due = self._tracker.due(keys)
            problem = self._commit(due) if due else None
            self._tracker.drop(keys)
        self._say("partitions revoked", f"revoked {_names(partitions)}; committed what was done there"
                  + (f" (commit failed: {problem})" if problem else ""), partitions=_list(partitions))

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._tracker.drop({(tp.topic, tp.partition) for tp in partitions})  # not ours any more: commit nothing
        self._say("partitions lost", f"lost {_names(partitions)}; their requests in progress will be consumed "
                  "again by their next owner", partitions=_list(partitions))

    def _commit(self, positions: list[tuple[str, int, int]], *, wait: bool = True) -> str | None:
        """Commit ``positions``; a failure (a rebalance under way) is returned, and retried with the next commit.
        ``wait=False`` (the interval commits): sent without waiting for the answer, which ``_on_commit`` gets; the
        positions count as committed meanwhile, and are due again if the answer is a failure."""
        offsets = [TopicPartition(t, p, o) for t, p, o in positions]
        try:
            if wait:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            return exception_text(exc)
        self._tracker.committed(positions)
        return None

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to a commit (on the polling thread): the positions of a failed one are due again,
        and the worker's loop says so and arms the trailing commit to retry them."""
        failed = [(tp.topic, tp.partition, tp.offset) for tp in partitions if err is not None or tp.error is not None]
        loop = self._loop
        if not failed:
            if self._trailing_problem is not None and loop is not None:  # a lasting failure is over: say the next
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._commit_ok)
            return
        self._tracker.uncommitted(failed)
        errors = [err] if err is not None else [tp.error for tp in partitions if tp.error is not None]
        problem = "; ".join(sorted({e.str() if isinstance(e, KafkaError) else str(e) for e in errors}))
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the worker has stopped
                loop.call_soon_threadsafe(self._commit_failed, problem)

    def _commit_ok(self) -> None:
        self._trailing_problem = None

    def _commit_failed(self, problem: str) -> None:
        if problem != self._trailing_problem:
            self._say("warning", f"offset commit failed (retried with the next one): {problem}")
        self._trailing_problem = problem
        self._schedule_trailing()

    # ---- consuming ----------------------------------------------------------------------------------------------
    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        if self._stopped:
            return []
        msgs = await self._run(self._consumer.consume, max_items, max(timeout_s, 0.0))
        now = time.time_ns()
        out: list[Delivery] = []
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                if m.error().code() in _LINK_DOWN:  # the client reconnects; said once by _on_client_error
                    self._on_client_error(m.error())
                    continue
                raise ProbeError(redact_text(f"Kafka error while consuming {self.queue!r}: {m.error()}",
                                             self.target.secrets))
            generation = self._tracker.taken(m.topic(), m.partition(), m.offset())
            handle = (m.topic(), m.partition(), m.offset(), m.headers(), generation)
            out.append(Delivery(m.value() or b"", handle, now))
        if out:
            self._back()
        return out

    # ---- settling -------------------------------------------------------------------------------------------
    async def settle(self, replies: list[Outgoing], dead: list[DeadLetter], done: list[Delivery]) -> Settlement:
        settled: Settlement = await self._run(self._settle, replies, dead, done, pool=self._settler)
        self._schedule_trailing()
        return settled

    def _commit_due(self) -> str | None:
        """Commit what is done, unless a commit was attempted less than COMMIT_INTERVAL_S ago (then the next settle
        or the trailing commit makes it). A failure is returned, not raised."""
        with self._commit_lock:
            now = time.monotonic()
            if self._closed or now - self._last_commit < COMMIT_INTERVAL_S:
                return None
            due = self._tracker.due()
            if not due:
                return None
            self._last_commit = now
            return self._commit(due, wait=False)

    def _schedule_trailing(self) -> None:
        """On the event loop: if done offsets are left uncommitted, commit them COMMIT_INTERVAL_S after the last
        commit (at once when that is past), on the polling thread between two polls; no reply waits for it."""
        if self._trailing is not None or self._stopped or not self._tracker.due():
            return
        delay = max(0.0, self._last_commit + COMMIT_INTERVAL_S - time.monotonic())
        self._trailing = asyncio.get_running_loop().call_later(delay, self._trailing_commit)

    def _trailing_commit(self) -> None:
        self._trailing = None
        if self._stopped:  # aclose makes the final commit
            return
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._commit_due)
        done.add_done_callback(self._trailing_done)

    def _trailing_done(self, fut: asyncio.Future[str | None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        problem = exception_text(exc) if exc is not None else fut.result()
        if problem:  # refused at once; a failure answered later comes through _on_commit
            self._commit_failed(problem)
            return
        self._schedule_trailing()  # still due (failed, or a settle committed meanwhile and more finished): again

    def _settle(self, replies: list[Outgoing], dead: list[DeadLetter], done: list[Delivery]) -> Settlement:
        out = Settlement()
        refused: list[DeadLetter] = []
        on_way: list[Outgoing] = []
        reached: set[int] = set()
        failed: dict[int, tuple[Outgoing, str]] = {}
        for r in replies:
            def delivered(err: Any, _msg: Any, r: Outgoing = r) -> None:
                if err is None:
                    reached.add(id(r))
                else:
                    failed[id(r)] = (r, str(err))
            problem = _produce(self._producer, r.destination, r.body, None, delivered)
            if problem is None:
                on_way.append(r)
            else:
                refused.append(reply_failed(r, problem))
        dead = merge_reply_failures(dead, refused)
        undelivered = self._dead_letter(dead)
        self._producer.flush(MESSAGE_TIMEOUT_MS / 1000 + 5)  # every delivery report is in by then
        for r in on_way:
            if id(r) not in reached and id(r) not in failed:
                failed[id(r)] = (r, "no delivery report")
        dead_ok = {id(d.delivery) for d in dead} - set(undelivered)
        second = [reply_failed(r, why) for r, why in failed.values() if id(r.delivery) not in dead_ok]
        out.replied = len(on_way) - len(failed)
        out.reply_failures = len(refused) + len(failed)
        if refused or second:
            out.problems.append(summarise(f"{out.reply_failures} replies could not be published, dead-lettering them "
                                          f"instead", [f.reason for f in refused + second]))
        # The dead letters not yet delivered (and those of the replies that failed): retried until delivered, or
        # until the worker stops; their offsets stay uncommitted meanwhile.
        pending = merge_reply_failures([d for d in dead if id(d.delivery) in undelivered], second)
        attempt = 0
        while pending:
            undelivered = self._dead_letter(pending)
            dead_ok |= {id(d.delivery) for d in pending} - set(undelivered)
            pending = [d for d in pending if id(d.delivery) in undelivered]
            if not pending or self._stopped:
                break
            time.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
            attempt += 1
        out.dead_lettered = len(dead_ok)
        lost = {id(d.delivery) for d in pending}
        if lost:
            out.held = len(lost)
            out.problems.append(summarise(f"{len(lost)} dead letters not delivered, offsets left uncommitted to be "
                                          "consumed again", [undelivered[i] for i in lost if i in undelivered]))
        for delivery in done:
            if id(delivery) not in lost:
                topic, partition, offset, _headers, generation = delivery.handle
                self._tracker.done(topic, partition, offset, generation)
        return out  # settle() arms the commit of what is done now (on the polling thread)

    def _dead_letter(self, dead: list[DeadLetter]) -> dict[int, str]:
        """Produce dead letters (acks=all) and wait for their delivery; the ones not delivered, by id of their
        delivery, with the reason."""
        failures: dict[int, str] = {}
        if not dead:
            return failures
        for d in dead:
            def delivered(err: Any, _msg: Any, key: int = id(d.delivery)) -> None:
                if err is not None:
                    failures[key] = f"dead letter to {self.dead_letter_name!r} failed: {err}"
            headers: list[tuple[str, str | bytes | None]] = [(k, v.encode()) for k, v in d.fields(self.queue).items()]
            problem = _produce(self._dead_producer, self.dead_letter_name, d.delivery.body, headers, delivered)
            if problem is not None:
                failures[id(d.delivery)] = f"dead letter to {self.dead_letter_name!r} failed: {problem}"
        if self._dead_producer.flush(MESSAGE_TIMEOUT_MS / 1000 + 5):
            for d in dead:
                failures.setdefault(id(d.delivery), "dead letter not delivered in time")
        return failures

    def _commit_final(self) -> None:
        with self._commit_lock:
            due = self._tracker.due()
            problem = self._commit(due) if due else None
            self._closed = True  # a trailing commit still queued on the settler finds nothing to do
        if problem:  # a rebalance under way: the partitions may be another member's now, so nothing is forced
            self._say("warning", f"final offset commit failed, the requests since the last commit will be consumed "
                      f"again: {problem}")

    async def stop_fetching(self) -> list[Delivery]:
        self._stopped = True
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        return None  # uncommitted offsets are consumed again by the group's next member

    async def aclose(self) -> None:
        self._stopped = True
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        with contextlib.suppress(ProbeError):
            await self._run(self._commit_final)
        with contextlib.suppress(ProbeError, RuntimeError):
            await self._run(self._consumer.close)
        self._thread.shutdown(wait=True)
        self._settler.shutdown(wait=True)


def _produce(producer: Producer, topic: str, body: bytes, headers: list[tuple[str, str | bytes | None]] | None,
             on_delivery: Callable[[Any, Any], None]) -> str | None:
    """Produce one message; None if it is on its way (its delivery report says the rest), else why it was refused
    at once (a name no UTF-8 spells, an invalid argument). A full local queue is waited out."""
    for _ in range(100):
        try:
            producer.produce(topic, body, headers=headers, on_delivery=on_delivery)
            return None
        except BufferError:
            producer.poll(0.1)
        except (KafkaException, UnicodeError, TypeError, ValueError) as exc:
            return exception_text(exc)
    return "the producer's queue stayed full"


def _list(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(_list(partitions)) or "nothing"
