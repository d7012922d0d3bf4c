"""RabbitMQ dead-letter redrive: qdeck's store through the engine vs a bare pika loop, same run, same data.

    .venv/bin/python -m bench.dlq_rabbitmq [--messages 10000] [--rounds 3] [--batch 500] [--queue-type classic]
                                           [--broker amqp://guest:guest@127.0.0.1:5672/]

Each round fills a uniquely named dead-letter queue with MESSAGES dead letters of ~200 bytes made by the broker
itself (persistent messages with a message_id, a content type and an application header, published to the origin
queue with ``expiration: 0``, so RabbitMQ dead-letters them at once with x-death and x-first-death-* headers), then
redrives them all back to the origin queue two ways, each from a fresh fill:

- bare: pika's asyncio adapter as directly as it goes: one consumer (prefetch 1,000, manual acks) on the DLQ, each
  delivery published as it comes (body and properties as pika decoded them, mandatory) to the queue named by its
  ``x-first-death-queue`` on a second channel in confirm mode, and each broker confirm (usually ``multiple``) turned
  into one multiple ack of the deliveries it covers: the "publish confirmed, then ack" loop with nothing else;
- qdeck: ``run_action(RabbitMQStore, redrive)`` with a journal (fsynced per step, as the CLI runs it): each message
  read into an exact Record (every property and header), provenance parsed, the loop guard, qdeck's headers set,
  confirms per batch, acks after them (``--force``: the origin has no consumer in the bench).

Prints msg/s per round, the medians and qdeck/bare, and the CPU per message of this process and, when the broker
runs on this machine, of the broker (``beam.smp``): on a 2-core machine both share the cores. Targets: qdeck >=
5,000 msg/s and qdeck / bare >= 0.5; exits 1 when one is missed. Every queue it makes is named
``qdeck-bench-dlq-<random>...`` in the broker URL's vhost and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from bench._targets import Targets
from probes.dlq.engine import Action, run_action
from probes.dlq.journal import Journal
from probes.dlq.rabbitmq_store import RabbitMQStore
from probes.dlq.selection import Selection
from probes.rabbitmq.amqp_link import connection_parameters
from probes.urls import BrokerTarget, parse_broker_url

PROMPT = "summarise the incident report and list the services it names, " * 4


def fill(target: BrokerTarget, origin: str, dlq: str, n: int, qtype: str) -> None:
    """``n`` broker-made dead letters in ``dlq`` whose origin is ``origin`` (both declared, ``origin`` empty)."""
    conn = pika.BlockingConnection(connection_parameters(target))
    ch = conn.channel()
    ch.queue_declare(dlq, durable=True, arguments={"x-queue-type": qtype})
    ch.queue_declare(origin, durable=True, arguments={"x-queue-type": qtype, "x-dead-letter-exchange": "",
                                                      "x-dead-letter-routing-key": dlq})
    ch.queue_purge(origin)
    ch.queue_purge(dlq)
    for i in range(n):
        body = json.dumps({"request": i, "prompt": PROMPT[:180 - len(str(i))]}).encode()  # ~200 bytes of JSON
        ch.basic_publish("", origin, body, pika.BasicProperties(
            delivery_mode=2, message_id=f"req-{i}", content_type="application/json", expiration="0",
            headers={"tenant": "acme"}))
    deadline = time.monotonic() + 120
    while ch.queue_declare(dlq, passive=True).method.message_count < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"the broker did not dead-letter {n} messages into {dlq} in 120 s")
        time.sleep(0.05)
    conn.close()


class FaultsQueues:
    """The same dead letters for ``bench.dlq_faults`` (kill -9 a redrive and resume it): a uniquely named origin
    queue and its DLQ filled by ``fill``, and what arrived at the origin, by request number."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.target = parse_broker_url(url)
        self.origin = f"qdeck-bench-faults-{uuid.uuid4().hex[:8]}"
        self.dlq = f"{self.origin}.dlq"

    def _channel(self) -> tuple[Any, Any]:
        conn = pika.BlockingConnection(connection_parameters(self.target))
        return conn, conn.channel()

    def setup(self, n: int) -> None:
        fill(self.target, self.origin, self.dlq, n, "classic")

    def _ready(self, queue: str) -> int:
        conn, ch = self._channel()
        try:
            return int(ch.queue_declare(queue, passive=True).method.message_count)
        finally:
            conn.close()

    def delivered(self) -> int:
        return self._ready(self.origin)

    def left_in_dlq(self) -> int:
        return self._ready(self.dlq)

    def ids_at_origin(self) -> Counter[str]:
        """Every message at the origin, taken (the bench is over), counted by its request number."""
        ids: Counter[str] = Counter()
        conn, ch = self._channel()
        try:
            ch.basic_qos(prefetch_count=1000)
            for method, _props, body in ch.consume(self.origin, auto_ack=True, inactivity_timeout=1.0):
                if method is None:
                    break
                ids[str(json.loads(body)["request"])] += 1
        finally:
            conn.close()
        return ids

    def cleanup(self) -> None:
        conn, ch = self._channel()
        try:
            for q in (self.origin, self.dlq):
                ch.queue_delete(q)
        finally:
            conn.close()


