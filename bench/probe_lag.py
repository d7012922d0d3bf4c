"""Kafka lag snapshot: qdeck's probe vs the same admin calls made bare with confluent-kafka, same run.

    .venv/bin/python -m bench.probe_lag [--topics 300] [--groups 50] [--rounds 3] [--broker kafka://HOST:PORT]

Without --broker it starts the Kafka-protocol test broker (noida-db) on a free port and stops it after.
Creates TOPICS topics × 3 partitions with 10 records each and GROUPS groups that commit on them, then times
a full snapshot (topics, watermarks, configs, groups, offsets, lag) both ways; prints medians and probe/bare.

Target: probe/bare ≤ 1.2. Exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType

from bench._targets import Targets
from probes import open_probe, parse_broker_url
from tests import brokers as harness


def bare_snapshot(admin: AdminClient, timeout: float = 10) -> int:
    """The reference: the same admin requests, blocking, with lag summed by hand."""
    md = admin.list_topics(timeout=timeout)
    tps = [TopicPartition(t, p) for t in md.topics if not t.startswith("__") for p in md.topics[t].partitions]
    earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in tps})
    low = {k: f.result(timeout).offset for k, f in earliest.items()}
    high = {(k.topic, k.partition): f.result(timeout).offset
            for k, f in admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}).items()}
    for f in admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in md.topics
                                     if not t.startswith("__")]).values():
        f.result(timeout)
    ids = [g.group_id for g in admin.list_consumer_groups().result(timeout).valid]
    for f in admin.describe_consumer_groups(ids).values():
        f.result(timeout)
    lag = 0
    futures = {g: admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g] for g in ids}
    for f in futures.values():
        for tp in f.result(timeout).topic_partitions:
            if tp.offset >= 0:
                lag += high[(tp.topic, tp.partition)] - tp.offset
    assert low
    return lag


async def timed_probe_rounds(url: str, rounds: int) -> list[tuple[float, int]]:
    """One probe kept open across polls, as the console and ``--watch`` use it; the first poll warms it up."""
    probe = open_probe(parse_broker_url(url), timeout=30.0)
    out = []
    try:
        await probe.snapshot()
        for _ in range(rounds):
            t = time.perf_counter()
            snap = await probe.snapshot()
            out.append((time.perf_counter() - t, sum(g.lag for g in snap.groups)))
    finally:
        await probe.aclose()
    return out


def populate(bootstrap: str, topics: int, groups: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{i:03d}" for i in range(topics)]
    for f in admin.create_topics([NewTopic(n, 3, 1) for n in names]).values():
        f.result(60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for n in names:
        for i in range(10):
            producer.produce(n, value=b"x", partition=i % 3)
    producer.flush(60)
    for g in range(groups):  # each group commits offset 1 on every partition of 6 topics
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{prefix}-group-{g:02d}"})
        chosen = [names[(g * 6 + k) % topics] for k in range(6)]
        consumer.commit(offsets=[TopicPartition(t, p, 1) for t in chosen for p in range(3)], asynchronous=False)
        consumer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker")
    ap.add_argument("--topics", type=int, default=300)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    started = harness.Brokers()
    try:
        if args.broker:
            url = args.broker
        else:
            harness.ensure_kafka(started)
            if "kafka" not in started.urls:
                raise SystemExit(f"no Kafka-protocol broker: {started.problems.get('kafka')}")
            url = started.urls["kafka"]
        bootstrap = ",".join(f"{h}:{p}" for h, p in parse_broker_url(url).hosts)
        t0 = time.perf_counter()
        populate(bootstrap, args.topics, args.groups)
        print(f"created {args.topics} topics x 3 partitions and {args.groups} groups in "
              f"{time.perf_counter() - t0:.1f} s")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        bare_snapshot(admin)  # warm-up: connections and metadata, as for the probe
        bare_times, probe_times = [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            lag_bare = bare_snapshot(admin)
            bare_times.append(time.perf_counter() - t)
            ((elapsed, lag_probe),) = asyncio.run(timed_probe_rounds(url, 1))
            probe_times.append(elapsed)
            assert lag_bare == lag_probe, (lag_bare, lag_probe)
            print(f"round {r + 1}: bare {bare_times[-1]:.3f} s  probe {probe_times[-1]:.3f} s  "
                  f"(lag counted: {lag_probe:,})")
        bare, probe = statistics.median(bare_times), statistics.median(probe_times)
        print(f"\nlag snapshot, {args.topics} topics x 3 partitions, {args.groups} groups (median of {args.rounds}):")
        print(f"  bare confluent-kafka calls : {bare:.3f} s")
        print(f"  qdeck probe.snapshot()     : {probe:.3f} s  (both sides warm: clients reused across polls)")
    finally:
        harness.down(started.started)
    targets = Targets("bench.probe_lag")
    targets.at_most(f"lag snapshot ({args.topics} topics, {args.groups} groups), probe / bare confluent-kafka",
                    probe / bare, 1.2)
    targets.done()


if __name__ == "__main__":
    main()
