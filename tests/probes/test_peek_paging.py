"""Issue 17 item 8: peeks page (a DLQ of 61 hid messages 21-61 behind a fixed first 20). Every walk is checked
against the broker's own order: all messages, each once, no gaps, in order, oldest or newest first; the cursor
survives its token; Kafka seeks by partition, offset, time and a group's committed offsets; Redis pages a stream by
id, a group's pending entries (idle time, delivery count) and lists by position; RabbitMQ pages by re-reading (and
says what that costs), newest first included."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from probes import ConfigError, NotFound, UnsafeOperation, Unsupported, open_probe, parse_broker_url
from probes.models import KafkaRange, PeekCursor, PeekFrom, PeekResult
from probes.paging import cursor_token, parse_cursor, queue_tag, rabbitmq_fetch_count, start_problem
from tests.rabbit import RabbitVhost

N = 61  # the DLQ of the issue: 61 messages, pages of 20


async def walk(probe: Any, queue: str, start: PeekFrom, limit: int = 20, **kw: Any) -> list[PeekResult]:
    """Every page of a walk, each next one from the previous page's cursor as a person pastes it (the token)."""
    pages = []
    while True:
        page = await probe.peek(queue, limit, start=start, **kw)
        pages.append(page)
        assert page.first == pages[0].first + sum(len(p.messages) for p in pages[:-1])
        assert [m.position for m in page.messages] == list(range(page.first, page.first + len(page.messages)))
        if page.next is None:
            return pages
        assert len(page.messages) == limit
        start = PeekFrom(after=parse_cursor(cursor_token(page.next)))
        assert len(pages) < 50


def bodies(pages: list[PeekResult]) -> list[bytes]:
    return [m.body for p in pages for m in p.messages]


# ---- the one rule and the token (no broker) ------------------------------------------------------------------
def test_cursor_token_round_trips_and_is_shell_safe() -> None:
    cursors = [
        PeekCursor("kafka", queue_tag("t"), True, 20, total=61, ranges=(KafkaRange(0, 0, 14), KafkaRange(2, 5, 9))),
        PeekCursor("redis", queue_tag("s"), False, 40, total=45, pending="g,=1 é", low="(1796055123456-12"),
        PeekCursor("redis", queue_tag("s"), True, 20, low="-", high="(1796055123456-0"),
        PeekCursor("rabbitmq", queue_tag("q"), False, 20, skip=20),
    ]
    for cursor in cursors:
        token = cursor_token(cursor)
        assert parse_cursor(token) == cursor
        assert all(c.isalnum() or c in ",=:%._-" for c in token), token
    for bad in ("", "garbage", "kafka,q=zz,shown=1", "kafka,q=00000000", "kafka,q=00000000,shown=1,shown=2",
                "redis,q=00000000,shown=1,low=%ff", "kafka,q=00000000,shown=1,p=0:9:3", "kafka,q=0000000,shown=x",
                "kafka,q=00000000,shown=1,bogus=1", "kafka,q=00000000,shown=1\x1b[2J"):
        with pytest.raises(ConfigError, match="--after"):
            parse_cursor(bad)


@pytest.mark.parametrize(("kind", "start", "says"), [
    ("redis", PeekFrom(partition=0), "--partition is for Kafka"),
    ("rabbitmq", PeekFrom(offset=5), "--offset is for Kafka"),
    ("rabbitmq", PeekFrom(since=datetime.now(UTC)), "--since is for Kafka and Redis streams"),
    ("rabbitmq", PeekFrom(group="g"), "--group is for Kafka and Redis streams"),
    ("kafka", PeekFrom(pending="g"), "--pending is for Redis streams"),
    ("kafka", PeekFrom(offset=1, group="g"), "give one"),
    ("redis", PeekFrom(pending="g", newest=True), "oldest first only"),
    ("redis", PeekFrom(pending="g", group="g"), "already names the group"),
    ("kafka", PeekFrom(after=PeekCursor("kafka", queue_tag("q"), False, 20), newest=True), "drop --newest"),
    ("redis", PeekFrom(after=PeekCursor("kafka", queue_tag("q"), False, 20)), "from a Kafka peek"),
    ("kafka", PeekFrom(after=PeekCursor("kafka", queue_tag("other"), False, 20)), "another queue"),
])
def test_one_rule_for_what_each_broker_takes(kind: str, start: PeekFrom, says: str) -> None:
    problem = start_problem(kind, "q", start)
    assert problem is not None and says in problem and "\n" not in problem


