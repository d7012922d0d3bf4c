"""Redis stream dead letters against the real Redis: the common provenance fields, qdeck's own fields, entries with
no body field, and each consumer's pending count and idle time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.cli import qdeck

pytestmark = pytest.mark.redis


@pytest.fixture
def r(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"qdeck-test-{uuid.uuid4().hex[:8]}"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_provenance_fields_are_origin_reason_and_count(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, prefix = r
    dlq, source = f"{prefix}:orders:dlq", f"{prefix}:orders"
    client.xadd(dlq, {"body": '{"order": 7}', "original_stream": source, "original_id": "1700000000000-3",
                      "group": "billing", "consumer": "w-2", "deliveries": "3",
                      "error": "KeyError: 'price'"})
    out = qdeck("dlq", "peek", dlq, "-b", redis_url)
    assert out.code == 0, out.all
    assert "None" not in out.out, out.out
    assert f"queue {source}" in out.out and "KeyError: 'price'" in out.out
    assert "3 deliveries" in out.out and "dead-lettered 1×" not in out.out
    assert "group billing" in out.out and "consumer w-2" in out.out and "id 1700000000000-3" in out.out
    doc = qdeck("dlq", "peek", dlq, "-b", redis_url, "--json").json()
    m = doc["messages"][0]
    assert m["original_queue"] == source and m["death_reason"] == "KeyError: 'price'"
    assert m["death_count"] == 3 and m["body_text"] == '{"order": 7}'
    death = m["deaths"][0]
    assert (death["queue"], death["original_id"], death["group"], death["consumer"], death["attempts"]) == \
        (source, "1700000000000-3", "billing", "w-2", 3)


def test_qdeck_worker_fields_still_read(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, prefix = r
    dlq, source = f"{prefix}:req:dlq", f"{prefix}:req"
    client.xadd(dlq, {"payload": "bad", "reason": "model error", "source": source, "attempts": "4",
                      "failed_at": "2024-05-01T10:00:00+00:00"})
    doc = qdeck("dlq", "peek", dlq, "-b", redis_url, "--json").json()
    m = doc["messages"][0]
    assert (m["original_queue"], m["death_reason"], m["death_count"]) == (source, "model error", 4)
    assert m["first_death_time"] == "2024-05-01T10:00:00+00:00" and m["body_text"] == "bad"


def test_entry_without_body_field_shows_its_fields(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, prefix = r
    dlq = f"{prefix}:events:dlq"
    client.xadd(dlq, {"user": "42", "action": "resize", "error": "timeout"})
    doc = qdeck("dlq", "peek", dlq, "-b", redis_url, "--json").json()
    m = doc["messages"][0]
    assert m["body_text"] == "" and m["size"] == 0, m
    assert m["headers"] == {"user": "42", "action": "resize", "error": "timeout"}
    assert m["death_reason"] == "timeout"
    table = qdeck("dlq", "peek", dlq, "-b", redis_url)
    assert table.code == 0 and "0 bytes" in table.out and "header action" in table.out, table.all
    assert '{"user"' not in table.out


def test_consumers_json_and_table_have_pending_and_idle(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, prefix = r
    stream = f"{prefix}:work"
    for i in range(5):
        client.xadd(stream, {"payload": f"p{i}"})
    client.xgroup_create(stream, "g", id="0")
    client.xreadgroup("g", "busy", {stream: ">"}, count=3)
    client.xgroup_createconsumer(stream, "g", "fresh")
    doc = qdeck("consumers", stream, "-b", redis_url, "--json").json()
    found = {c["tag"]: c for c in doc["consumers"]}
    assert found["g/busy"]["pending"] == 3 and found["g/fresh"]["pending"] == 0
    assert isinstance(found["g/busy"]["idle_ms"], int) and found["g/busy"]["idle_ms"] >= 0
    table = qdeck("consumers", stream, "-b", redis_url)
    assert table.code == 0 and "PENDING" in table.out and "IDLE" in table.out, table.all
