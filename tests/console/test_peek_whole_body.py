"""Issue 16 item 12: ``dlq peek --json`` cut bodies at 64 KiB with no way to get a whole message. ``--body-bytes 0``
is the whole body (text, or base64 when binary), ``--body-bytes N`` cuts at N, the default stays 64 KiB in JSON and
a 500-byte preview in the table; ``size`` is always the whole size. On all three brokers."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.cli import qdeck

TEXT = ("line of text " * 20_000).encode()  # 260,000 bytes: past 64 KiB
BINARY = bytes(range(256)) * 400  # 102,400 bytes, not UTF-8


def _body_of(message: dict[str, object]) -> bytes:
    if message["body_text"] is not None:
        return str(message["body_text"]).encode()
    return base64.b64decode(str(message["body_base64"]))


def _check(url: str, queue: str) -> None:
    whole = qdeck("dlq", "peek", queue, "-b", url, "--json", "--body-bytes", "0", "-n", "2", "--force")
    assert whole.code == 0, whole.all[-2000:]
    messages = whole.json()["messages"]
    assert [_body_of(m) for m in messages] == [TEXT, BINARY]
    assert [m["size"] for m in messages] == [len(TEXT), len(BINARY)]
    assert not any(m["body_truncated"] for m in messages)
    assert messages[1]["body_text"] is None  # binary: base64

    default = qdeck("dlq", "peek", queue, "-b", url, "--json", "-n", "2", "--force").json()["messages"]
    assert [len(_body_of(m)) for m in default] == [64 * 1024, 64 * 1024]
    assert all(m["body_truncated"] for m in default) and default[0]["size"] == len(TEXT)

    cut = qdeck("dlq", "peek", queue, "-b", url, "--json", "--body-bytes", "10", "-n", "1", "--force").json()
    assert _body_of(cut["messages"][0]) == TEXT[:10]

    table = qdeck("dlq", "peek", queue, "-b", url, "-n", "1", "--force")
    assert table.code == 0 and f"({len(TEXT) - 500:,} more bytes)" in table.out
    whole_table = qdeck("dlq", "peek", queue, "-b", url, "-n", "1", "--body-bytes", "0", "--force")
    assert whole_table.code == 0 and "more bytes" not in whole_table.out


@pytest.mark.redis
def test_whole_bodies_redis(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    stream, listq = f"qdeck-test-whole-{uuid.uuid4().hex[:8]}", f"qdeck-test-whole-list-{uuid.uuid4().hex[:8]}"
    try:
        for body in (TEXT, BINARY):
            client.xadd(stream, {"body": body, "reason": "test"})
            client.rpush(listq, body)
        _check(redis_url, stream)
        _check(redis_url, listq)
    finally:
        client.delete(stream, listq)
        client.close()


@pytest.mark.rabbitmq
def test_whole_bodies_rabbitmq(vhost: object) -> None:
    from tests.rabbit import RabbitVhost

    assert isinstance(vhost, RabbitVhost)
    ch = vhost.channel()
    ch.queue_declare("whole", durable=True)
    for body in (TEXT, BINARY):
        ch.basic_publish("", "whole", body)
    ch.close()
    _check(vhost.url, "whole")


@pytest.mark.kafka
def test_whole_bodies_kafka(kafka_url: str) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = kafka_url.removeprefix("kafka://")
    topic = f"qdeck-test-whole-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(15)
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        for body in (TEXT, BINARY):
            producer.produce(topic, body)
        assert producer.flush(15) == 0
        _check(kafka_url, topic)
    finally:
        for fut in admin.delete_topics([topic]).values():
            fut.result(15)
