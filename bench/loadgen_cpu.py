"""CPU per request of the broker, the worker and the load generator at fixed open-loop rates, by coalescing window.

    .venv/bin/python -m bench.loadgen_cpu [--rates 2000,10000,18000] [--windows 0.2ms,0.5ms,1ms] [--rounds 2]
                                          [--seconds 5] [--rabbitmq URL]

An echo worker (``--max-batch 64 --max-wait-ms 0``, as in ``bench.loadgen_ceiling``) answers a constant-rate run of
qdeck's engine; for each rate and window, alternated over ``--rounds`` so that drift falls on every window alike,
it prints the CPU time (user + system) each process spent per request, with schedule-lag and end-to-end p99. The
broker must run on this machine (its CPU is read from its process: RabbitMQ's ``beam.smp``). The reference is the
same run at the other windows: the figures compare windows, not machines.
"""

from __future__ import annotations

import argparse
import subprocess
import uuid

import psutil

from bench._workers import worker
from bench.loadgen_ceiling import p99_ms, run_constant
from console.demo import remove_queues
from loadgen.units import parse_duration
from probes.urls import parse_broker_url


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _broker_process() -> psutil.Process:
    try:
        pid = int(subprocess.check_output(["pgrep", "-o", "-f", "beam.smp"]).split()[0])
    except (subprocess.CalledProcessError, FileNotFoundError, IndexError):
        raise SystemExit("bench.loadgen_cpu: no local RabbitMQ (beam.smp) process to measure") from None
    return psutil.Process(pid)


def measure(url: str, queue: str, rate: float, window_s: float, seconds: float,
            procs: dict[str, psutil.Process]) -> str:
    before = {name: _cpu(p) for name, p in procs.items()}
    result = run_constant(url, queue, rate, seconds, coalesce_s=window_s)
    n = result.sent + result.warmup_sent
    per = {name: (_cpu(p) - before[name]) * 1e6 / n for name, p in procs.items()}
    rec = result.recorder
    lag, e2e = p99_ms(rec.total["schedule_lag"]), p99_ms(rec.total["end_to_end"])
    sizes = rec.batch_sizes
    batch = sum(k * v for k, v in sizes.items()) / max(sum(sizes.values()), 1)
    cells = "  ".join(f"{name} {v:6.1f}" for name, v in per.items())
    return (f"{rate:8,.0f}/s  window {window_s * 1000:4.1f} ms  µs/request: {cells}  total {sum(per.values()):6.1f}"
            f"  | schedule-lag p99 {lag:.2f} ms, end-to-end p99 {e2e:.1f} ms, mean worker batch {batch:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="2000,10000,18000")
    ap.add_argument("--windows", default="0.2ms,0.5ms,1ms")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    windows = [parse_duration(w) for w in args.windows.split(",")]
    url = args.rabbitmq
    queue = f"qdeck-bench-cpu-{uuid.uuid4().hex[:6]}"
    procs = {"broker": _broker_process()}
    print(f"rabbitmq: echo worker on {queue}", flush=True)
    try:
        with worker(url, queue, "--model", "echo", "--max-batch", "64", "--max-wait-ms", "0") as proc:
            procs["worker"] = psutil.Process(proc.pid)
            procs["qdeck"] = psutil.Process()
            for rate in rates:
                for _ in range(args.rounds):
                    for window in windows:
                        print(measure(url, queue, rate, window, args.seconds, procs), flush=True)
    finally:
        remove_queues(parse_broker_url(url), [queue, f"{queue}.dlq"])


if __name__ == "__main__":
    main()
