"""Kafka transport: a confluent-kafka producer for requests, a consumer on the reply topic for replies.

Replies go to ``<queue>.replies`` (created if missing, shared by runs; each run keeps only its own replies). The
reply consumer is assigned every partition at the high watermark read *before* the first request is sent, so no reply
is skipped, and it commits nothing. Both clients block, so each runs on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from loadgen.brokers.kafka_topics import ensure_topics
from loadgen.transports.base import ReplyHandler
from probes.errors import ProbeError
from probes.kafka_client import client_config
from probes.urls import BrokerTarget


class KafkaTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue, self.run_id = target, queue, run_id
        self.reply_to = f"{queue}.replies"
        base = client_config(target, timeout=10.0)
        self._base = base
        self._producer = Producer({**base, "linger.ms": 0, "enable.idempotence": False})
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.send_errors = 0
        self._failure: ProbeError | None = None

    async def start(self, on_reply: ReplyHandler) -> None:
        loop = asyncio.get_running_loop()
        self._consumer = await loop.run_in_executor(None, self._prepare)

        def deliver(batch: list[bytes], now: int) -> None:
            for body in batch:
                on_reply(body, now)

        def read() -> None:
            try:
                consume()
            except (KafkaException, RuntimeError) as exc:
                self._failure = ProbeError(f"Kafka: the reply reader on {self.reply_to!r} stopped: "
                                           f"{type(exc).__name__}")

        def consume() -> None:
            assert self._consumer is not None
            while not self._stop.is_set():
                msgs = self._consumer.consume(2000, 0.05)
                if not msgs:
                    continue
                now = time.perf_counter_ns()
                bodies: list[bytes] = [v for m in msgs if not m.error() and (v := m.value()) is not None]
                if bodies:
                    loop.call_soon_threadsafe(deliver, bodies, now)

        def poll() -> None:
            while not self._stop.is_set():
                self._producer.poll(0.05)

        for fn, name in ((read, "qdeck-kafka-replies"), (poll, "qdeck-kafka-producer")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _prepare(self) -> Consumer:
        ensure_topics(AdminClient(self._base), self.target, (self.queue, self.reply_to))
        consumer = Consumer({**self._base, "group.id": f"qdeck-loadgen-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "receive.message.max.bytes": 200_000_000,
                             "fetch.wait.max.ms": 10})
        partitions = self._wait_for_leaders(consumer)
        parts = []
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(self.reply_to, p), timeout=10)
            parts.append(TopicPartition(self.reply_to, p, high))
        consumer.assign(parts)
        # Start fetching now: the first fetch resolves leaders and offsets, which on a just-created topic took
        # seconds and showed up as the first replies' transit time. Nothing has been sent yet, so whatever this
        # returns belongs to another run.
        consumer.consume(100, 0.3)
        return consumer

    def _wait_for_leaders(self, consumer: Consumer, timeout: float = 15.0) -> list[int]:
        """The reply topic's partitions once each has a leader (a topic just created may not yet)."""
        deadline = time.monotonic() + timeout
        while True:
            topic = consumer.list_topics(self.reply_to, timeout=10).topics.get(self.reply_to)
            parts = topic.partitions if topic is not None and topic.error is None else {}
            if parts and all(p.leader >= 0 for p in parts.values()):
                return sorted(parts)
            if time.monotonic() > deadline:
                raise ProbeError(f"Kafka: topic {self.reply_to!r} has no leader after {timeout:g} s")
            time.sleep(0.1)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.send_errors += 1

    async def send(self, bodies: list[bytes]) -> None:
        produce = self._producer.produce
        try:
            for body in bodies:
                try:
                    produce(self.queue, body, on_delivery=self._on_delivery)
                except BufferError:
                    self._producer.poll(0.01)
                    produce(self.queue, body, on_delivery=self._on_delivery)
        except KafkaException as exc:
            raise ProbeError(self._produce_error(exc, max(map(len, bodies)))) from None

    def _produce_error(self, exc: KafkaException, size: int) -> str:
        err: Any = exc.args[0] if exc.args else None
        name = str(err.name()) if err is not None and hasattr(err, "name") else type(exc).__name__
        where = f"Kafka at {self.target.host}:{self.target.port}"
        if name in ("MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE"):
            return (f"{where}: a {size:,}-byte request is larger than the producer or broker accepts "
                    "(message.max.bytes): use a smaller --payload-size")
        return f"{where}: cannot publish to {self.queue!r}: {name}"

    def failure(self) -> ProbeError | None:
        return self._failure

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._producer.flush, 10)
        self._stop.set()
        for t in self._threads:
            await loop.run_in_executor(None, t.join, 5)
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                await loop.run_in_executor(None, self._consumer.close)
