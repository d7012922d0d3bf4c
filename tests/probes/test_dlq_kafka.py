"""Dead-letter actions on Kafka (probes/dlq/kafka_store.py) against the Kafka-protocol test broker, driven through
``run_action`` as the CLI drives them: redrive to the origin read from Spring, Connect and worker dead letters,
move, purge (DeleteRecords), delete --id, export → import byte for byte, the loop guard, a failed destination,
read-only refusal and a resume after a crash between publish and remove. "Removed" = passed by qdeck's group."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from probes.dlq.codec import record_from_json, record_to_json
from probes.dlq.engine import Action, run_action
from probes.dlq.journal import Journal
from probes.dlq.kafka_positions import Positions
from probes.dlq.kafka_store import GROUP, KafkaStore
from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.dlq.writes import ReadOnly
from probes.urls import BrokerTarget, parse_broker_url

pytestmark = pytest.mark.kafka
Headers = list[tuple[str, bytes | None]]
T0 = (int(time.time()) - 3600) * 1000  # CreateTime of the test records, ms (recent: retention goes by it)


def spring(origin: str, partition: int, message: str) -> Headers:
    """What Spring Kafka's DeadLetterPublishingRecoverer adds."""
    return [("kafka_dlt-original-topic", origin.encode()),
            ("kafka_dlt-original-partition", partition.to_bytes(4, "big")),
            ("kafka_dlt-original-offset", (17).to_bytes(8, "big")),
            ("kafka_dlt-exception-fqcn", b"java.lang.IllegalStateException"),
            ("kafka_dlt-exception-message", message.encode())]


def connect(origin: str, partition: int) -> Headers:
    """What Kafka Connect adds with errors.deadletterqueue.context.headers.enable=true."""
    return [("__connect.errors.topic", origin.encode()), ("__connect.errors.partition", str(partition).encode()),
            ("__connect.errors.offset", b"5"),
            ("__connect.errors.exception.class.name", b"org.apache.kafka.connect.errors.DataException"),
            ("__connect.errors.exception.message", b"Converting byte[] to Kafka Connect data failed")]


def worker(origin: str) -> Headers:
    """What qdeck's worker writes (loadgen/worker/source.py DeadLetter.fields)."""
    return [("reason", b"inference failed"), ("source", origin.encode()), ("attempts", b"3"),
            ("failed_at", b"2024-05-01T10:00:00.000+00:00")]


