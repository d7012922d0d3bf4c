"""pika vs aio-pika on qdeck's RabbitMQ request/reply path: which one the load generator's transport uses.

    .venv/bin/python -m bench.rabbitmq_clients [--broker amqp://guest:guest@127.0.0.1:5672/] [--seconds 5]

Both clients do the same thing against the same echo worker (``qdeck worker --model echo``): publish encoded
requests to the queue through the default exchange and consume replies from an exclusive queue with auto-ack.
Two measurements, each client in turn, in one run:
  flood  — 10,000 requests published at once; replies/s until the last reply.
  paced  — open loop at 1,000 req/s for --seconds; round-trip p50/p99 and the client's CPU time per 1,000 requests
           (on a 2-core machine the client's CPU is taken from the worker and the broker).
pika runs on its asyncio adapter (loadgen/transports/rabbitmq.py, qdeck's transport); aio-pika is the idiomatic
``connect_robust`` + ``queue.consume`` client.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable

from bench._workers import worker
from console.demo import remove_queues
from loadgen.envelope import Request, encode_request
from loadgen.transports.rabbitmq import RabbitMQTransport
from probes.urls import parse_broker_url

FLOOD = 10_000


class AioPikaClient:
    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.reply_to = ""

    async def start(self, on_reply: Callable[[bytes, int], None]) -> None:
        import aio_pika

        self.conn = await aio_pika.connect_robust(self.url)
        self.channel = await self.conn.channel()
        reply_queue = await self.channel.declare_queue("", exclusive=True, auto_delete=True)
        self.reply_to = reply_queue.name

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            on_reply(message.body, time.time_ns())

        await reply_queue.consume(handle, no_ack=True)

    async def send(self, bodies: list[bytes]) -> None:
        import aio_pika

        exchange = self.channel.default_exchange
        for body in bodies:
            await exchange.publish(aio_pika.Message(body), routing_key=self.queue)

    async def aclose(self) -> None:
        await self.conn.close()


async def measure(client: object, seconds: float) -> tuple[float, float, float, float]:
    sent_at: dict[int, int] = {}
    rtts: list[float] = []
    done = asyncio.Event()
    expected = [0]
    run = uuid.uuid4().hex[:8]

    def on_reply(body: bytes, now: int) -> None:
        import json

        seq = json.loads(body)["seq"]
        t = sent_at.pop(seq, None)
        if t is not None:
            rtts.append((now - t) / 1e6)
        if not sent_at and len(rtts) >= expected[0]:
            done.set()

    await client.start(on_reply)  # type: ignore[attr-defined]
    reply_to = client.reply_to  # type: ignore[attr-defined]

    def body(seq: int) -> bytes:
        now = time.time_ns()
        sent_at[seq] = now
        return encode_request(Request(run, seq, now, now, reply_to, "bench", "x" * 64))

    # flood
    expected[0] = FLOOD
    t0 = time.perf_counter()
    for i in range(0, FLOOD, 100):
        await client.send([body(s) for s in range(i, i + 100)])  # type: ignore[attr-defined]
    await asyncio.wait_for(done.wait(), 120)
    flood_rate = FLOOD / (time.perf_counter() - t0)
    # paced, 1,000/s
    rtts.clear()
    done.clear()
    n = int(seconds * 1000)
    expected[0] = n
    cpu0, start = time.process_time(), time.perf_counter()
    for i in range(n):
        due = start + i / 1000
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.send([body(FLOOD + i)])  # type: ignore[attr-defined]
    await asyncio.wait_for(done.wait(), 60)
    cpu = (time.process_time() - cpu0) / n * 1000
    q = statistics.quantiles(rtts, n=100)
    await client.aclose()  # type: ignore[attr-defined]
    return flood_rate, q[49], q[98], cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    target = parse_broker_url(args.broker)
    queue = f"qdeck-bench-clients-{uuid.uuid4().hex[:6]}"
    rows = {}
    with worker(args.broker, queue, "--model", "echo", "--max-batch", "64", "--max-wait-ms", "0"):
        for name, factory in (("pika (asyncio adapter)", lambda: RabbitMQTransport(target, queue, "bench")),
                              ("aio-pika", lambda: AioPikaClient(args.broker, queue))):
            rows[name] = asyncio.run(measure(factory(), args.seconds))
            flood, p50, p99, cpu = rows[name]
            print(f"{name:<24} flood {flood:8,.0f} replies/s | paced 1,000/s: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                  f"client CPU {cpu * 1000:6.1f} ms per 1,000 requests", flush=True)
    remove_queues(target, [queue, f"{queue}.dlq"])
    best = max(rows, key=lambda k: rows[k][0])
    print(f"faster on the flood: {best}; ratio {rows[best][0] / min(r[0] for r in rows.values()):.2f}x")


if __name__ == "__main__":
    main()
