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


@pytest.mark.parametrize(("which", "names"), [("dead-letters", ["work.dlq"]), ("lagging", ["work", "work.dlq"]),
                                              ("no-consumers", ["work.dlq"])])
def test_queues_only_quick_filters(fake: FakeBroker, which: str, names: list[str]) -> None:
    """Issue 17 item 11: the quick filters, one rule (console.queue_filter.only) for `queues --only` and the
    console's `!`."""
    r = runner.invoke(app, ["queues", "-b", "memory://t", "--only", which, "--json"])
    assert r.exit_code == 0, r.output
    assert sorted(q["name"] for q in json.loads(r.output)["queues"]) == names


async def test_bang_cycles_the_quick_filters_in_the_console() -> None:
    from tests.console.test_tui_brokers import overview_rows, until
    from tests.console.tui_fixtures import demo_app

    app, _broker = demo_app("quick")
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: len(overview_rows(app)) == 5, what="the rows")
        seen = []
        for _ in range(4):
            await pilot.press("exclamation_mark")
            await pilot.pause(0.1)
            seen.append(sorted(overview_rows(app)))
        assert seen == [["embed.requests.dlq"],  # dead-letter queues holding messages
                        sorted(["embed.requests", "embed.requests.dlq", "events", "evil\\x1b]0;pwned\\x07",
                                "rerank.requests"]),  # a backlog: topics by group lag, queues by messages
                        ["embed.requests.dlq"],  # messages and no consumer
                        sorted(overview_rows(app))]
        assert len(seen[-1]) == 5  # back to every queue


def test_a_bad_choice_reads_plainly() -> None:
    """An enum option's bad value is one line without the library's "Value error," in the middle of it."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "console.cli", "queues", "-b", "memory://x", "--only", "bogus"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("qdeck: invalid value for '--only': 'bogus' is not one of 'dead-letters', 'lagging', "
                        "'no-consumers'.\n")


@pytest.mark.parametrize("command", [["load", "gate", "{path}", "--slo", "p99<1s"],
                                     ["load", "compare", "{path}", "{path}"]])
def test_a_deeply_nested_summary_is_one_line_exit_2(tmp_path, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    """A summary.json nested past Python's recursion limit was a RecursionError (exit 1, "internal error") in gate and
    compare: it is bad input, one line, exit 2, as the report already said."""
    import subprocess
    import sys

    path = tmp_path / "summary.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    r = subprocess.run([sys.executable, "-m", "console.cli", *[a.replace("{path}", str(path)) for a in command]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"qdeck: {path} is nested too deeply to read\n"
