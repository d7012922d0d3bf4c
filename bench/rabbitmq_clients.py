"""pika vs aio-pika on qdeck's RabbitMQ request/reply path: which one the load generator's transport uses.

    .venv/bin/python -m bench.rabbitmq_clients [--broker amqp://guest:guest@127.0.0.1:5672/] [--seconds 5]

Both clients do the same thing against the same echo worker (``qdeck worker --model echo``): publish encoded
requests to the queue through the default exchange, without publisher confirms and not mandatory, and consume
replies from an exclusive queue with auto-ack. Two measurements, each client in turn, in one run:
  flood  — 10,000 requests published at once; replies/s until the last reply.
  paced  — open loop at 1,000 req/s for --seconds; round-trip p50/p99 and the client's CPU time per 1,000 requests
           (on a 2-core machine the client's CPU is taken from the worker and the broker).
pika runs on its asyncio adapter (loadgen/transports/rabbitmq.py, qdeck's transport); aio-pika as fast as it goes
on this path: a plain connection (``connect``, no reconnect bookkeeping), a channel with
``publisher_confirms=False`` (its default waits for a confirm per message; pika's ``basic_publish`` does not),
``mandatory=False`` (as pika's), each publish awaited in turn (aiormq holds a channel lock until a publish is
written, so concurrent publishes only add tasks), and a coroutine consumer (aio-pika runs a plain callback through
a wrapper with a warning; its queue iterator adds an ``asyncio.Queue`` hop per message). Both on the same event
loop (the standard one).

Target (the claim behind the transport's choice, README "Transports" and bench/RESULTS.md): pika at least as fast
as aio-pika on the flood (pika/aio-pika ≥ 1.0) and no more client CPU per 1,000 paced requests (aio-pika/pika ≥
1.0). Exits 1 when either is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Callable

from bench._targets import Targets
from bench._workers import worker
from console.demo import remove_queues
from loadgen.envelope import Request, encode_request
from loadgen.transports.rabbitmq import RabbitMQTransport
from probes.urls import parse_broker_url

FLOOD = 10_000
PIKA, AIO_PIKA = "pika (asyncio adapter)", "aio-pika (no confirms)"


class AioPikaClient:
    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.reply_to = ""

    async def start(self, on_reply: Callable[[bytes, int], None]) -> None:
        import aio_pika

        self.conn = await aio_pika.connect(self.url)
        self.channel = await self.conn.channel(publisher_confirms=False)
        reply_queue = await self.channel.declare_queue("", exclusive=True, auto_delete=True)
        self.reply_to = reply_queue.name
        self.exchange = self.channel.default_exchange

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            on_reply(message.body, time.perf_counter_ns())

        await reply_queue.consume(handle, no_ack=True)

    async def send(self, bodies: list[bytes]) -> None:
        from aio_pika import Message

        publish, queue = self.exchange.publish, self.queue
        for body in bodies:
            await publish(Message(body), routing_key=queue, mandatory=False)

    async def aclose(self) -> None:
        await self.conn.close()


async def measure(client: object, seconds: float) -> tuple[float, float, float, float]:
    sent_at: dict[int, int] = {}
    rtts: list[float] = []
    done = asyncio.Event()
    expected = [0]
    run = uuid.uuid4().hex[:8]

    def on_reply(body: bytes, now: int) -> None:
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
        sent_at[seq] = time.perf_counter_ns()  # replies are stamped on this clock (loadgen.transports.ReplyHandler)
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
        for name, factory in ((PIKA, lambda: RabbitMQTransport(target, queue, "bench")),
                              (AIO_PIKA, lambda: AioPikaClient(args.broker, queue))):
            rows[name] = asyncio.run(measure(factory(), args.seconds))
            flood, p50, p99, cpu = rows[name]
            print(f"{name:<24} flood {flood:8,.0f} replies/s | paced 1,000/s: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                  f"client CPU {cpu * 1000:6.1f} ms per 1,000 requests", flush=True)
    remove_queues(target, [queue, f"{queue}.dlq"])
    pika_row, aio_row = rows[PIKA], rows[AIO_PIKA]
    targets = Targets("bench.rabbitmq_clients")
    targets.at_least("flood replies/s, pika / aio-pika", pika_row[0] / aio_row[0], 1.0)
    targets.at_least("client CPU per 1,000 paced requests, aio-pika / pika", aio_row[3] / pika_row[3], 1.0)
    targets.done()


if __name__ == "__main__":
    main()
