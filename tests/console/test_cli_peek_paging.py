"""Issue 17 item 8 (CLI): ``qdeck dlq peek`` pages. The header says which messages of how many in which order, the
end prints the next page's cursor (``next page: --after ...``, in JSON ``next``), and following it walks every message
once; what a broker cannot take is one line and exit 2 before any connection."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from console.cli import app
from probes.fake import FAKE_BROKERS, FakeBroker
from probes.models import DeathRecord, PeekedMessage, QueueStats

runner = CliRunner()
N = 61
ENV = {"COLUMNS": "200", "QDECK_CONFIG": "/nonexistent/qdeck-brokers.toml"}


@pytest.fixture
def dlq() -> Iterator[str]:
    name = f"paging-{uuid.uuid4().hex[:6]}"
    reasons = ["rejected"] * 20 + ["expired"] * 30 + ["delivery_limit"] * 11
    FAKE_BROKERS[name] = FakeBroker(
        queues=[QueueStats("fake", "work.dlq", "queue", N, 0, 0, None, None, None, True)],
        messages={"work.dlq": [PeekedMessage(i, f"m{i}".encode(), 3, False, message_id=f"id-{i}", deaths=(
            DeathRecord("work", reason, 1),)) for i, reason in enumerate(reasons)]})
    yield f"memory://{name}"
    FAKE_BROKERS.pop(name, None)


def peek(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["dlq", "peek", *args], env=ENV)
    return r.exit_code, r.output


def test_the_next_page_line_walks_every_message_once(dlq: str) -> None:
    code, out = peek("work.dlq", "-n", "20", "-b", dlq)
    assert code == 0, out
    assert "messages 1–20 of 61 · oldest first" in out
    seen, pages = re.findall(r"id id-(\d+)", out), 1
    while "last page" not in out:
        after = re.search(r"next page: --after (\S+)", out)
        assert after is not None, out
        code, out = peek("work.dlq", "-n", "20", "-b", dlq, "--after", after.group(1))
        assert code == 0, out
        seen += re.findall(r"id id-(\d+)", out)
        pages += 1
    assert pages == 4 and "messages 61–61 of 61" in out and "message 61 of 61" in out
    assert [int(i) for i in seen] == list(range(N))
    assert "delivery_limit" in out  # the last of them: hidden behind the first 20 before


def test_json_carries_the_cursor_and_newest_first_reverses(dlq: str) -> None:
    code, out = peek("work.dlq", "-n", "25", "-b", dlq, "--json", "--newest")
    doc = json.loads(out)
    bodies = [m["body_text"] for m in doc["messages"]]
    while doc["next"] is not None:
        assert isinstance(doc["next"], str) and doc["order"] == "newest first" and doc["total"] == N
        code, out = peek("work.dlq", "-n", "25", "-b", dlq, "--json", "--after", doc["next"])
        assert code == 0, out
        doc = json.loads(out)
        bodies += [m["body_text"] for m in doc["messages"]]
    assert bodies == [f"m{i}" for i in reversed(range(N))] and doc["first"] == 50


@pytest.mark.parametrize(("url", "args", "says"), [
    ("redis://127.0.0.1:1/0", ["--partition", "0"], "--partition is for Kafka, not Redis"),
    ("redis://127.0.0.1:1/0", ["--offset", "-5"], "--offset is for Kafka, not Redis"),
    ("kafka://127.0.0.1:1", ["--pending", "g"], "--pending is for Redis streams, not Kafka"),
    ("amqp://127.0.0.1:1/", ["--since", "15m"], "--since is for Kafka and Redis streams, not RabbitMQ"),
    ("amqp://127.0.0.1:1/", ["--group", "g"], "--group is for Kafka and Redis streams, not RabbitMQ"),
    ("kafka://127.0.0.1:1", ["--offset", "3", "--group", "g"], "each say where to start"),
    ("redis://127.0.0.1:1/0", ["--pending", "g", "--newest"], "oldest first only"),
    ("redis://127.0.0.1:1/0", ["--since", "last tuesday"], "--since 'last tuesday' is neither a time"),
    ("redis://127.0.0.1:1/0", ["--after", "kafka,q=00000000,shown=20,p=0:20:61"], "from a Kafka peek"),
    ("redis://127.0.0.1:1/0", ["--after", "redis,q=00000000,shown=20,skip=20"], "another queue"),
    ("redis://127.0.0.1:1/0", ["--after", "\x1b[2Jnope"], "not a page cursor"),
    ("kafka://127.0.0.1:1", ["--after", "kafka,q=00000000,shown=20", "--partition", "1"], "drop --partition"),
    ("kafka://127.0.0.1:1", ["--partition", "-1"], "--partition"),
])
def test_what_a_broker_cannot_take_is_one_line_and_exit_2(url: str, args: list[str], says: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """As the console script runs (``console.cli.main``): nothing listens on port 1, so each is refused before
    any connection."""
    from console.cli import main

    monkeypatch.setenv("QDECK_CONFIG", ENV["QDECK_CONFIG"])
    monkeypatch.setattr(sys, "argv", ["qdeck", "dlq", "peek", "q", "-b", url, *args])
    capfd.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capfd.readouterr()
    assert exited.value.code == 2 and out == "", (out, err)
    assert err.startswith("qdeck: ") and err.count("\n") == 1 and says in err and "\x1b" not in err, err


def test_since_takes_an_age_or_a_time() -> None:
    from datetime import UTC, datetime

    from console.cmd_dlq import parse_since

    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("90s", now) == datetime(2026, 5, 1, 11, 58, 30, tzinfo=UTC)
    assert parse_since("3d", now) == datetime(2026, 4, 28, 12, 0, tzinfo=UTC)
    assert parse_since("2026-05-01T10:00:00") == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)  # UTC unless it says
    assert parse_since("2026-05-01T10:00:00+02:00") == datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


@pytest.mark.redis
def test_pending_entries_show_consumer_idle_time_and_deliveries(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    stream = f"qdeck-test-{uuid.uuid4().hex[:8]}:requests"
    try:
        ids = [r.xadd(stream, {"payload": f"r{i}"}).decode() for i in range(30)]
        r.xgroup_create(stream, "workers", id="0")
        r.xreadgroup("workers", "w1", {stream: ">"}, count=25)
        r.xclaim(stream, "workers", "w\x1b[2J2", min_idle_time=0, message_ids=[ids[21]])
        code, out = peek(stream, "-n", "20", "-b", redis_url, "--pending", "workers")
        assert code == 0, out
        assert "messages 1–20 of 25 · oldest first · pending entries of group 'workers'" in out
        assert "consumer w1 · idle " in out and " · delivered 1×" in out
        after = re.search(r"next page: --after (\S+)", out)
        assert after is not None
        code, out = peek(stream, "-n", "20", "-b", redis_url, "--after", after.group(1))
        assert code == 0 and "messages 21–25 of 25" in out and "last page" in out, out
        assert "consumer w\\x1b[2J2 · idle " in out and "delivered 2×" in out and "\x1b" not in out
        code, out = peek(stream, "-b", redis_url, "--pending", "nobody")
        assert code == 2 and "has no consumer group 'nobody' (it has: 'workers')" in out, out
    finally:
        r.delete(stream)
        r.close()
