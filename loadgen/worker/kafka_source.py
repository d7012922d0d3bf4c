"""Kafka source (confluent-kafka): a consumer group, offsets committed only after the replies are delivered
(at most every COMMIT_INTERVAL_S while serving, and once more when stopping).

Replies are produced to the request's ``reply_to`` topic (keyed by request id); dead letters to ``<queue>.dlq`` with
``reason``/``source``/``attempts``/``failed_at`` headers. The client is blocking, so it runs on one private thread;
commits are per partition up to the lowest offset still in progress (batches may finish out of order).
The blocking consumer polls on one private thread and replies/commits go through another (librdkafka's calls are
thread-safe), so a reply never waits behind an idle poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from loadgen.kafka_topics import ensure_topics
from loadgen.worker.source import DeadLetter, Delivery
from probes.errors import ProbeError
from probes.kafka_client import client_config
from probes.redact import redact_text
from probes.urls import BrokerTarget

COMMIT_INTERVAL_S = 0.5  # a commit per batch loaded the group coordinator enough to stall replies for seconds


class OffsetTracker:
    """Per partition, the offsets handed out and not yet done; the commit point is the lowest of them."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], dict[int, bool]] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def taken(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._open.setdefault((topic, partition), {})[offset] = False

    def done(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self._open.setdefault((topic, partition), {})[offset] = True

    def commits(self) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset to consume) for every partition whose commit point moved."""
        with self._lock:
            return self._commits()

    def positions(self) -> list[tuple[str, int, int]]:
        """Every partition's commit point so far (for the final, synchronous commit)."""
        with self._lock:
            return [(t, p, o) for (t, p), o in self._next.items()]

    def _commits(self) -> list[tuple[str, int, int]]:
        out = []
        for key, offsets in self._open.items():
            moved = None
            for off in list(offsets):  # insertion order = offset order within a partition
                if not offsets[off]:
                    break
                del offsets[off]
                moved = off + 1
            if moved is not None and moved != self._next.get(key):
                self._next[key] = moved
                out.append((key[0], key[1], moved))
        return out


class KafkaSource:
    def __init__(self, target: BrokerTarget, queue: str, *, group: str = "qdeck-workers",
                 dead_letter: str | None = None) -> None:
        self.target, self.queue, self.group = target, queue, group
        self.dead_letter_name = dead_letter or f"{queue}.dlq"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdeck-kafka-poll")
        self._settler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdeck-kafka-reply")
        self._tracker = OffsetTracker()
        self._stopped = False
        self._last_commit = 0.0
        base = client_config(target, timeout=10.0)
        self._consumer = Consumer({**base, "group.id": group, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", "receive.message.max.bytes": 200_000_000,
                                   "fetch.max.bytes": 50_000_000,
                                   "fetch.wait.max.ms": 5})
        self._producer = Producer({**base, "linger.ms": 0, "enable.idempotence": False})
        self._admin = AdminClient(base)

    async def _run(self, fn: Any, *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool or self._thread, fn, *args)
        except KafkaException as exc:
            raise ProbeError(redact_text(f"Kafka error: {exc}", self.target.secrets)[:300]) from None

    async def start(self) -> None:
        await self._run(ensure_topics, self._admin, self.target, (self.queue, self.dead_letter_name))
        await self._run(self._consumer.subscribe, [self.queue])

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
                raise ProbeError(redact_text(f"Kafka error while consuming {self.queue!r}: {m.error()}",
                                             self.target.secrets))
            self._tracker.taken(m.topic(), m.partition(), m.offset())
            handle = (m.topic(), m.partition(), m.offset(), m.headers())
            out.append(Delivery(m.value() or b"", handle, now))
        return out

    async def settle(self, replies: list[tuple[str, bytes]], dead: list[DeadLetter], done: list[Delivery]) -> None:
        await self._run(self._settle, replies, dead, done, pool=self._settler)

    def _settle(self, replies: list[tuple[str, bytes]], dead: list[DeadLetter], done: list[Delivery]) -> None:
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for dest, body in replies:
            self._producer.produce(dest, body, on_delivery=delivered)
        for d in dead:
            headers: list[tuple[str, str | bytes | None]] = [(k, v.encode()) for k, v in d.fields(self.queue).items()]
            self._producer.produce(self.dead_letter_name, d.delivery.body, headers=headers, on_delivery=delivered)
        left = self._producer.flush(30)
        if left or failures:
            # Not committing keeps the requests: another worker (or this one, after a restart) answers them again.
            raise ProbeError(f"Kafka: {left or len(failures)} replies not delivered: {(failures or ['timeout'])[0]}")
        for delivery in done:
            topic, partition, offset, _headers = delivery.handle
            self._tracker.done(topic, partition, offset)
        now = time.monotonic()
        if now - self._last_commit < COMMIT_INTERVAL_S:
            return  # committed at most every COMMIT_INTERVAL_S; aclose() commits the final positions
        self._last_commit = now
        commits = self._tracker.commits()
        if commits:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in commits], asynchronous=False)

    def _commit_final(self) -> None:
        self._tracker.commits()  # advance the commit points over everything settled since the last commit
        final = self._tracker.positions()
        if final:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for t, p, o in final], asynchronous=False)

    async def stop_fetching(self) -> list[Delivery]:
        self._stopped = True
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        return None  # uncommitted offsets are consumed again by the group's next member

    async def aclose(self) -> None:
        with contextlib.suppress(ProbeError):
            await self._run(self._commit_final)
        with contextlib.suppress(ProbeError):
            await self._run(self._consumer.close)
        self._thread.shutdown(wait=True)
        self._settler.shutdown(wait=True)
