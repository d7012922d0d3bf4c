"""``qdeck exporter`` as a process against the shared RabbitMQ, Redis and Kafka-protocol brokers, with a queue, a
stream and a topic of the test's own: /healthz, then /metrics read back with prometheus_client's parser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.embedded_redis import free_port
from tests.console.test_exporter_metrics import Samples, samples, value
from tests.rabbit import RabbitVhost
from tests.workers import unique

pytestmark = [pytest.mark.rabbitmq, pytest.mark.redis, pytest.mark.kafka, pytest.mark.slow]
WAIT_S = 90.0  # RabbitMQ's management statistics trail by 5 s, and the exporter polls every 5 s


@contextmanager
def exporter_process(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``qdeck exporter ARGS`` on a free loopback port; stopped with SIGTERM (killed if it will not stop)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_") or k.startswith("QDECK_TEST_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    err = tmp_path / f"exporter-{uuid.uuid4().hex[:6]}.err"
    with err.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "exporter", "--port", str(port),
                                 "--interval", "5", *args], stdout=subprocess.DEVNULL, stderr=sink,
                                stdin=subprocess.DEVNULL, env=env)
    try:
        yield f"http://127.0.0.1:{port}", proc, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes], err: Path) -> Any:
    deadline = time.monotonic() + WAIT_S
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the exporter exited {proc.returncode}: {err.read_text()}"
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen in {WAIT_S:g} s; last: {last!r}; stderr: {err.read_text()}")


def scrape(base: str) -> Samples:
    return samples(httpx.get(f"{base}/metrics", timeout=10).text)


@pytest.fixture
def kafka_topic(kafka_url: str) -> Iterator[str]:
    """A one-partition topic of 3 records and a group that committed offset 1 (lag 2); deleted afterwards."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bs = kafka_url.removeprefix("kafka://")
    topic = unique("exporter")
    admin = AdminClient({"bootstrap.servers": bs})
    for fut in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        fut.result(15)
    producer = Producer({"bootstrap.servers": bs})
    for i in range(3):
        producer.produce(topic, value=f"v{i}".encode(), partition=0)
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": bs, "group.id": f"{topic}-g", "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    consumer.close()
    try:
        yield topic
    finally:
        admin.delete_consumer_groups([f"{topic}-g"])
        for fut in admin.delete_topics([topic]).values():
            fut.result(15)


def test_exporter_serves_every_broker(tmp_path: Path, vhost: RabbitVhost, redis_url: str, kafka_url: str,
                                      kafka_topic: str) -> None:
    import redis

    queue = unique("exporter")
    vhost.fill(queue, [b"a", b"b", b"c"])
    vhost.fill(f"{queue}.dlq", [b"dead"])
    stream = unique("exporter")
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(stream, {"n": "1"})
        client.xadd(stream, {"n": "2"})
        client.xgroup_create(stream, "workers", id="0")
        with exporter_process(tmp_path, "-b", vhost.url, "-b", redis_url, "-b", kafka_url) as (base, proc, err):
            health = wait_for("/healthz 200", lambda: (r := httpx.get(f"{base}/healthz", timeout=5)).status_code
                              == 200 and r.json(), proc, err)
            assert [b["up"] for b in health["brokers"]] == [True, True, True], health
            rabbit = next(b["broker"] for b in health["brokers"] if b["kind"] == "rabbitmq")
            assert rabbit == vhost.url.replace(":guest@", ":***@")

            def all_seen() -> Samples | None:
                found = scrape(base)
                wanted = [value(found, "qdeck_queue_depth", broker=rabbit, queue=queue, vhost=vhost.name) == 3,
                          value(found, "qdeck_dlq_depth", broker=rabbit, queue=f"{queue}.dlq") == 1,
                          value(found, "qdeck_group_lag", broker=redis_url, queue=stream, group="workers") == 2,
                          value(found, "qdeck_group_lag", broker=kafka_url, queue=kafka_topic,
                                group=f"{kafka_topic}-g") == 2]
                return found if all(wanted) else None

            found = wait_for("every broker's figures", all_seen, proc, err)
            assert value(found, "qdeck_partition_lag", broker=kafka_url, queue=kafka_topic, partition="0") == 2
            assert value(found, "qdeck_queue_consumers", broker=rabbit, queue=queue) == 0
            assert value(found, "qdeck_rule_status", broker=rabbit, rule="dlq_not_empty", queue=f"{queue}.dlq") == 1
            assert value(found, "qdeck_rule_status", broker=rabbit, rule="no_consumers", queue=queue) == 1
            for b in (rabbit, redis_url, kafka_url):
                assert value(found, "qdeck_broker_up", broker=b) == 1
                assert (value(found, "qdeck_broker_polls_total", broker=b) or 0) >= 1
            text = httpx.get(f"{base}/metrics", timeout=10).text
            assert "guest:guest" not in text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0  # a clean stop: probes closed, server shut
        lines = err.read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qdeck exporter: serving http://127.0.0.1:"), lines
        assert "guest:guest" not in lines[0]
    finally:
        client.delete(stream)
        client.close()