def test_rabbitmq_pages_cost_what_the_dialog_says() -> None:
    assert rabbitmq_fetch_count(20, None) == 21  # one past the page: is there another?
    page3 = PeekFrom(after=PeekCursor("rabbitmq", queue_tag("q"), False, 40, skip=40))
    assert rabbitmq_fetch_count(20, page3) == 61


# ---- Redis ----------------------------------------------------------------------------------------------------
@pytest.fixture
async def redis_keys(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    r = aioredis.Redis.from_url(redis_url)
    prefix = f"qdeck-test-{uuid.uuid4().hex[:8]}"
    yield r, prefix
    keys = [k async for k in r.scan_iter(match=f"{prefix}*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


@pytest.mark.redis
async def test_redis_stream_pages_every_entry_once_both_ways_and_from_a_group(
        redis_url: str, redis_keys: tuple[aioredis.Redis, str]) -> None:
    r, prefix = redis_keys
    dlq = f"{prefix}:dlq"
    ids = [(await r.xadd(dlq, {"payload": f"m{i}", "reason": "expired" if i > 20 else "rejected"})).decode()
           for i in range(N)]
    await r.xgroup_create(dlq, "ops", id=ids[44])  # the group has read 45 of them
    probe = open_probe(parse_broker_url(redis_url))
    try:
        oldest = await walk(probe, dlq, PeekFrom())
        assert [len(p.messages) for p in oldest] == [20, 20, 20, 1]
        assert [m.message_id for p in oldest for m in p.messages] == ids
        assert {p.total for p in oldest} == {N} and oldest[0].order == "oldest first"
        assert [m.death_reason for m in oldest[1].messages][-1] == "expired"  # position 40: was hidden before

        newest = await walk(probe, dlq, PeekFrom(newest=True))
        assert [m.message_id for p in newest for m in p.messages] == ids[::-1]

        # the walk is fixed when it starts: an entry added between pages is not in it (a new peek shows it)
        first = await probe.peek(dlq, 20)
        late = (await r.xadd(dlq, {"payload": "late"})).decode()
        assert first.next is not None
        rest = await walk(probe, dlq, PeekFrom(after=first.next))
        assert [m.message_id for m in first.messages] + [m.message_id for p in rest for m in p.messages] == ids

        unread = await walk(probe, dlq, PeekFrom(group="ops"), limit=7)
        assert [m.message_id for p in unread for m in p.messages] == [*ids[45:], late]
        assert "not read" in (unread[0].scope or "")
        ms = int(ids[30].split("-")[0])
        since = await probe.peek(dlq, 3, start=PeekFrom(since=datetime.fromtimestamp(ms / 1000, tz=UTC)))
        assert since.messages[0].message_id == next(i for i in ids if int(i.split("-")[0]) >= ms)
        assert since.scope is not None and since.scope.startswith("since ")
    finally:
        await probe.aclose()


@pytest.mark.redis
async def test_redis_pending_entries_page_with_idle_time_delivery_count_and_consumer(
        redis_url: str, redis_keys: tuple[aioredis.Redis, str]) -> None:
    r, prefix = redis_keys
    stream = f"{prefix}:requests"
    ids = [(await r.xadd(stream, {"payload": f"r{i}"})).decode() for i in range(50)]
    await r.xgroup_create(stream, "workers", id="0")
    await r.xreadgroup("workers", "w1", {stream: ">"}, count=45)
    await r.xack(stream, "workers", ids[0])
    for consumer in ("w2", "w3"):  # delivered three times now, held by w3
        await r.xclaim(stream, "workers", consumer, min_idle_time=0, message_ids=[ids[30]])
    await r.xdel(stream, ids[40])  # still pending, gone from the stream
    probe = open_probe(parse_broker_url(redis_url))
    try:
        pages = await walk(probe, stream, PeekFrom(pending="workers"))
        entries = [m for p in pages for m in p.messages]
        assert [m.message_id for m in entries] == ids[1:45]
        assert pages[0].total == 44 and "pending entries of group 'workers'" in (pages[0].scope or "")
        by_id = {m.message_id: m for m in entries}
        assert (by_id[ids[30]].delivery_count, by_id[ids[30]].consumer) == (3, "w3")
        assert (by_id[ids[1]].delivery_count, by_id[ids[1]].consumer) == (1, "w1")
        assert all(m.idle_ms is not None and m.idle_ms >= 0 for m in entries)
        assert by_id[ids[2]].body == b"r2"
        assert by_id[ids[40]].body == b"" and "gone from the stream" in by_id[ids[40]].headers["entry"]
        assert (await r.xpending(stream, "workers"))["pending"] == 44  # nothing acknowledged or claimed
        with pytest.raises(Unsupported, match="oldest first only"):
            await probe.peek(stream, 5, start=PeekFrom(pending="workers", newest=True))
    finally:
        await probe.aclose()


@pytest.mark.redis
async def test_redis_list_pages_by_position_both_ends(redis_url: str, redis_keys: tuple[aioredis.Redis, str]) -> None:
    r, prefix = redis_keys
    jobs = f"{prefix}:queue"
    await r.rpush(jobs, *[f"j{i}" for i in range(N)])
    probe = open_probe(parse_broker_url(redis_url))
    try:
        head = await walk(probe, jobs, PeekFrom())
        assert bodies(head) == [f"j{i}".encode() for i in range(N)] and head[0].total == N
        tail = await walk(probe, jobs, PeekFrom(newest=True), limit=25)
        assert bodies(tail) == [f"j{i}".encode() for i in reversed(range(N))]
        assert any("positions" in note for note in head[0].notes)
        assert await r.llen(jobs) == N
        with pytest.raises(Unsupported, match="--pending is for Redis streams"):
            await probe.peek(jobs, 5, start=PeekFrom(pending="g"))
    finally:
        await probe.aclose()


# ---- Kafka ----------------------------------------------------------------------------------------------------
def _kafka_topic(url: str) -> tuple[str, list[tuple[int, int, int]]]:
    """A topic of 3 partitions with N records, one a second (record times), spread unevenly; returns
    (topic, [(time ms, partition, offset) in produce order])."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bs = url.removeprefix("kafka://")
    topic = f"qdeck-test-page-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bs})
    for fut in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        fut.result(15)
    producer = Producer({"bootstrap.servers": bs})
    base = int(time.time() * 1000) - 3_600_000
    made: list[tuple[int, int, int]] = []
    offsets = [0, 0, 0]
    for i in range(N):
        p = (0, 0, 1, 2, 1)[i % 5]
        producer.produce(topic, value=f"v{i}".encode(), partition=p, timestamp=base + i * 1000)
        made.append((base + i * 1000, p, offsets[p]))
        offsets[p] += 1
    assert producer.flush(15) == 0
    return topic, made


def _committed(url: str, topic: str, group: str, offsets: dict[int, int]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": url.removeprefix("kafka://"), "group.id": group,
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    consumer.close()


def _refs(pages: list[PeekResult]) -> list[tuple[int, int]]:
    return [(m.partition or 0, m.offset or 0) for p in pages for m in p.messages]


@pytest.mark.kafka
async def test_kafka_pages_partition_by_partition_newest_by_time_and_seeks(kafka_url: str) -> None:
    topic, made = _kafka_topic(kafka_url)
    by_partition = sorted(made, key=lambda t: (t[1], t[2]))
    probe = open_probe(parse_broker_url(kafka_url))
    try:
        oldest = await walk(probe, topic, PeekFrom())
        assert _refs(oldest) == [(p, o) for _t, p, o in by_partition]
        assert {p.total for p in oldest} == {N} and "partition by partition" in (oldest[0].order or "")

        newest = await walk(probe, topic, PeekFrom(newest=True))
        assert _refs(newest) == [(p, o) for _t, p, o in reversed(made)]  # merged by record time, newest first
        assert [len(p.messages) for p in newest] == [20, 20, 20, 1]

        one = await walk(probe, topic, PeekFrom(partition=2, offset=3), limit=4)
        assert _refs(one) == [(2, o) for o in range(3, sum(1 for t in made if t[1] == 2))]
        assert one[0].scope == "partition 2, from offset 3"

        since = await walk(probe, topic, PeekFrom(since=datetime.fromtimestamp(made[50][0] / 1000, tz=UTC)))
        assert sorted(_refs(since)) == sorted((p, o) for _t, p, o in made[50:])

        group = f"{topic}-ops"
        _committed(kafka_url, topic, group, {0: 20, 1: 3})  # nothing committed on partition 2
        unread = await walk(probe, topic, PeekFrom(group=group, newest=True), limit=9)
        expect = [(p, o) for _t, p, o in reversed(made) if (p == 0 and o >= 20) or (p == 1 and o >= 3) or p == 2]
        assert _refs(unread) == expect and unread[0].total == len(expect)
        assert any("partition(s) 2" in note for note in unread[0].notes)
        with pytest.raises(NotFound, match="no committed offset"):
            await probe.peek(topic, 5, start=PeekFrom(group=f"{topic}-nobody"))
    finally:
        await probe.aclose()


# ---- RabbitMQ -------------------------------------------------------------------------------------------------
@pytest.mark.rabbitmq
async def test_rabbitmq_pages_by_rereading_and_says_the_cost(vhost: RabbitVhost) -> None:
    queue = f"dlq-{uuid.uuid4().hex[:6]}"
    vhost.fill(queue, [f"m{i}".encode() for i in range(N)])
    probe = open_probe(parse_broker_url(vhost.url))
    try:
        pages = await walk(probe, queue, PeekFrom())
        assert bodies(pages) == [f"m{i}".encode() for i in range(N)]
        assert "took the 40 message(s) before it again (61 requeued in all)" in (pages[2].side_effect or "")
        assert pages[-1].total == N
        newest = await walk(probe, queue, PeekFrom(newest=True))
        assert bodies(newest) == [f"m{i}".encode() for i in reversed(range(N))]
        assert "whole queue" in (newest[0].side_effect or "")
        assert vhost.exact_depth(queue) == N  # every page put everything back

        vhost.fill("qq", [f"q{i}".encode() for i in range(3)], durable=True,
                   arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
        cursor = PeekCursor("rabbitmq", queue_tag("qq"), False, 2, skip=2)
        with pytest.raises(UnsafeOperation, match="delivery limit of 5"):
            await probe.peek("qq", 2, start=PeekFrom(after=cursor))
        forced = await probe.peek("qq", 2, force=True, start=PeekFrom(after=cursor))
        assert bodies([forced]) == [b"q2"] and forced.next is None
        with pytest.raises(Unsupported, match="--since is for Kafka"):
            await probe.peek(queue, 2, start=PeekFrom(since=datetime.now(UTC)))
    finally:
        await probe.aclose()


@pytest.mark.kafka
async def test_kafka_pages_step_over_aborted_records_and_transaction_markers(kafka_url: str) -> None:
    """Offsets that never arrive as records (aborted records, commit/abort markers) are gaps, not messages to wait
    for: both directions page through them, exactly."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bs = kafka_url.removeprefix("kafka://")
    topic = f"qdeck-test-txn-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bs})  # kept alive until the topic exists
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(15)
    producer = Producer({"bootstrap.servers": bs, "transactional.id": f"{topic}-tx"})
    producer.init_transactions(15)
    kept = []
    for batch in range(6):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, value=f"b{batch}-{i}".encode(), partition=0)
        if batch % 2:
            producer.abort_transaction(15)
        else:
            producer.commit_transaction(15)
            kept += [f"b{batch}-{i}".encode() for i in range(3)]
    probe = open_probe(parse_broker_url(kafka_url))
    try:
        oldest = await walk(probe, topic, PeekFrom(), limit=4)
        assert bodies(oldest) == kept
        assert oldest[0].total is not None and oldest[0].total > len(kept)  # counted in offsets: the gaps are there
        assert bodies(await walk(probe, topic, PeekFrom(newest=True), limit=4)) == kept[::-1]
    finally:
        await probe.aclose()
