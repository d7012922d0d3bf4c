"""``qdeck`` against Redis and Kafka: lag, queues, dlq, and the unreachable / auth-failed error paths."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from console.embedded_redis import free_port
from tests import brokers as harness
from tests.cli import Run, qdeck

SECRET = "Sup3r-Secret-Pa55"


def _assert_clean_failure(timed: tuple[Run, float], expected: str) -> None:
    r, elapsed = timed
    assert r.code == 2, (r.code, r.all)
    assert r.out == "" and r.err.count("\n") == 1, r.all
    assert expected in r.err and "Traceback" not in r.all and SECRET not in r.all
    assert elapsed < 10, f"took {elapsed:.1f} s"


def _timed(*args: str) -> tuple[Run, float]:
    t = time.monotonic()
    r = qdeck(*args)
    return r, time.monotonic() - t


@pytest.fixture
def redis_with_password() -> Iterator[str]:
    started = harness.Brokers()
    try:
        url = harness.start_embedded_redis(started, password=SECRET)
    except RuntimeError as exc:
        harness.unavailable("redis (a private server with a password)", str(exc))
    yield url
    harness.down(started.started)


@pytest.mark.redis
def test_redis_lag_and_queues_json(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    stream = f"qdeck-cli-{uuid.uuid4().hex[:8]}:jobs"
    try:
        for i in range(10):
            r.xadd(stream, {"payload": str(i)})
        r.xgroup_create(stream, "g", id="0")
        r.xreadgroup("g", "c", {stream: ">"}, count=4)
        lag = qdeck("lag", "-b", redis_url, "--json", "--interval", "0")
        assert lag.code == 0, lag.err
        row = next(x for x in lag.json()["lag"] if x["source"] == stream)
        assert (row["group"], row["backlog"], row["pending"]) == ("g", 6, 4)
        queues = qdeck("queues", "-b", redis_url, "--json", "--filter", stream)
        assert [(q["name"], q["depth"], q["lag"]) for q in queues.json()["queues"]] == [(stream, 10, 6)]
    finally:
        r.delete(stream)
        r.close()


@pytest.mark.redis
def test_redis_unreachable_and_auth_failed(redis_with_password: str) -> None:
    port = redis_with_password.rsplit(":", 1)[1].split("/")[0]
    _assert_clean_failure(_timed("queues", "-b", f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"),
                          "broker unreachable")
    _assert_clean_failure(_timed("queues", "-b", f"redis://:wrong-{SECRET}@127.0.0.1:{port}/0"),
                          "authentication failed")
    _assert_clean_failure(_timed("lag", "-b", f"redis://127.0.0.1:{port}/0"), "authentication failed")
    ok = qdeck("queues", "-b", f"redis://:{SECRET}@127.0.0.1:{port}/0", "--json")
    assert ok.code == 0 and SECRET not in ok.all


@pytest.mark.kafka
def test_kafka_unreachable_and_auth_failed(kafka_url: str) -> None:
    _assert_clean_failure(_timed("queues", "-b", f"kafka://127.0.0.1:{free_port()}"), "broker unreachable")
    # SASL credentials offered to a broker that cannot authenticate them: refused, bounded, one line.
    sasl = (f"kafka://ops:{SECRET}@{kafka_url.removeprefix('kafka://')}"
            "?security_protocol=SASL_PLAINTEXT&sasl_mechanism=SCRAM-SHA-512")
    r, elapsed = _timed("lag", "-b", sasl, "--interval", "0")
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.all and SECRET not in r.all, r.all
    assert elapsed < 10
    assert "authentication failed" in r.err or "broker unreachable" in r.err