class Kafka:
    """The test's side of the broker: unique topics (deleted afterwards), plain producer and reader."""

    def __init__(self, url: str) -> None:
        self.bootstrap = url.removeprefix("kafka://")
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self.created: list[str] = []
        self.tag = uuid.uuid4().hex[:8]

    def topic(self, name: str, partitions: int = 1) -> str:
        full = f"qdeck-dlqk-{self.tag}-{name}"
        for fut in self.admin.create_topics([NewTopic(full, partitions, 1)]).values():
            fut.result(15)
        self.created.append(full)
        return full

    def produce(self, topic: str, *records: dict[str, Any]) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 1})
        for i, r in enumerate(records):
            producer.produce(topic, r.get("value", f"body-{i}".encode()), r.get("key"),
                             partition=r.get("partition", 0), headers=r.get("headers"),
                             timestamp=r.get("timestamp", T0 + i))
        assert producer.flush(15) == 0

    def read(self, topic: str) -> list[Any]:
        """Every record of ``topic`` (partition, offset order)."""
        md = self.admin.list_topics(timeout=10)
        parts = sorted(md.topics[topic].partitions)
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"qdeck-test-{uuid.uuid4().hex}",
                             "enable.partition.eof": True, "enable.auto.commit": False})
        low = self.watermarks(topic, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        consumer.assign([TopicPartition(topic, p, low[p]) for p in parts])
        out: list[Any] = []
        open_parts, deadline = set(parts), time.monotonic() + 15
        while open_parts and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                open_parts.discard(msg.partition())
                continue
            out.append(msg)
        consumer.close()
        assert not open_parts, "reading the topic timed out"
        return sorted(out, key=lambda m: (m.partition(), m.offset()))

    def watermarks(self, topic: str, spec: Any) -> dict[int, int]:
        parts = sorted(self.admin.list_topics(timeout=10).topics[topic].partitions)
        found = self.admin.list_offsets({TopicPartition(topic, p): spec for p in parts})
        return {tp.partition: f.result(10).offset for tp, f in found.items()}

    def committed(self, topic: str) -> dict[int, int]:
        parts = sorted(self.admin.list_topics(timeout=10).topics[topic].partitions)
        request = [ConsumerGroupTopicPartitions(GROUP, [TopicPartition(topic, p) for p in parts])]
        answer = self.admin.list_consumer_group_offsets(request)[GROUP].result(10)
        return {tp.partition: tp.offset for tp in answer.topic_partitions if tp.offset >= 0}

    def member(self, topic: str) -> Consumer:
        """A live consumer-group member on ``topic`` (the pre-flight's 'somebody consumes it')."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"{topic}-app",
                             "enable.auto.commit": False, "auto.offset.reset": "latest"})
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.1)
        assert consumer.assignment(), "the consumer got no assignment"
        return consumer

    def close(self) -> None:
        if self.created:
            for fut in self.admin.delete_topics(self.created).values():
                with contextlib.suppress(Exception):  # cleanup: a topic that is already gone is fine
                    fut.result(15)


@pytest.fixture
def kafka(kafka_url: str) -> Iterator[Kafka]:
    k = Kafka(kafka_url)
    yield k
    k.close()


def target(url: str, writable: bool = True) -> BrokerTarget:
    return dataclasses.replace(parse_broker_url(url), allow_write=writable, name="test")


def encode(doc: object) -> str:
    return json.dumps(doc, ensure_ascii=True)


def headers_of(msg: Any) -> Headers:
    return list(msg.headers() or [])


async def test_redrive_returns_framework_dead_letters_to_their_origin(kafka: Kafka, kafka_url: str) -> None:
    orders = kafka.topic("orders", 3)
    dlt = kafka.topic("orders.DLT", 1)
    extra: Headers = [("trace", b"a"), ("trace", b"b"), ("empty", None), ("bin", b"\xff\x00")]
    kafka.produce(dlt, {"key": b"k-spring", "headers": spring(orders, 2, "boom") + extra},
                  {"key": b"k-connect", "headers": connect(orders, 1)},
                  {"key": b"k-worker", "headers": worker(orders)},
                  {"key": b"k-unknown", "headers": [("tenant", b"acme")]})
    async with open_store(target(kafka_url), dlt) as store:
        blocked = await run_action(store, Action("redrive", dry_run=False), Selection())
        assert blocked.ledger.skipped == 4 and blocked.ledger.moved == 0
        assert "nobody consumes it" in next(iter(blocked.ledger.skip_reasons))
        assert kafka.committed(dlt) == {}  # nothing passed: nothing was sent
        member = kafka.member(orders)
        try:
            report = await run_action(store, Action("redrive", dry_run=False), Selection())
        finally:
            member.close()
        ledger = report.ledger
        assert (ledger.selected, ledger.moved, ledger.skipped, ledger.failed) == (4, 3, 1, 0) and ledger.adds_up()
        assert report.unsettled == 0
        assert ledger.destinations == {f"{orders}[2]": 1, f"{orders}[1]": 1, orders: 1}
        assert await store.count() == 1  # the unknown one, after every moved record: not passed
    assert kafka.committed(dlt) == {0: 3}
    moved = {m.key(): m for m in kafka.read(orders)}
    assert sorted(moved) == [b"k-connect", b"k-spring", b"k-worker"]
    s = moved[b"k-spring"]
    assert s.partition() == 2 and s.timestamp() == (1, T0) and s.value() == b"body-0"
    assert headers_of(s) == spring(orders, 2, "boom") + extra + [(REDRIVE_ID, b"0:0"), (REDRIVE_COUNT, b"1")]
    assert moved[b"k-connect"].partition() == 1
    assert headers_of(moved[b"k-worker"])[-2:] == [(REDRIVE_ID, b"0:2"), (REDRIVE_COUNT, b"1")]


async def test_move_to_a_named_topic_and_a_missing_one_is_never_created(kafka: Kafka, kafka_url: str) -> None:
    src = kafka.topic("src", 2)
    dst = kafka.topic("dst", 2)
    kafka.produce(src, *({"key": f"k{i}".encode(), "partition": i % 2} for i in range(6)))
    missing = f"qdeck-dlqk-{kafka.tag}-missing"
    async with open_store(target(kafka_url), src) as store:
        refused = await run_action(store, Action("move", to=await store.resolve(missing), dry_run=False),
                                   Selection())
        assert refused.ledger.skipped == 6 and "does not exist" in refused.problems[missing][0]
        report = await run_action(store, Action("move", to=await store.resolve(dst), dry_run=False, force=True),
                                  Selection())
    assert missing not in kafka.admin.list_topics(timeout=10).topics
    assert (report.ledger.moved, report.ledger.failed) == (6, 0) and report.ledger.adds_up()
    assert "nobody consumes it" in report.problems[dst][0]  # forced past it
    assert kafka.committed(src) == {0: 3, 1: 3}
    out = kafka.read(dst)
    assert sorted(m.key() for m in out) == [f"k{i}".encode() for i in range(6)]
    assert all(dict(headers_of(m))[REDRIVE_COUNT] == b"0" for m in out)  # a move does not count as a redrive


async def test_purge_deletes_records_and_delete_by_id_passes_only_what_it_must(kafka: Kafka, kafka_url: str) -> None:
    purged = kafka.topic("purge", 2)
    kafka.produce(purged, *({"partition": i % 2} for i in range(5)))
    async with open_store(target(kafka_url), purged, delete_records=True) as store:
        dry = await run_action(store, Action("purge"), Selection())
        assert dry.ledger.deleted == 5 and kafka.committed(purged) == {}
        report = await run_action(store, Action("purge", dry_run=False), Selection())
        assert report.ledger.deleted == 5 and await store.count() == 0
    assert kafka.watermarks(purged, OffsetSpec.earliest()) == {0: 3, 1: 2}  # type: ignore[no-untyped-call]
    one = kafka.topic("one", 1)
    kafka.produce(one, *({} for _ in range(4)))
    async with open_store(target(kafka_url), one) as store:
        report = await run_action(store, Action("delete", dry_run=False), Selection.parse(ids=["0:2"]))
        assert report.ledger.deleted == 1 and await store.count() == 1
    assert kafka.committed(one) == {0: 3}  # a log cannot skip 0:0 and 0:1 to take 0:2 out; 0:3 is not passed
    assert kafka.watermarks(one, OffsetSpec.earliest()) == {0: 0}  # type: ignore[no-untyped-call]


async def test_export_then_import_round_trips_byte_for_byte(kafka: Kafka, kafka_url: str) -> None:
    src = kafka.topic("exp", 2)
    copy = kafka.topic("imp", 2)
    kafka.produce(src, {"key": b"\x00\xffbin", "value": b"\x00\x01\xfe", "headers": spring("orders", 0, "x")},
                  {"key": None, "value": b"", "headers": [("a", b"1"), ("a", b"1"), ("n", None)], "partition": 1},
                  {"key": b"tomb", "value": None, "headers": [(REDRIVE_COUNT, b"2"), (REDRIVE_ID, b"1:9")]},
                  {"value": "é ü".encode(), "headers": worker("orders"), "partition": 1})

    async def export(topic: str) -> list[dict[str, Any]]:
        got: list[Record] = []
        async with open_store(target(kafka_url, writable=False), topic) as store:
            report = await run_action(store, Action("export"), Selection(), on_export=got.append)
        assert report.ledger.exported == 4
        return [json.loads(encode(record_to_json(r))) for r in got]

    first = await export(src)
    assert kafka.committed(src) == {}  # an export passes nothing
    async with open_store(target(kafka_url), copy) as store:
        records = [record_from_json(doc, "line") for doc in first]
        assert await store.write(await store.resolve(copy), records) == [None] * 4
    second = await export(copy)

    def comparable(doc: dict[str, Any]) -> dict[str, Any]:
        doc = dict(doc, id=None)
        doc["properties"] = [p for p in doc["properties"] if p[0] != "offset"]
        return doc

    assert sorted(map(encode, map(comparable, second))) == sorted(map(encode, map(comparable, first)))
    tomb = next(d for d in first if d["properties"][0] == ["key", {"b": base64.b64encode(b"tomb").decode()}])
    assert ["value_null", {"bool": True}] in tomb["properties"] and tomb["redrives"] == 2


async def test_loop_guard_parks_past_max_redrives(kafka: Kafka, kafka_url: str) -> None:
    orders = kafka.topic("lg", 1)
    dlt = kafka.topic("lg.DLT", 2)
    kafka.produce(dlt, {"key": b"looping", "headers": [*spring(orders, 0, "x"), (REDRIVE_COUNT, b"3"),
                                                       (REDRIVE_ID, b"1:7")]},
                  {"key": b"again", "headers": [*spring(orders, 0, "x"), (REDRIVE_COUNT, b"2")]})
    async with open_store(target(kafka_url), dlt) as store:
        report = await run_action(store, Action("redrive", dry_run=False, force=True, max_redrives=3), Selection())
    assert (report.ledger.moved, report.ledger.parked) == (2, 1) and report.ledger.adds_up()
    parked = f"{dlt}.parked"
    kafka.created.append(parked)
    assert len(kafka.admin.list_topics(timeout=10).topics[parked].partitions) == 2  # like the source
    [p] = kafka.read(parked)
    assert p.key() == b"looping"
    assert [h for h in headers_of(p) if h[0].startswith("qdeck-")] == [(REDRIVE_ID, b"1:7"), (REDRIVE_COUNT, b"4")]
    [o] = kafka.read(orders)
    assert o.key() == b"again" and dict(headers_of(o))[REDRIVE_COUNT] == b"3"


async def test_a_failed_publish_is_never_passed_and_the_journal_finishes_later(
        kafka: Kafka, kafka_url: str, tmp_path: Path) -> None:
    there = kafka.topic("there", 1)
    gone = f"qdeck-dlqk-{kafka.tag}-gone"
    dlt = kafka.topic("fail.DLT", 1)
    kafka.produce(dlt, {"key": b"a", "headers": spring(gone, 0, "x")}, {"key": b"b", "headers": spring(there, 0, "x")})
    path = tmp_path / "j.jsonl"
    journal = Journal(path, encode, {"op": "redrive"})
    async with open_store(target(kafka_url), dlt) as store:
        report = await run_action(store, Action("redrive", dry_run=False, force=True), Selection(), journal=journal)
    journal.close()
    assert (report.ledger.moved, report.ledger.failed) == (1, 1) and report.ledger.adds_up()
    assert "does not exist" in next(iter(report.ledger.fail_reasons))
    assert report.unsettled == 1 and kafka.committed(dlt) == {}  # b is confirmed but behind the failed a
    assert gone not in kafka.admin.list_topics(timeout=10).topics
    kafka.created.append(gone)
    for fut in kafka.admin.create_topics([NewTopic(gone, 1, 1)]).values():
        fut.result(15)
    journal = Journal(path, encode, {"op": "redrive"})
    assert journal.resuming
    async with open_store(target(kafka_url), dlt) as store:
        again = await run_action(store, Action("redrive", dry_run=False, force=True), Selection(), journal=journal)
    journal.close()
    assert (again.ledger.moved, again.ledger.resumed, again.unsettled) == (2, 1, 0)
    assert kafka.committed(dlt) == {0: 2}
    assert [m.key() for m in kafka.read(there)] == [b"b"] and [m.key() for m in kafka.read(gone)] == [b"a"]


async def test_read_only_refuses_every_write_before_changing_anything(kafka: Kafka, kafka_url: str) -> None:
    orders = kafka.topic("ro", 1)
    dlt = kafka.topic("ro.DLT", 1)
    kafka.produce(dlt, {"headers": [*spring(orders, 0, "x"), (REDRIVE_COUNT, b"9")]}, {})
    async with open_store(target(kafka_url, writable=False), dlt) as store:
        for action in (Action("redrive", dry_run=False, force=True), Action("purge", dry_run=False)):
            with pytest.raises(ReadOnly, match="allow_write = true"):
                await run_action(store, action, Selection())
        records = [r async for batch in store.read(10) for r in batch]
        for write in (store.remove(records), store.delete(records), store.ensure(store.parked() or Place("topic", "x")),
                      store.write(Place("topic", orders), records),
                      store.publish([(records[0], Place("topic", orders), {})])):
            with pytest.raises(ReadOnly):
                await write
        assert await store.count() == 2
    assert kafka.committed(dlt) == {} and kafka.read(orders) == []
    assert f"{dlt}.parked" not in kafka.admin.list_topics(timeout=10).topics


class CrashingStore(KafkaStore):
    """Killed between publish and remove, once."""

    crashed = False

    async def remove(self, records: Any) -> Any:
        if not CrashingStore.crashed:
            CrashingStore.crashed = True
            raise RuntimeError("killed")
        return await super().remove(records)


async def test_resume_after_a_crash_between_publish_and_remove(kafka: Kafka, kafka_url: str, tmp_path: Path) -> None:
    dlt = kafka.topic("crash.DLT", 2)
    dst = kafka.topic("crash.dst", 2)
    kafka.produce(dlt, *({"key": f"k{i}".encode(), "partition": i % 2} for i in range(12)))
    path = tmp_path / "j.jsonl"
    action = Action("move", to=Place("topic", dst), dry_run=False, force=True, batch=5)
    journal = Journal(path, encode, {"op": "move"})
    with pytest.raises(RuntimeError, match="killed"):
        async with CrashingStore(target(kafka_url), dlt) as store:
            await run_action(store, action, Selection(), journal=journal)
    journal.close()
    assert kafka.committed(dlt) == {} and len(kafka.read(dst)) == 5  # confirmed, never removed
    journal = Journal(path, encode, {"op": "move"})
    async with open_store(target(kafka_url), dlt) as store:
        report = await run_action(store, action, Selection(), journal=journal)

    journal.close()
    ledger = report.ledger
    assert (ledger.moved, ledger.resumed, ledger.possible_duplicates, report.unsettled) == (12, 5, 0, 0)
    assert ledger.adds_up() and kafka.committed(dlt) == {0: 6, 1: 6}
    keys = [m.key() for m in kafka.read(dst)]
    assert sorted(keys) == sorted(f"k{i}".encode() for i in range(12))  # each once: none sent twice


def test_positions_pass_released_records_only_to_reach_removed_ones() -> None:
    walk = Positions({0: 10, 1: 0})
    walk.read([(0, 10), (0, 11), (0, 13), (1, 0), (1, 1)])  # 0:12 is a transaction marker
    walk.failed([(1, 0)])
    moved, passed = walk.removed([(0, 11), (1, 1)])  # 0:10, 0:13 are released by the engine after this
    assert moved == {0: 12} and passed == {(0, 11)}  # not past 0:13 (released, nothing removed after it)
    assert walk.deletable == {0: 10, 1: 0}  # 0:10 was not selected: DeleteRecords must not take it
    walk.committed_to(moved)
    walk.read([(0, 14)])
    assert walk.removed([(0, 14)]) == ({0: 15}, {(0, 14)})
