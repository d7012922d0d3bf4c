"""The test harness tells the truth: ``tests.brokers status`` checks what it reports, a missing broker fails under
``QDECK_REQUIRE_BROKERS=1`` instead of skipping, and the RabbitMQ CLI tests use the broker they are given."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from console.embedded_redis import free_port
from probes import redact_text
from tests import brokers as harness


def test_status_checks_every_broker_it_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    dead = {"kafka": f"kafka://127.0.0.1:{free_port()}", "redis": f"redis://127.0.0.1:{free_port()}/0",
            "rabbitmq": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    state.write_text(json.dumps({"urls": dead, "started": []}))
    monkeypatch.setattr(harness, "STATE_FILE", state)
    for name in harness.ENV.values():
        monkeypatch.delenv(name, raising=False)
    code = harness.main(["status"])
    out = capsys.readouterr().out
    for name, url in dead.items():
        line = next((line for line in out.splitlines() if redact_text(url) in line), None)
        assert line is not None and line.startswith("DOWN"), (name, out)
    assert code == 1, "status exits non-zero when something it lists is down"


def test_a_missing_broker_fails_when_brokers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDECK_REQUIRE_BROKERS", "1")
    with pytest.raises(pytest.fail.Exception, match="QDECK_REQUIRE_BROKERS=1"):
        harness.unavailable("redis", "no redis-server here")
    monkeypatch.setenv("QDECK_REQUIRE_BROKERS", "0")
    with pytest.raises(pytest.skip.Exception):
        harness.unavailable("redis", "no redis-server here")


def test_broker_tests_never_skip_past_the_requirement() -> None:
    """Every skip for a missing broker goes through ``harness.unavailable`` (or the conftest fixtures)."""
    for path in (Path(__file__).parent / "test_cli_redis_kafka.py", Path(__file__).parent / "test_cli_rabbitmq.py"):
        assert "pytest.skip(" not in path.read_text(), path


def test_rabbitmq_cli_tests_use_the_given_broker() -> None:
    """QDECK_TEST_RABBITMQ_URL may point anywhere: no host, port or account is written into the tests."""
    text = (Path(__file__).parent / "test_cli_rabbitmq.py").read_text()
    assert not re.search(r"127\.0\.0\.1:5672|guest(:|@)", text), re.findall(r".*(?:127\.0\.0\.1:5672|guest[:@]).*",
                                                                             text)
