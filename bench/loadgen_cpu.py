"""CPU per request of the broker, the worker and the load generator at fixed open-loop rates, by coalescing window.

    .venv/bin/python -m bench.loadgen_cpu [--rates 2000,10000,18000] [--windows 0.2ms,0.5ms,1ms] [--rounds 2]
                                          [--seconds 5] [--rabbitmq URL]

An echo worker (``--max-batch 64 --max-wait-ms 0``, as in ``bench.loadgen_ceiling``) answers a constant-rate run of
qdeck's engine; for each rate and window, alternated over ``--rounds`` so that drift falls on every window alike,
it prints the CPU time (user + system) each process spent per request, with schedule-lag and end-to-end p99. The
broker must run on this machine (its CPU is read from its process: RabbitMQ's ``beam.smp``). The reference is the
same run at the other windows: the figures compare windows, not machines.

Target (README, "How precise the sending is": a wider window saves CPU, and the default keeps the generator
precise): at each rate, the total CPU per request at every wider window is at most 1.1 × that at the narrowest
window measured (medians over the rounds; 10 % is this machine's run-to-run spread), and at the default window
(``COALESCE_S``, 1 ms, when measured) schedule-lag p99 stays under 2 ms. Exits 1 when any is missed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import uuid

import psutil

from bench._targets import Targets
from bench._workers import worker
from bench.loadgen_ceiling import p99_ms, run_constant
from console.demo import remove_queues
from loadgen.run.spec import COALESCE_S
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
            procs: dict[str, psutil.Process]) -> tuple[str, float, float]:
    """One run: its printed line, the total µs of CPU per request and the schedule-lag p99 (ms)."""
    before = {name: _cpu(p) for name, p in procs.items()}
    result = run_constant(url, queue, rate, seconds, coalesce_s=window_s)
    n = result.sent + result.warmup_sent
    per = {name: (_cpu(p) - before[name]) * 1e6 / n for name, p in procs.items()}
    rec = result.recorder
    lag, e2e = p99_ms(rec.total["schedule_lag"]), p99_ms(rec.total["end_to_end"])
    sizes = rec.batch_sizes
    batch = sum(k * v for k, v in sizes.items()) / max(sum(sizes.values()), 1)
    cells = "  ".join(f"{name} {v:6.1f}" for name, v in per.items())
    total = sum(per.values())
    line = (f"{rate:8,.0f}/s  window {window_s * 1000:4.1f} ms  µs/request: {cells}  total {total:6.1f}"
            f"  | schedule-lag p99 {lag:.2f} ms, end-to-end p99 {e2e:.1f} ms, mean worker batch {batch:.1f}")
    return line, total, lag


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
    totals: dict[tuple[float, float], list[float]] = {}
    lags: dict[tuple[float, float], list[float]] = {}
    try:
        with worker(url, queue, "--model", "echo", "--max-batch", "64", "--max-wait-ms", "0") as proc:
            procs["worker"] = psutil.Process(proc.pid)
            procs["qdeck"] = psutil.Process()
            for rate in rates:
                for _ in range(args.rounds):
                    for window in windows:
                        line, total, lag = measure(url, queue, rate, window, args.seconds, procs)
                        totals.setdefault((rate, window), []).append(total)
                        lags.setdefault((rate, window), []).append(lag)
                        print(line, flush=True)
    finally:
        remove_queues(parse_broker_url(url), [queue, f"{queue}.dlq"])
    targets = Targets("bench.loadgen_cpu")
    narrow = min(windows)
    default = next((w for w in windows if abs(w - COALESCE_S) < 1e-9), None)
    for rate in rates:
        base = statistics.median(totals[(rate, narrow)])
        for window in sorted(set(windows) - {narrow}):
            targets.at_most(f"{rate:,.0f}/s: total CPU per request, window {window * 1000:g} ms / "
                            f"{narrow * 1000:g} ms", statistics.median(totals[(rate, window)]) / base, 1.1)
        if default is not None:
            targets.at_most(f"{rate:,.0f}/s: schedule-lag p99 (ms) at the default window {default * 1000:g} ms",
                            statistics.median(lags[(rate, default)]), 2.0)
    targets.done()


if __name__ == "__main__":
    main()
