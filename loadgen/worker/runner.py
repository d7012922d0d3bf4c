"""Start a worker: pick the broker's source, load and warm the model, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from dataclasses import dataclass, field

from loadgen.aio import quiet_gc
from loadgen.worker.core import Worker, WorkerConfig
from loadgen.worker.metrics import MetricsReporter
from loadgen.worker.models import Model, load_model
from loadgen.worker.source import CLAIM_IDLE_S, DEFAULT_GROUP, Source
from probes.errors import ConfigError
from probes.urls import BrokerTarget


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    queue: str
    model: str = "echo"
    device: str = "auto"
    config: WorkerConfig = field(default_factory=WorkerConfig)
    group: str | None = None  # None: qdeck-workers (Redis), qdeck-workers.<topic> (Kafka)
    dead_letter: str | None = None
    claim_idle_s: float = CLAIM_IDLE_S
    metrics_format: str = "human"
    worker_id: str = ""
    partitions: int = 1  # Kafka: for the topics the worker creates
    replication_factor: int = 1

    def group_for(self, kind: str) -> str:
        """The consumer group: the one chosen, else Redis's per-stream ``qdeck-workers`` and, on Kafka, one per
        request topic (a group shared by every topic would let one dead worker stall the rebalances of all)."""
        if self.group:
            return self.group
        return f"{DEFAULT_GROUP}.{self.queue}" if kind == "kafka" else DEFAULT_GROUP


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def make_source(target: BrokerTarget, opts: WorkerOptions, worker_id: str,
                metrics: MetricsReporter | None = None) -> Source:
    group = opts.group_for(target.kind)
    if target.kind == "redis":
        from loadgen.worker.redis_source import RedisSource

        return RedisSource(target, opts.queue, group=group, consumer=worker_id, claim_idle_s=opts.claim_idle_s,
                           dead_letter=opts.dead_letter)
    if target.kind == "rabbitmq":
        from loadgen.worker.rabbitmq_source import RabbitMQSource

        prefetch = opts.config.max_batch * (opts.config.concurrency + 1)
        return RabbitMQSource(target, opts.queue, prefetch=prefetch, dead_letter=opts.dead_letter)
    if target.kind == "kafka":
        from loadgen.worker.kafka_source import KafkaSource

        return KafkaSource(target, opts.queue, group=group, dead_letter=opts.dead_letter,
                           partitions=opts.partitions, replication_factor=opts.replication_factor,
                           notify=metrics.note if metrics is not None else None)
    raise ConfigError(f"the worker does not serve {target.kind}:// brokers (use amqp://, redis:// or kafka://)")


async def serve(target: BrokerTarget, opts: WorkerOptions, *, model: Model | None = None,
                stop: asyncio.Event | None = None) -> MetricsReporter:
    """Run until ``stop`` is set (or SIGTERM/SIGINT arrives); returns the reporter with the final counters."""
    worker_id = opts.worker_id or default_worker_id()
    model = model or load_model(opts.model, opts.device)
    metrics = MetricsReporter(worker_id, model.device, opts.model, opts.metrics_format)
    source = make_source(target, opts, worker_id, metrics)
    worker = Worker(source, model, opts.config, worker_id=worker_id, metrics=metrics, model_spec=opts.model)
    metrics.event("warming up", model=opts.model, device=model.device)
    await worker.warmup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await source.start()
        cfg = opts.config
        metrics.event("serving", broker=target.display, queue=opts.queue, max_batch=cfg.max_batch,
                      max_wait_ms=round(cfg.max_wait_s * 1000, 3), concurrency=cfg.concurrency,
                      device=model.device, dead_letters=source.dead_letter_name,
                      **({"group": opts.group_for(target.kind)} if target.kind != "rabbitmq" else {}))
        with quiet_gc():
            await worker.run(stop)
        metrics.event("stopped", **metrics.counters.totals())
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await source.aclose()
    return metrics
