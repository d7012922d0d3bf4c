"""Request/reply round trips of large messages: RabbitMQ against Redis at 64 KiB, 1 MiB and 10 MiB.

    .venv/bin/python -m bench.large_messages [--brokers redis,rabbitmq] [--sizes 65536,1048576,10485760]
                                              [--rate 2] [--seconds 5] [--redis URL] [--rabbitmq URL]

For each broker an echo worker (``qdeck worker --model echo --max-wait-ms 0``: no wait to fill a batch) answers
requests; qdeck's load generator sends a few requests per payload size at a low constant rate (2/s for 5 s after a
1 s warm-up), and the echo carries the payload back: it goes through the broker both ways. Prints end-to-end p50
and max per size and broker (from the intended send, as every qdeck figure), then the RabbitMQ/Redis ratio at each
size. Target: RabbitMQ within 3× of Redis at 10 MiB (max end-to-end; p50 printed too). Exits 1 when it is missed.

Large frames are within every default here: RabbitMQ 3.10's ``max_message_size`` is 128 MiB, Redis'
``proto-max-bulk-len`` 512 MB. Kafka is left out: a producer's ``message.max.bytes`` is 1 MB by default, and the
Kafka-protocol test broker's fetch ignores size limits (see DESIGN.md).
Without URLs it uses an embedded Redis and RabbitMQ at amqp://guest:guest@127.0.0.1:5672/.
"""

from __future__ import annotations

import argparse
import uuid

from bench._targets import Targets
from bench._workers import redis_url, worker
from console.demo import remove_queues
from loadgen import aio
from loadgen.run.engine import Engine, RunSpec
from loadgen.run.schedules import Constant
from loadgen.transports import open_transport
from probes.urls import parse_broker_url

SIZES = (64 * 1024, 1024 * 1024, 10 * 1024 * 1024)
RATIO_TARGET = 3.0  # RabbitMQ's max end-to-end at the largest size, against Redis'


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def round_trips(url: str, queue: str, size: int, rate: float, seconds: float) -> tuple[float, float, str]:
    """One constant-rate run with ``size``-character payloads: (end-to-end p50, max in ms, a line of counts)."""
    run = RunSpec(queue=queue, schedule=Constant(rate), duration_s=seconds, warmup_s=1.0, timeout_s=120.0,
                  payload_size=size)
    result = aio.run(Engine(open_transport(parse_broker_url(url), queue, run.run_id), run).run())
    rec = result.recorder
    hist = rec.total["end_to_end"]
    if not hist.get_total_count():
        return float("nan"), float("nan"), f"no replies (sent {rec.sent}, timeouts {rec.timeouts})"
    p50, top = hist.get_value_at_percentile(50) / 1000, hist.get_max_value() / 1000
    return p50, top, f"replied {rec.replied} of {rec.sent}, timeouts {rec.timeouts}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="redis,rabbitmq")
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="payload sizes, characters")
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per size")
    ap.add_argument("--redis", help="redis:// URL (default: an embedded Redis)")
    ap.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    args = ap.parse_args()
    kinds = args.brokers.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    targets = Targets("bench.large_messages")
    figures: dict[tuple[str, int], tuple[float, float]] = {}
    with redis_url(args.redis if "redis" in kinds else "redis://unused") as rurl:
        urls = {"redis": rurl, "rabbitmq": args.rabbitmq}
        for kind in kinds:
            url = urls[kind]
            queue = f"qdeck-bench-large-{uuid.uuid4().hex[:6]}"
            print(f"{kind}: echo worker on {queue}, {args.rate:g} requests/s for {args.seconds:g} s per size",
                  flush=True)
            with worker(url, queue, "--model", "echo", "--max-wait-ms", "0"):
                for size in sizes:
                    p50, top, counts = round_trips(url, queue, size, args.rate, args.seconds)
                    figures[kind, size] = (p50, top)
                    print(f"  {_size(size):>7}: end-to-end p50 {p50:9.1f} ms, max {top:9.1f} ms ({counts})",
                          flush=True)
            remove_queues(parse_broker_url(url), [queue, f"{queue}:dlq" if kind == "redis" else f"{queue}.dlq"])
    if "redis" in kinds and "rabbitmq" in kinds:
        print("\nRabbitMQ / Redis, end-to-end:")
        for size in sizes:
            (rp50, rmax), (bp50, bmax) = figures["redis", size], figures["rabbitmq", size]
            print(f"  {_size(size):>7}: p50 {bp50 / rp50:6.2f}×, max {bmax / rmax:6.2f}×")
        largest = max(sizes)
        ratio = figures["rabbitmq", largest][1] / figures["redis", largest][1]
        targets.at_most(f"RabbitMQ / Redis max end-to-end at {_size(largest)}", ratio, RATIO_TARGET)
    targets.done()


if __name__ == "__main__":
    main()
