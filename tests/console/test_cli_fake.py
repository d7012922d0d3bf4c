"""CLI rendering with the in-process fake probe (memory://): no broker needed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from console.cli import app
from probes import BrokerUnreachable
from probes.fake import FAKE_BROKERS, FakeBroker
from probes.models import DeathRecord, PeekedMessage, QueueStats

runner = CliRunner()


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    broker = FakeBroker(queues=[
        QueueStats("fake", "work", "queue", 3, 1, 2, 10.0, 9.5, "dlx", False, queue_type="classic",
                   dead_letter_source="arguments", dead_letter_queues=("work.dlq",)),
        QueueStats("fake", "work.dlq", "queue", 2, 0, 0, None, None, None, True, queue_type="classic"),
        QueueStats("fake", "[bold]x\x1b[2J", "queue", 0, 0, 0, None, None, None, False),
    ], messages={"work.dlq": [PeekedMessage(0, b"body\x1b[2J", 9, False, deaths=(
        DeathRecord("work", "rejected", 2, "", ("work",)),), first_death_reason="rejected", first_death_queue="work")]})
    FAKE_BROKERS["t"] = broker
    yield broker
    FAKE_BROKERS.pop("t", None)


def test_queues_table_escapes_names_and_shows_dlq(fake: FakeBroker) -> None:
    r = runner.invoke(app, ["queues", "-b", "memory://t"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "work.dlq [DLQ]" in r.output and "[bold]x\\x1b[2J" in r.output and "\x1b" not in r.output


def test_dlq_list_json_reports_feeders(fake: FakeBroker) -> None:
    r = runner.invoke(app, ["dlq", "list", "-b", "memory://t", "--json"])
    data = json.loads(r.output)
    assert [(d["queue"]["name"], d["fed_by"]) for d in data["dead_letter_queues"]] == [("work.dlq", ["work"])]


def test_peek_human_output(fake: FakeBroker) -> None:
    r = runner.invoke(app, ["dlq", "peek", "work.dlq", "-b", "memory://t"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "rejected (dead-lettered 2×)" in r.output and "body\\x1b[2J" in r.output


def test_probe_errors_become_exit_2(fake: FakeBroker) -> None:
    fake.fail_with = BrokerUnreachable("broker unreachable: test")
    r = runner.invoke(app, ["queues", "-b", "memory://t"])
    assert r.exit_code == 2 and "broker unreachable: test" in r.output


def test_sort_rejects_unknown_field(fake: FakeBroker) -> None:
    r = runner.invoke(app, ["queues", "-b", "memory://t", "--sort", "bogus"])
    assert r.exit_code == 2