async def bare(target: BrokerTarget, dlq: str, n: int) -> int:
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[Any] = loop.create_future()
    conn = AsyncioConnection(connection_parameters(target), on_open_callback=opened.set_result,
                             on_open_error_callback=lambda _c, e: opened.set_exception(e), custom_ioloop=loop)
    await opened

    async def call(start: Callable[[Callable[[Any], None]], Any]) -> Any:
        fut: asyncio.Future[Any] = loop.create_future()
        start(lambda value: fut.done() or fut.set_result(value))
        return await fut

    cin = await call(lambda cb: conn.channel(on_open_callback=cb))
    cout = await call(lambda cb: conn.channel(on_open_callback=cb))
    tags: dict[int, int] = {}  # publish sequence number -> the delivery it forwards
    state = {"published": 0, "confirmed": 0, "failed": 0}
    done: asyncio.Future[None] = loop.create_future()

    def on_confirm(frame: Any) -> None:
        method = frame.method
        covered = [s for s in tags if s <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        if isinstance(method, pika.spec.Basic.Ack):
            cin.basic_ack(tags[max(covered)], multiple=True)  # deliveries and publishes go in the same order
        else:
            state["failed"] += len(covered)
        for s in covered:
            del tags[s]
        state["confirmed"] += len(covered)
        if state["confirmed"] >= n and not done.done():
            done.set_result(None)

    def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
        cout.basic_publish("", props.headers["x-first-death-queue"], body, props, mandatory=True)
        state["published"] += 1
        tags[state["published"]] = method.delivery_tag

    await call(lambda cb: cout.confirm_delivery(on_confirm, callback=cb))
    await call(lambda cb: cin.basic_qos(prefetch_count=1000, callback=cb))
    cin.basic_consume(dlq, on_message)
    await done
    closed: asyncio.Future[None] = loop.create_future()
    conn.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
    conn.close()
    await closed
    return state["confirmed"] - state["failed"]


async def qdeck(target: BrokerTarget, dlq: str, batch: int, journal_dir: Path) -> int:
    path = journal_dir / f"{uuid.uuid4().hex}.jsonl"
    journal = Journal(path, lambda doc: json.dumps(doc, ensure_ascii=True), {"action": "redrive"})
    try:
        async with RabbitMQStore(target, dlq) as store:
            report = await run_action(store, Action("redrive", dry_run=False, force=True, batch=batch),
                                      Selection(), journal=journal)
    finally:
        journal.close()
    ledger = report.ledger
    assert ledger.adds_up() and ledger.failed == 0 and ledger.skipped == 0, ledger
    return ledger.moved


def beam_pid() -> int | None:
    """The local broker's process (its CPU is counted), if there is exactly one."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == "beam.smp":
                        found.append(int(pid))
            except OSError:
                continue
    return found[0] if len(found) == 1 else None


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    args = ap.parse_args()
    target = dataclasses.replace(parse_broker_url(args.broker), allow_write=True, name="bench")
    prefix = f"qdeck-bench-dlq-{uuid.uuid4().hex[:8]}"
    origin, dlq = prefix, f"{prefix}.dlq"
    beam = beam_pid()
    rates: dict[str, list[float]] = {"bare": [], "qdeck": []}
    cpu: dict[str, list[tuple[float, float]]] = {"bare": [], "qdeck": []}
    try:
        with tempfile.TemporaryDirectory() as journals:
            for r in range(args.rounds):
                for name in ("bare", "qdeck") if r % 2 == 0 else ("qdeck", "bare"):
                    fill(target, origin, dlq, args.messages, args.queue_type)
                    run = bare(target, dlq, args.messages) if name == "bare" else \
                        qdeck(target, dlq, args.batch, Path(journals))
                    c0, b0, t0 = own_cpu(), cpu_of(beam), time.perf_counter()
                    moved = asyncio.run(run)
                    seconds = time.perf_counter() - t0
                    c1, b1 = own_cpu(), cpu_of(beam)
                    assert moved == args.messages, (name, moved)
                    rates[name].append(moved / seconds)
                    cpu[name].append(((c1 - c0) / moved * 1e6, (b1 - b0) / moved * 1e6))
                print(f"round {r + 1}: bare {rates['bare'][-1]:,.0f} msg/s  qdeck {rates['qdeck'][-1]:,.0f} msg/s"
                      f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        conn = pika.BlockingConnection(connection_parameters(target))
        ch = conn.channel()
        for q in (origin, dlq):
            ch.queue_delete(q)
        conn.close()
    bare_rate, qdeck_rate = statistics.median(rates["bare"]), statistics.median(rates["qdeck"])

    def per_msg(name: str) -> str:
        own = statistics.median(c for c, _b in cpu[name])
        broker = statistics.median(b for _c, b in cpu[name])
        return f"CPU/msg: this process {own:.0f} µs" + (f", broker {broker:.0f} µs" if beam else "")

    print(f"\nredrive of {args.messages:,} broker-made dead letters (~200 B, persistent, {args.queue_type} queues), "
          f"batches of {args.batch} (median of {args.rounds}), {os.cpu_count()} CPUs:")
    print(f"  bare pika consume → confirmed publish → multiple ack : {bare_rate:,.0f} msg/s  ({per_msg('bare')})")
    print(f"  qdeck dlq redrive (store + engine + journal)          : {qdeck_rate:,.0f} msg/s  ({per_msg('qdeck')})")
    targets = Targets("bench.dlq_rabbitmq")
    targets.at_least("qdeck redrive, msg/s", qdeck_rate, 5_000, ",.0f")
    targets.at_least("qdeck / bare pika loop", qdeck_rate / bare_rate, 0.5)
    targets.done()


if __name__ == "__main__":
    main()
