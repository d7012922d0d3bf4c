"""Kafka redrive throughput: qdeck's ``dlq redrive`` (probes.dlq engine + KafkaStore) vs a bare confluent-kafka
loop, same run.

    .venv/bin/python -m bench.dlq_kafka [--messages 10000] [--size 200] [--rounds 3] [--broker kafka://HOST:PORT]

Without ``--broker`` it starts a private noida-db (Kafka protocol) on a free port and stops it at the end; with one,
it works on uniquely named topics there and deletes them afterwards. Each round fills two fresh dead-letter topics
(3 partitions) with ``--messages`` records of ``--size`` bytes carrying the worker's dead-letter headers (``reason``,
``source`` naming the origin topic, ``attempts``, ``failed_at``), then times, alternately:

- the reference: the loop a person would write with confluent-kafka, as directly as it goes — assign the partitions,
  ``consume(500)``, produce each record to the origin (same key, headers and CreateTime; ``acks=all``, idempotent),
  ``flush()`` (every delivery confirmed), commit the consumed offsets synchronously, until the topic is drained;
- qdeck: ``run_action(redrive, --yes --force)`` on the other topic, batch 500 (the CLI's default): origin read
  from the headers, qdeck headers set, the ``qdeck-dlq`` group committed past the confirmed records.

Both are checked afterwards (every record at the origin, the group at the end). Target: qdeck / reference >= 0.5
(the issue's Kafka target). Exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench._targets import Targets
from probes.dlq.engine import Action, run_action
from probes.dlq.kafka_store import GROUP
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.urls import parse_broker_url

PARTITIONS = 3
BATCH = 500


@contextlib.contextmanager
def broker(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from bench._private_brokers import PrivateKafka

    private = PrivateKafka()
    private.start()
    try:
        yield private.url
    finally:
        private.close()


def fill(bootstrap: str, topic: str, origin: str, n: int, size: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20, "log_level": 0})
    now = int(time.time() * 1000)
    for i in range(n):
        body = (f'{{"n": {i}, "pad": "' + "x" * size)[:size - 2] + '"}'
        failed_at = datetime.fromtimestamp(now / 1000 - (n - i) / 1000, UTC).isoformat(timespec="microseconds")
        headers = [("reason", b"inference failed: CUDA out of memory"), ("source", origin.encode()),
                   ("attempts", b"3"), ("failed_at", failed_at.encode())]  # as the worker writes them, each its own
        while True:
            try:
                producer.produce(topic, body.encode(), f"key-{i}".encode(), partition=i % PARTITIONS,
                                 headers=headers, timestamp=now)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def reference(bootstrap: str, topic: str, origin: str, n: int) -> float:
    """consume → produce (acks=all, idempotent) → flush → commit, batch after batch. Seconds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-ref-{topic}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "receive.message.max.bytes": 200_000_000, "log_level": 0})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "log_level": 0})
    failed: list[object] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    t0 = time.perf_counter()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    done, eof = 0, set()
    while len(eof) < PARTITIONS:
        msgs = consumer.consume(BATCH, 0.2)
        got = {}
        for m in msgs:
            if m.error():
                eof.add(m.partition())
                continue
            producer.produce(origin, m.value(), m.key(), headers=m.headers(), timestamp=m.timestamp()[1],
                             on_delivery=delivered)
            got[m.partition()] = m.offset() + 1
        if got:
            assert producer.flush(30) == 0 and not failed
            consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in got.items()], asynchronous=False)
            done += sum(1 for m in msgs if not m.error())
    elapsed = time.perf_counter() - t0
    consumer.close()
    assert done == n, (done, n)
    return elapsed


async def qdeck(url: str, topic: str) -> tuple[float, int]:
    target = dataclasses.replace(parse_broker_url(url), allow_write=True, name="bench")
    t0 = time.perf_counter()
    async with open_store(target, topic) as store:
        report = await run_action(store, Action("redrive", dry_run=False, force=True, batch=BATCH), Selection())
    elapsed = time.perf_counter() - t0
    ledger = report.ledger
    assert ledger.adds_up() and not ledger.failed and not report.unsettled, ledger
    return elapsed, ledger.moved


def origin_count(bootstrap: str, origin: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-count-{uuid.uuid4().hex}", "log_level": 0})
    total = 0
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(origin, p), timeout=10)
        total += high - low
    consumer.close()
    return total


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    found = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default=None, help="a kafka:// URL (default: a private noida-db)")
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ref_rates, qdeck_rates = [], []
    with broker(args.broker) as url:
        bootstrap = url.removeprefix("kafka://").split("?")[0]
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        tag = uuid.uuid4().hex[:8]
        created: list[str] = []
        try:
            for r in range(args.rounds):
                names = {k: f"qdeck-bench-dlq-{tag}-{r}-{k}" for k in ("ref", "ref-origin", "q", "q-origin")}
                for fut in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in names.values()]).values():
                    fut.result(30)
                created += names.values()
                fill(bootstrap, names["ref"], names["ref-origin"], args.messages, args.size)
                fill(bootstrap, names["q"], names["q-origin"], args.messages, args.size)
                ref_s = reference(bootstrap, names["ref"], names["ref-origin"], args.messages)
                q_s, moved = asyncio.run(qdeck(url, names["q"]))
                assert moved == args.messages, moved
                for side in ("ref", "q"):
                    assert origin_count(bootstrap, names[f"{side}-origin"]) == args.messages, side
                assert committed_total(bootstrap, GROUP, names["q"]) == args.messages
                ref_rates.append(args.messages / ref_s)
                qdeck_rates.append(args.messages / q_s)
                print(f"round {r + 1}: reference {ref_rates[-1]:,.0f} msg/s  qdeck {qdeck_rates[-1]:,.0f} msg/s")
        finally:
            if created:
                for fut in admin.delete_topics(created).values():
                    with contextlib.suppress(Exception):
                        fut.result(30)
    ref, q = statistics.median(ref_rates), statistics.median(qdeck_rates)
    print(f"\nredrive of {args.messages:,} records of {args.size} B, {PARTITIONS} partitions "
          f"(median of {args.rounds}):")
    print(f"  reference: consume + produce(acks=all) + flush + commit : {ref:,.0f} msg/s")
    print(f"  qdeck dlq redrive (engine + KafkaStore)                 : {q:,.0f} msg/s")
    targets = Targets("bench.dlq_kafka")
    targets.at_least("redrive throughput, qdeck / reference", q / ref, 0.5)
    targets.done()


if __name__ == "__main__":
    main()
