"""Issue 16 item 10: ``qdeck consumers nosuch`` said "no consumers on nosuch" and exited 0 on all three brokers (a
typo read as nobody consuming); ``brokers --check`` showed Kafka's version as "None" and exited 0 with a broker
down."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from tests.cli import qdeck


def _missing(url: str) -> None:
    name = f"qdeck-test-nosuch-{uuid.uuid4().hex[:8]}"
    for extra in ((), ("--json",)):
        run = qdeck("consumers", name, "-b", url, *extra)
        assert run.code == 2, run.all
        assert run.out == "" and run.err.count("\n") == 1 and name in run.err, run.all


@pytest.mark.redis
def test_consumers_of_a_missing_redis_stream_is_an_error(redis_url: str) -> None:
    _missing(redis_url)


@pytest.mark.rabbitmq
def test_consumers_of_a_missing_rabbitmq_queue_is_an_error(vhost: object) -> None:
    from tests.rabbit import RabbitVhost

    assert isinstance(vhost, RabbitVhost)
    _missing(vhost.url)
    ch = vhost.channel()
    ch.queue_declare("present")
    ch.close()
    run = qdeck("consumers", "present", "-b", vhost.url)
    assert run.code == 0 and "no consumers on present" in run.out, run.all


@pytest.mark.kafka
def test_consumers_of_a_missing_kafka_topic_is_an_error(kafka_url: str) -> None:
    _missing(kafka_url)


@pytest.mark.redis
@pytest.mark.rabbitmq
def test_a_queue_on_one_of_several_brokers_is_found(redis_url: str, vhost: object) -> None:
    from tests.rabbit import RabbitVhost

    assert isinstance(vhost, RabbitVhost)
    ch = vhost.channel()
    ch.queue_declare("only-here")
    ch.close()
    run = qdeck("consumers", "only-here", "-b", redis_url, "-b", vhost.url, "--json")
    assert run.code == 0 and run.json() == {"consumers": []}, run.all


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.kafka
@pytest.mark.redis
def test_brokers_check_names_kafka_version_and_fails_when_one_is_down(kafka_url: str, redis_url: str,
                                                                     tmp_path: Path) -> None:
    config = tmp_path / "brokers.toml"
    config.write_text(f'[brokers.k]\nurl = "{kafka_url}"\n[brokers.r]\nurl = "{redis_url}"\n')
    up = qdeck("brokers", "--check", "--json", config=config)
    assert up.code == 0, up.all
    rows = {row["name"]: row for row in up.json()["brokers"]}
    assert rows["k"]["status"] == "up" and rows["k"]["version"] == "not reported by the broker"
    assert rows["r"]["version"].startswith("7") or rows["r"]["version"][0].isdigit()
    table = qdeck("brokers", "--check", config=config)
    assert table.code == 0 and "None" not in table.out, table.all

    config.write_text(config.read_text() + f'[brokers.gone]\nurl = "redis://127.0.0.1:{_free_port()}/0"\n')
    for extra in ((), ("--json",)):
        down = qdeck("brokers", "--check", *extra, config=config)
        assert down.code == 2, down.all
        assert down.err == "qdeck: 1 of 3 brokers down: gone\n", down.err
        assert "gone" in down.out  # the listing is still printed
