"""Issue 21 item 3: the console's health panel (``h``) and the overview's health column, from the health rules
(``console.health``: what ``qdeck check`` judges) after every poll. A dead-letter stream on the real Redis is driven
to WARN, to CRIT (a rules file's threshold, ``qdeck console --rules``) and back to OK; a broker that cannot be
reached is UNKNOWN; a finding about a broker itself is a badge in the header; bad options are one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from console.health.model import Finding, Level
from console.health.rules_file import load_rules
from console.safe_text import safe
from console.tui.app import QdeckApp
from console.tui.health import health_text
from console.tui.state import BrokerState
from console.tui.table import VirtualTable
from probes import parse_broker_url
from tests.cli import qdeck
from tests.console.test_tui_brokers import until
from tests.console.tui_fixtures import screen_text
from tests.workers import unique

SIZE = (160, 40)


def row_of(app: QdeckApp, name: str) -> tuple[int, tuple[str, ...]] | None:
    """(index, cells) of ``name``'s row in the current view's table."""
    table = app.screen.query_one(VirtualTable)
    for i, row in enumerate(table.rows):
        if name in row:
            return i, row
    return None


def overview_level(app: QdeckApp, name: str) -> str | None:
    """The health cell of ``name``'s row in the overview (its last column): ``-`` when nothing is wrong."""
    found = row_of(app, name)
    return None if found is None else found[1][-1] or "-"


@pytest.mark.redis
async def test_a_dead_letter_stream_goes_to_warn_and_crit_and_back(redis_url: str, tmp_path: Path) -> None:
    dlq = unique("qdeck-test-health") + ".dlq"
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[[queue]]\nmatch = "{dlq}"\ndlq_not_empty = {{ warn = 1, crit = 3 }}\n')
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(dlq, {"reason": "rejected", "body": "x"})
        app = QdeckApp([parse_broker_url(redis_url)], interval=0.5, rules=load_rules(rules))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: overview_level(app, dlq) == "WARN", timeout=30, what="WARN")
            await pilot.press("h")
            await until(pilot, lambda: app.screen.name == "findings", what="the health panel")
            await until(pilot, lambda: row_of(app, dlq) is not None, what="the finding")
            found = row_of(app, dlq)
            assert found is not None
            level, _broker, queue, _group, rule, value, threshold, _summary = found[1]
            assert (level, queue, value, threshold) == ("WARN", dlq, "1", "1") and rule in ("dlq_not_empty",
                                                                                           "dlq_growing")
            assert found[0] in app.screen.query_one(VirtualTable).warned  # drawn yellow
            shown = f"rules: {safe(rules, 80)}"  # a long path is cut, as every name is (pytest -n's are long)
            await until(pilot, lambda: shown in screen_text(app), what="the rules file named")
            client.xadd(dlq, {"reason": "rejected", "body": "y"})
            client.xadd(dlq, {"reason": "expired", "body": "z"})
            await until(pilot, lambda: (row_of(app, dlq) or (0, ("",)))[1][0] == "CRIT", timeout=30, what="CRIT")
            crit = row_of(app, dlq)
            assert crit is not None and crit[1][4] == "dlq_not_empty" and crit[1][5] == "3"
            assert crit[0] in app.screen.query_one(VirtualTable).alerts and "(crit)" in crit[1][7]
            await pilot.press("o")
            await until(pilot, lambda: overview_level(app, dlq) == "CRIT", timeout=30, what="the CRIT row")
            client.xtrim(dlq, maxlen=0)
            await until(pilot, lambda: overview_level(app, dlq) == "-", timeout=30, what="back to OK")
            await pilot.press("h")
            await until(pilot, lambda: app.screen.name == "findings", what="the health panel again")
            assert row_of(app, dlq) is None  # nothing at WARN or worse about it
            await pilot.press("a")  # every finding: its rules, OK
            await until(pilot, lambda: row_of(app, dlq) is not None, what="the OK findings")
            table = app.screen.query_one(VirtualTable)
            ok = [row for row in table.rows if dlq in row]
            assert ok and all(row[0] == "OK" for row in ok)
            assert {row[4] for row in ok} >= {"dlq_not_empty"}
    finally:
        client.delete(dlq)
        client.close()


async def test_a_broker_that_cannot_be_reached_is_unknown() -> None:
    app = QdeckApp([parse_broker_url("redis://:s3cret@127.0.0.1:1/0")], interval=30)
    async with app.run_test(size=SIZE) as pilot:
        state = next(iter(app.states.values()))
        await until(pilot, lambda: state.health.up is False, timeout=30, what="the failed poll")
        await pilot.press("h")
        await until(pilot, lambda: app.screen.name == "findings" and bool(app.screen.query_one(VirtualTable).rows),
                    what="the panel")
        [row] = app.screen.query_one(VirtualTable).rows
        assert row[0] == "UNKNOWN" and row[4] == "unreachable" and "s3cret" not in "".join(row)
        assert 0 in app.screen.query_one(VirtualTable).warned
        assert "UNKNOWN (1 UNKNOWN)" in screen_text(app)


def test_a_finding_about_the_broker_itself_is_a_header_badge() -> None:
    st = BrokerState("rabbit", "rabbitmq", "rabbit")
    st.health.up, st.health.last_ok = True, 1000.0
    st.judged.findings = [Finding(rule="node_alarm", level=Level.CRIT, broker="rabbit", queue=None, group=None, value=1,
                           threshold=1, summary="resource alarms 1 >= 1 (crit); memory alarm on rabbit@a"),
                   Finding(rule="lag", level=Level.WARN, broker="rabbit", queue="q", group=None, value=5000,
                           threshold=1000, summary="lag 5,000 >= 1,000 (warn)")]
    text = health_text({"rabbit": st}, now=1003.0)
    assert "CRIT resource alarms 1 >= 1 (crit); memory alarm on rabbit@a" in text.plain
    assert "lag 5,000" not in text.plain  # a queue's finding is in its row, not the header
    st.judged.findings = st.findings[1:]
    assert "CRIT" not in health_text({"rabbit": st}, now=1003.0).plain


@pytest.mark.parametrize(("args", "why"), [
    (["--rules", "{dir}/rules.toml"], "unknown key 'dlq_not_emtpy' in [defaults] (did you mean 'dlq_not_empty'?)"),
    (["--rules", "{dir}/missing.toml"], "missing.toml"),
    (["--run", "{dir}/nowhere"], "no such run directory or feed file"),
    (["--run", "{dir}"], "no live.jsonl there"),
    (["--serve", "--run", "{dir}"], "--run works in a terminal"),
])
def test_bad_console_options_are_one_line(args: list[str], why: str, tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text("[defaults]\ndlq_not_emtpy = { warn = 1 }\n")
    run = qdeck("console", "-b", "memory://health-options", *[a.format(dir=tmp_path) for a in args],
                env={"QDECK_RUNS_DIR": str(tmp_path / "runs")}, timeout=30)
    assert run.code == 2 and run.out == "" and run.err.count("\n") == 1 and why in run.err, run.all
