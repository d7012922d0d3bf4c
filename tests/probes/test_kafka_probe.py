"""The Kafka probe against the Kafka-protocol test broker (only behaviour real Kafka also has is assumed)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from probes import open_probe, parse_broker_url

pytestmark = pytest.mark.kafka


def _bootstrap(url: str) -> str:
    return url.removeprefix("kafka://")


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {(tp.topic, tp.partition): tp.offset for tp in fut.result(10).topic_partitions}


def _setup(url: str) -> tuple[str, AdminClient, dict[int, int]]:
    bs = _bootstrap(url)
    topic = f"qdeck-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bs})
    for fut in admin.create_topics([NewTopic(topic, 3, 1), NewTopic(f"{topic}.dlq", 1, 1)]).values():
        fut.result(15)
    producer = Producer({"bootstrap.servers": bs})
    per_partition = {0: 0, 1: 0, 2: 0}
    for i in range(1000):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 3)
        per_partition[i % 3] += 1
    producer.produce(f"{topic}.dlq", value=b"poison", headers={"reason": "decode error", "source": topic,
                                                                 "attempts": "2"})
    assert producer.flush(15) == 0
    return topic, admin, per_partition


def _consume_and_commit(url: str, topic: str, group: str, n: int) -> dict[int, int]:
    """Process exactly ``n`` records in ``group`` and commit just past each; return next offset per partition."""
    consumer = Consumer({"bootstrap.servers": _bootstrap(url), "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "receive.message.max.bytes": 200_000_000})
    consumer.subscribe([topic])
    nxt: dict[int, int] = {}
    deadline = time.monotonic() + 30
    seen = 0
    while seen < n and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        seen += 1
        nxt[msg.partition()] = msg.offset() + 1
    assert seen == n
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()], asynchronous=False)
    consumer.close()
    return nxt


async def test_lag_total_per_partition_and_uncommitted_group(kafka_url: str) -> None:
    topic, _admin, produced = _setup(kafka_url)
    nxt = _consume_and_commit(kafka_url, topic, f"{topic}-g600", 600)
    # A member that joined but never committed: its lag is the whole backlog.
    idle = Consumer({"bootstrap.servers": _bootstrap(kafka_url), "group.id": f"{topic}-idle",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    idle.subscribe([topic])
    deadline = time.monotonic() + 30
    while not idle.assignment() and time.monotonic() < deadline:
        idle.poll(0.2)
    assert idle.assignment(), "the idle consumer got no assignment"
    probe = open_probe(parse_broker_url(kafka_url))
    try:
        snap = await probe.snapshot()
        row = snap.queue(topic)
        assert row is not None and (row.kind, row.partitions, row.depth) == ("topic", 3, 1000)
        assert row.config.get("cleanup.policy") == "delete" and "retention.ms" in row.config
        g600 = next(g for g in snap.groups if g.group == f"{topic}-g600")
        assert g600.lag == 400 and g600.source == topic
        for p in g600.partitions:
            assert p.high == produced[p.partition]
            assert p.lag == produced[p.partition] - nxt.get(p.partition, 0)
            assert p.committed == nxt.get(p.partition)
        never = next(g for g in snap.groups if g.group == f"{topic}-idle")
        assert never.lag == 1000 and all(p.committed is None for p in never.partitions)
        assert never.members == 1
        dlq = snap.queue(f"{topic}.dlq")
        assert dlq is not None and dlq.is_dead_letter and dlq.depth == 1
    finally:
        idle.close()
        await probe.aclose()


async def test_peek_leaves_committed_offsets_and_groups_unchanged(kafka_url: str) -> None:
    topic, admin, _ = _setup(kafka_url)
    group = f"{topic}-g"
    _consume_and_commit(kafka_url, topic, group, 100)
    before = _committed(admin, group)
    groups_before = {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    probe = open_probe(parse_broker_url(kafka_url))
    try:
        result = await probe.peek(topic, 5)
        assert len(result.messages) == 5
        assert all(m.partition == 0 for m in result.messages)
        assert [m.offset for m in result.messages] == [0, 1, 2, 3, 4]
        assert result.messages[0].key == b"k0" and result.messages[0].body == b"v0"
        tail = await probe.peek(topic, 2, partition=2, offset=-2)  # type: ignore[call-arg]
        assert [m.offset for m in tail.messages] == [331, 332]
        dead = await probe.peek(f"{topic}.dlq", 10)
        m: Any = dead.messages[0]
        assert (m.death_reason, m.original_queue, m.death_count) == ("decode error", topic, 2)
    finally:
        await probe.aclose()
    assert _committed(admin, group) == before
    groups_after = {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    # Tests on the other xdist worker make their own groups (all named qdeck-test-…) while this one runs;
    # any other new group, and any qdeck-peek group, would be the probe's.
    assert {g for g in groups_after - groups_before if not g.startswith("qdeck-test-")} == set()
    assert not any(g.startswith("qdeck-peek") for g in groups_after - groups_before)
