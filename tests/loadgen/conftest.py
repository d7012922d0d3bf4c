"""One fixture for the three real brokers: a URL, a fresh queue name, and the authoritative "still queued" count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.workers import unique


@dataclass
class Case:
    kind: str
    url: str
    queue: str
    remaining: Callable[[], int]  # requests not yet acknowledged by the worker group (ready + unacked)
    dlq: str


def _redis_remaining(url: str, queue: str) -> Callable[[], int]:
    import redis

    def count() -> int:
        client = redis.Redis.from_url(url)
        try:
            groups = client.xinfo_groups(queue)
        finally:
            client.close()
        for g in groups:
            if g["name"] in (b"qdeck-workers", "qdeck-workers"):
                lag = g.get("lag")
                if lag is None:
                    raise AssertionError("this Redis reports no group lag")
                return int(g["pending"]) + int(lag)
        client = redis.Redis.from_url(url)
        try:
            return int(client.xlen(queue))
        finally:
            client.close()

    return count


def _kafka_remaining(url: str, queue: str, group: str | None = None) -> Callable[[], int]:
    """Records not yet committed by the worker group: by default the worker's own, one group per request topic."""
    from confluent_kafka import Consumer, TopicPartition

    bootstrap = url.removeprefix("kafka://")
    group = group or f"qdeck-workers.{queue}"

    def count() -> int:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            meta = c.list_topics(queue, timeout=10).topics[queue]
            total = 0
            parts = [TopicPartition(queue, p) for p in meta.partitions]
            for tp in c.committed(parts, timeout=10):
                low, high = c.get_watermark_offsets(TopicPartition(queue, tp.partition), timeout=10)
                total += high - (tp.offset if tp.offset >= 0 else low)
            return total
        finally:
            c.close()

    return count


@pytest.fixture(params=["redis", "rabbitmq", "kafka"])
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    kind = request.param
    queue = unique("qdeck-test-lg")
    if kind == "redis":
        url = request.getfixturevalue("redis_url")
        yield Case(kind, url, queue, _redis_remaining(url, queue), f"{queue}:dlq")
        import redis

        client = redis.Redis.from_url(url)
        client.delete(queue, f"{queue}:dlq")
        client.close()
    elif kind == "rabbitmq":
        vhost = request.getfixturevalue("vhost")
        yield Case(kind, vhost.url, queue, lambda: vhost.exact_depth(queue), f"{queue}.dlq")
    else:
        url = request.getfixturevalue("kafka_url")
        yield Case(kind, url, queue, _kafka_remaining(url, queue), f"{queue}.dlq")


@pytest.fixture
def queues(redis_url: str) -> Iterator[list[str]]:
    """Queue names a test used; their streams are deleted afterwards."""
    import redis

    used: list[str] = []
    yield used
    with redis.Redis.from_url(redis_url) as r:
        for name in used:
            r.delete(name, f"{name}:dlq")
