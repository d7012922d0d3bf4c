"""``qdeck worker``: serve a model behind a broker queue with dynamic batching (see loadgen/worker/)."""

from __future__ import annotations

import enum

import typer

from console.runner import broker_option, cli_errors, fail, finite_at_most
from loadgen import aio
from loadgen.worker.source import CLAIM_IDLE_S
from probes import resolve_broker


class Device(enum.StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class MetricsFormat(enum.StrEnum):
    human = "human"
    json = "json"


@cli_errors
def worker(
    broker: str | None = broker_option(),
    queue: str = typer.Option(..., "--queue", "-q", help="Request queue (RabbitMQ queue, Redis stream, Kafka topic)."),
    model: str = typer.Option("echo", "--model", "-m",
                              help="echo | synthetic:base_ms=20,per_item_ms=0.5,jitter=exp,jitter_ms=2 | "
                                   "llm-synthetic[:step_ms=10,per_seq_ms=0.1,prefill_ms=0.01,kv_tokens=1048576,"
                                   "max_seqs=256,chunk=1,stall_ms=…,stall_after_s=…] (streams tokens, continuous "
                                   "batching) | minilm | pkg.module:function (a list of inputs to a list of "
                                   "outputs)."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Largest batch handed to the model."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, callback=finite_at_most(60_000),
                                      help="Longest wait for a batch to fill once its first request is in."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Batches run at the same time."),
    device: Device = typer.Option(Device.auto, "--device", help="auto picks CUDA when torch sees a GPU."),
    max_attempts: int = typer.Option(2, "--max-attempts", min=1,
                                     help="Model attempts per request before it is answered with an error and "
                                          "dead-lettered (attempts after the first run the request alone)."),
    group: str | None = typer.Option(None, "--group",
                                     help="Consumer group; default qdeck-workers on Redis, qdeck-workers.<topic> on "
                                          "Kafka (one group per topic)."),
    dead_letter: str | None = typer.Option(None, "--dead-letter",
                                           help="Dead-letter destination; default <queue>.dlq (<queue>:dlq on Redis)."),
    claim_idle_s: float = typer.Option(CLAIM_IDLE_S, "--claim-idle", min=0.01, callback=finite_at_most(7 * 86400),
                                       help="Redis: claim entries another consumer left pending this many seconds "
                                            "(keep it below the load generator's --timeout)."),
    partitions: int = typer.Option(1, "--partitions", min=1, max=100_000,
                                   help="Kafka: partitions of the topics the worker creates (request, dead letter)."),
    replication_factor: int = typer.Option(1, "--replication-factor", min=1, max=1000,
                                           help="Kafka: replication factor of the topics the worker creates."),
    metrics_interval: float = typer.Option(10.0, "--metrics-interval", min=0.1, callback=finite_at_most(86400),
                                           help="Seconds between metric lines."),
    metrics_format: MetricsFormat = typer.Option(MetricsFormat.human, "--metrics-format",
                                                 help="Metric lines on stderr as text or JSON lines."),
    worker_id: str = typer.Option("", "--worker-id", help="Name in replies and metrics; default host-pid."),
    gpu_interval: float = typer.Option(1.0, "--gpu-interval", min=0, callback=finite_at_most(3600),
                                       help="Seconds between GPU readings (NVML, through nvidia-ml-py): per-GPU "
                                            "utilisation, memory, power and SM clock in the metric lines and in "
                                            "every reply; 0 turns GPU telemetry off."),
    nvml_module: str = typer.Option("pynvml", "--nvml-module", hidden=True,
                                    help="For tests: import this module (pkg.mod or pkg.mod:attr) as NVML."),
) -> None:
    """Consume inference requests, batch them, run the model and reply with per-stage timestamps.

    Acks (RabbitMQ), XACKs (Redis) and offset commits (Kafka) happen only once each request's reply is
    published or its dead letter confirmed.
    SIGTERM finishes the batches in hand, acknowledges them and exits.
    """
    from loadgen.errors import ModelError
    from loadgen.worker.core import WorkerConfig
    from loadgen.worker.runner import WorkerOptions, serve

    for flag, value in (("--queue", queue), ("--group", group), ("--dead-letter", dead_letter)):
        if value is not None and not value.strip():
            raise fail(f"{flag}: the name is empty")
    target = resolve_broker(broker)
    try:
        config = WorkerConfig(max_batch=max_batch, max_wait_s=max_wait_ms / 1000.0, concurrency=concurrency,
                              max_attempts=max_attempts, metrics_interval_s=metrics_interval,
                              gpu_interval_s=gpu_interval, nvml_module=nvml_module)
        opts = WorkerOptions(queue=queue, model=model, device=device.value, config=config, group=group,
                             dead_letter=dead_letter, claim_idle_s=claim_idle_s,
                             metrics_format=metrics_format.value, worker_id=worker_id, partitions=partitions,
                             replication_factor=replication_factor)
        aio.run(serve(target, opts))
    except ModelError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        raise fail(str(exc)) from None
