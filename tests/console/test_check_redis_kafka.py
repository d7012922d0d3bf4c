"""``qdeck check`` against a real Redis and a real Kafka-protocol broker: the stream, trend and Kafka offset rules
driven to WARN or CRIT and back, with the exit codes. Each rule file judges only this test's keys or topics (the
shared brokers hold other tests' too)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.console.test_check_rabbitmq import check, exits, finding, only_rule, until
from tests.workers import unique


@pytest.fixture
def stream(redis_url: str) -> Iterator[str]:
    """A unique stream name; the stream (and its groups) is deleted afterwards."""
    name = unique("qdeck-check")
    r = redis.Redis.from_url(redis_url)
    try:
        yield name
    finally:
        r.delete(name, f"{name}.dlq")
        r.close()


@contextmanager
def adding(redis_url: str, key: str, every: float = 0.05) -> Iterator[None]:
    """A producer thread that XADDs one entry to ``key`` every ``every`` seconds while the block runs."""
    stop = threading.Event()
    r = redis.Redis.from_url(redis_url)

    def produce() -> None:
        while not stop.is_set():
            r.xadd(key, {"v": "1"})
            stop.wait(every)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        r.close()


@pytest.mark.redis
def test_lag_growing_over_a_window_and_back(redis_url: str, stream: str, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xgroup_create(stream, "g", id="$", mkstream=True)
    rules = only_rule(tmp_path, "lag_growing", match=stream)
    with adding(redis_url, stream):  # nobody reads: the group's lag only grows
        grow = check(redis_url, rules, "--window", "2s", "--interval", "0.4")
    assert grow.code == 1, grow.all
    f = finding(grow, "lag_growing", stream)
    assert (f["level"], f["group"]) == ("WARN", "g") and f["value"] > 0 and "over" in f["summary"]
    assert grow.json()["brokers"][0]["snapshots"] >= 3
    steady = check(redis_url, rules, "--window", "1s", "--interval", "0.3")  # the lag holds still: no growth
    assert steady.code == 0, steady.all
    assert finding(steady, "lag_growing", stream)["value"] == 0
    one_poll = check(redis_url, rules)
    assert one_poll.code == 0 and one_poll.json()["findings"] == []  # a trend needs a window
    r.close()


@pytest.mark.redis
def test_dlq_growing_over_a_window_and_back(redis_url: str, stream: str, tmp_path: Path) -> None:
    dlq = f"{stream}.dlq"
    redis.Redis.from_url(redis_url).xadd(dlq, {"v": "0"})
    rules = only_rule(tmp_path, "dlq_growing", match=dlq)
    with adding(redis_url, dlq, every=0.1):
        grow = check(redis_url, rules, "--window", "1.5s", "--interval", "0.4")
    assert grow.code == 1, grow.all
    assert finding(grow, "dlq_growing", dlq)["level"] == "WARN" and finding(grow, "dlq_growing", dlq)["value"] >= 1
    still = check(redis_url, rules, "--window", "1s", "--interval", "0.3")
    assert still.code == 0 and finding(still, "dlq_growing", dlq)["value"] == 0, still.all


@pytest.mark.redis
def test_pending_entry_idle_warn_and_back_when_acked(redis_url: str, stream: str, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    ids = [r.xadd(stream, {"v": str(i)}) for i in range(2)]
    r.xreadgroup("g", "worker-1", {stream: ">"}, count=2)  # delivered, never acknowledged
    rules = only_rule(tmp_path, "pending_idle", "{ warn = 1, crit = 3600 }", match=stream)
    warn = until(lambda: check(redis_url, rules), exits(1, "pending_idle", "WARN", stream), "a WARN")
    f = finding(warn, "pending_idle", stream)
    assert f["value"] >= 1 and f["threshold"] == 1 and "2 pending" in f["summary"]
    r.xack(stream, "g", *ids)
    back = check(redis_url, rules)
    assert back.code == 0 and finding(back, "pending_idle", stream)["value"] == 0, back.all
    r.close()


@pytest.mark.redis
def test_drain_time_warn_while_draining_slowly_and_back(redis_url: str, stream: str, tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(600):
        pipe.xadd(stream, {"v": str(i)})
    pipe.execute()
    stop = threading.Event()
    reader = redis.Redis.from_url(redis_url)

    def consume(batch: int, pause: float) -> None:
        while not stop.is_set():
            got = reader.xreadgroup("g", "worker-1", {stream: ">"}, count=batch)
            if not got:
                return
            reader.xack(stream, "g", *(entry_id for entry_id, _ in got[0][1]))
            stop.wait(pause)

    thread = threading.Thread(target=consume, args=(5, 0.1), daemon=True)  # about 50 entries/s: minutes to drain
    thread.start()
    rules = only_rule(tmp_path, "drain_time", "{ warn = 2, crit = 100000 }", match=stream)
    try:
        slow = check(redis_url, rules, "--window", "1s", "--interval", "0.5")
    finally:
        stop.set()
        thread.join(10)
    assert slow.code == 1, slow.all
    f = finding(slow, "drain_time", stream)
    assert f["level"] == "WARN" and 2 <= f["value"] < 100000 and "net drain +" in f["summary"]
    stop.clear()
    consume(500, 0)  # read the rest: nothing left to drain
    back = check(redis_url, rules)
    assert back.code == 0 and finding(back, "drain_time", stream)["value"] == 0, back.all
    reader.close()
    r.close()


# ---- Kafka --------------------------------------------------------------------------------------------------------

@pytest.fixture
def topic(kafka_url: str) -> Iterator[tuple[str, str, str]]:
    """(bootstrap, topic, group): a two-partition topic with 10 records in each; topic and group deleted after."""
    bootstrap = kafka_url.split("://", 1)[1]
    name, group = unique("qdeck-check"), unique("qdeck-check-g")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, 2, 1)]).values():
        f.result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for p in (0, 1):
        for i in range(10):
            producer.produce(name, f"{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    try:
        yield bootstrap, name, group
    finally:
        for f in admin.delete_consumer_groups([group]).values():
            with contextlib.suppress(Exception):  # never created (the test failed before committing)
                f.result(30)
        for f in admin.delete_topics([name]).values():
            f.result(30)


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` as a consumer that has not joined (no member is left behind)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


@pytest.mark.kafka
def test_no_committed_offset_warn_and_back(kafka_url: str, topic: tuple[str, str, str], tmp_path: Path) -> None:
    bootstrap, name, group = topic
    rules = only_rule(tmp_path, "no_committed_offset", match=name)
    commit(bootstrap, group, name, {0: 10})
    warn = until(lambda: check(kafka_url, rules), exits(1, "no_committed_offset", "WARN", name), "a WARN")
    f = finding(warn, "no_committed_offset", name)
    assert (f["group"], f["value"]) == (group, 1) and "partition(s) 1" in f["summary"]
    commit(bootstrap, group, name, {1: 10})
    until(lambda: check(kafka_url, rules), exits(0, "no_committed_offset", "OK", name), "back to OK")


@pytest.mark.kafka
def test_offset_before_log_start_crit_and_back(kafka_url: str, topic: tuple[str, str, str],
                                                tmp_path: Path) -> None:
    bootstrap, name, group = topic
    rules = only_rule(tmp_path, "offset_before_log_start", match=name)
    commit(bootstrap, group, name, {0: 2, 1: 10})
    ok = until(lambda: check(kafka_url, rules), exits(0, "offset_before_log_start", "OK", name), "an OK first")
    assert finding(ok, "offset_before_log_start", name)["value"] == 0
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_records([TopicPartition(name, 0, 5)]).values():  # retention passes the commit
        f.result(30)
    crit = until(lambda: check(kafka_url, rules), exits(2, "offset_before_log_start", "CRIT", name), "a CRIT")
    lost = finding(crit, "offset_before_log_start", name)
    assert (lost["value"], lost["group"]) == (3, group) and "partition 0: 3" in lost["summary"]
    commit(bootstrap, group, name, {0: 5})
    until(lambda: check(kafka_url, rules), exits(0, "offset_before_log_start", "OK", name), "back to OK")
