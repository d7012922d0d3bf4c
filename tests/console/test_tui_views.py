"""Issue 17, items 11 and 13: the top-level views are modes that keep their own filter, sort and cursor; the
dead-letter and lag views filter and sort with the CLI's own functions; a brokers view (k9s's ``:ctx``) lists every
broker and profile with its full error and scopes every view to one; ``y`` copies a body through OSC 52 only when
the user turned it on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from console.cli import app as cli_app
from console.queue_filter import select_dead_letters, select_lag
from console.tui.app import QdeckApp
from console.tui.body import BodyScreen
from console.tui.brokers import BrokersScreen
from console.tui.deadletters import DeadLettersScreen
from console.tui.lag import LagScreen
from console.tui.overview import OverviewScreen
from console.tui.table import VirtualTable
from probes.errors import BrokerUnreachable
from probes.fake import FAKE_BROKERS, FakeBroker
from probes.lag import LagRow
from probes.models import PeekedMessage
from probes.urls import parse_broker_url
from tests.cli import qdeck
from tests.console.test_tui_brokers import until
from tests.console.tui_fixtures import FROZEN, FrozenProbe, demo_app, q, screen_text

SIZE = (150, 36)
runner = CliRunner()


def names(app: QdeckApp, column: int = 1) -> list[str]:
    """The name column of the current view's table, top to bottom."""
    return [row[column] for row in app.screen.query_one(VirtualTable).rows]


def two_dlq_broker() -> FakeBroker:
    return FakeBroker(queues=[
        q("orders", 10, target="dlx"), q("billing", 3, target="dlx"),
        q("orders.dlq", 5, consumers=0, dlq=True), q("billing.dlq", 9, consumers=0, dlq=True),
        q("a.backlog", 400, consumers=0), q("z.small", 2)])


def app_on(broker: FakeBroker, name: str) -> QdeckApp:
    target = parse_broker_url(f"memory://{name}")
    return QdeckApp([target], interval=3600, clock=lambda: FROZEN + 3,
                    probes={target.label: FrozenProbe(target, broker=broker)})


# ---- item 13: modes ----------------------------------------------------------------------------------------------
async def test_each_view_keeps_its_filter_and_sort_when_you_come_back() -> None:
    app = app_on(two_dlq_broker(), "modes")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(app)) == 6, what="the overview")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LagScreen), what="the lag view")
        lag_screen = app.screen
        await pilot.press("slash", *"order", "enter")
        await until(pilot, lambda: names(app) == ["orders", "orders.dlq"], what="the filtered lag rows")
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen), what="the overview")
        assert len(names(app)) == 6  # the lag view's filter is its own
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LagScreen), what="the lag view again")
        assert app.screen is lag_screen and app.current_mode == "lag"
        assert names(app) == ["orders", "orders.dlq"]  # kept: filter and sort
        await pilot.press("escape")  # clears the filter first
        await pilot.pause(0.1)
        assert isinstance(app.screen, LagScreen) and len(names(app)) == 6
        await pilot.press("escape")  # then back to the overview, never out of the app
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen), what="Esc back to the overview")
        assert app.return_code is None


async def test_a_views_key_lands_on_its_list_and_q_goes_back_before_quitting() -> None:
    app = app_on(two_dlq_broker(), "modes-q")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(app)) == 6, what="the overview")
        await pilot.press("d", "enter")  # the fullest DLQ's detail, over the dead-letter view
        await until(pilot, lambda: app.screen.name == "detail", what="a DLQ's detail")
        await pilot.press("l", "d")
        await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen), what="the dead-letter list")
        await pilot.press("q")  # q on another view's list: back to the overview
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen), what="the overview")
        assert app.return_code is None
        await pilot.press("q")
        await pilot.pause(0.1)
    assert app.return_code == 0


# ---- item 11: filter and sort in the dead-letter and lag views ---------------------------------------------------
async def test_dead_letter_view_filters_by_a_feeding_queue_and_sorts() -> None:
    app = app_on(two_dlq_broker(), "dlq-filter")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await until(pilot, lambda: names(app) == ["billing.dlq", "orders.dlq"], what="fullest first")
        header = "".join(seg.text for seg in app.screen.query_one(VirtualTable).render_line(0))
        assert "messages ▼" in header
        await pilot.press("s")  # the next column: name, A→Z
        await until(pilot, lambda: names(app) == ["billing.dlq", "orders.dlq"], what="A→Z")
        await pilot.press("r")
        await until(pilot, lambda: names(app) == ["orders.dlq", "billing.dlq"], what="Z→A")
        await pilot.press("slash", *"orders", "enter")  # the DLQ that the queue "orders" feeds
        await until(pilot, lambda: names(app) == ["orders.dlq"], what="filtered by feeder")
        assert "1 of 2 match 'orders'" in screen_text(app)


async def test_lag_view_sorts_on_a_click_and_reverses_on_the_next() -> None:
    app = app_on(two_dlq_broker(), "lag-sort")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await until(pilot, lambda: names(app)[:1] == ["a.backlog"], what="largest backlog first")
        table = app.screen.query_one(VirtualTable)
        table.post_message(VirtualTable.Sorted(table, "source"))  # a click on the title: A→Z
        await until(pilot, lambda: names(app) == sorted(names(app)) and
                    getattr(app.screen, "sort_column", None) == "source",
                    what="sorted by name")
        table.post_message(VirtualTable.Sorted(table, "source"))  # again: Z→A
        await until(pilot, lambda: names(app)[0] == "z.small", what="reversed")
        header = "".join(seg.text for seg in table.render_line(0))
        assert "queue / topic / stream ▼" in header


def test_the_cli_and_the_console_select_lag_and_dead_letters_with_one_function() -> None:
    rows = [LagRow("b", "grow", None, 10, True, 1, trend="growing"),
            LagRow("b", "fast", "g1", 100, True, 1, seconds_to_drain=5.0, trend="draining"),
            LagRow("b", "slow", "g2", 100, True, 1, seconds_to_drain=500.0, trend="draining"),
            LagRow("b", "new", None, 7, True, 1)]
    assert [r.source for r in select_lag(rows, sort="eta")] == ["grow", "slow", "fast", "new"]
    assert [r.source for r in select_lag(rows, sort="eta", reverse=True)] == ["fast", "slow", "grow", "new"]
    assert [r.source for r in select_lag(rows, "g?")] == ["fast", "slow"]  # a group's name matches too
    assert [r.source for r in select_lag(rows, sort="trend")] == ["grow", "fast", "slow", "new"]
    dlqs = [("b", q("x.dlq", 1, dlq=True)), ("b", q("y.dlq", 8, dlq=True))]
    assert [e[1].name for e in select_dead_letters(dlqs, {("b", "x.dlq"): ["orders"]}, "ord*")] == ["x.dlq"]


def test_qdeck_lag_filters_and_sorts_like_the_console() -> None:
    FAKE_BROKERS["lag-cli"] = two_dlq_broker()
    try:
        r = runner.invoke(cli_app, ["lag", "-b", "memory://lag-cli", "--interval", "0", "--json", "--sort", "backlog",
                                "--reverse", "--filter", "*.dlq"])
        assert r.exit_code == 0, r.output
        assert [row["source"] for row in json.loads(r.stdout)["lag"]] == ["orders.dlq", "billing.dlq"]
        r = runner.invoke(cli_app, ["lag", "-b", "memory://lag-cli", "--interval", "0", "--filter", "nothing-like-it"],
                          env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "no queue, topic, stream or group matches 'nothing-like-it'" in r.output
    finally:
        FAKE_BROKERS.pop("lag-cli", None)
    bad = qdeck("lag", "--broker", "memory://lag-cli", "--sort", "size")
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1, bad.all


# ---- item 11: the brokers view -----------------------------------------------------------------------------------
async def test_brokers_view_scopes_every_view_connects_profiles_and_shows_the_whole_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long_error = ("cannot connect to 10.0.0.9:5672: connection refused (is the broker running, and is this the "
                  "right port? the last three attempts failed the same way, the end of this sentence is here)")
    down = FakeBroker(queues=[q("down.q", 1)])
    config = tmp_path / "brokers.toml"
    config.write_text('[brokers.spare]\nurl = "memory://spare-profile"\ndescription = "the standby"\n')
    monkeypatch.setenv("QDECK_CONFIG", str(config))
    FAKE_BROKERS["spare-profile"] = FakeBroker(queues=[q("spare.only", 3)])
    one, two = parse_broker_url("memory://scope-one"), parse_broker_url("memory://scope-two")
    app = QdeckApp([one, two], interval=3600, clock=lambda: FROZEN + 3,
                   probes={one.label: FrozenProbe(one, broker=two_dlq_broker()),
                           two.label: FrozenProbe(two, broker=down)})
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "down.q" in names(app), what="both brokers in the overview")
            down.fail_with = BrokerUnreachable(long_error)
            await pilot.press("ctrl+r")
            await until(pilot, lambda: app.states[two.label].health.up is False, what="the second broker down")
            await pilot.press("b")
            await until(pilot, lambda: isinstance(app.screen, BrokersScreen), what="the brokers view")
            rows = app.screen.query_one(VirtualTable).rows
            assert [r[1] for r in rows] == ["every broker", "scope-one:0", "scope-two:0", "spare"]
            assert rows[2][3].startswith("DOWN") and rows[3][3] == "not connected"
            await pilot.press("j", "j")  # the broker that is down: its whole error under the table
            await until(pilot, lambda: "the end of this sentence is here" in screen_text(app),
                        what="the whole error")
            await pilot.press("k", "enter")  # only scope-one, in every view
            await until(pilot, lambda: isinstance(app.screen, OverviewScreen), what="back on the overview")
            await until(pilot, lambda: "down.q" not in names(app, 0) + names(app), what="scoped")
            assert "orders" in names(app, 1) and "showing only scope-one" in screen_text(app)
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen), what="the dead letters")
            assert app.scope == one.label and names(app) == ["billing.dlq", "orders.dlq"]
            await pilot.press("b", "G", "enter")  # the profile: connected, then shown alone
            await until(pilot, lambda: "spare" in app.states, what="the profile connected")
            await until(pilot, lambda: isinstance(app.screen, OverviewScreen) and names(app) == ["spare.only"],
                        what="only the profile's queues")
            await pilot.press("b", "g", "enter")  # every broker again
            await until(pilot, lambda: app.scope is None and "down.q" in names(app, 1) and
                        "spare.only" in names(app, 1), what="every broker")
    finally:
        FAKE_BROKERS.pop("spare-profile", None)


# ---- item 11: copying through OSC 52, only when turned on ----------------------------------------------------------
def osc52_app(clipboard: bool) -> QdeckApp:
    app, _broker = demo_app("osc52")
    app.osc52 = clipboard
    return app


@pytest.mark.parametrize("on", [False, True])
async def test_y_copies_a_safe_body_through_osc52_only_when_turned_on(on: bool) -> None:
    hostile = PeekedMessage(position=0, body=b'{"cmd": "rm -rf /\x1b]52;c;ZXZpbA==\x07 \x1b[2J"}', size=43,
                            body_truncated=False, message_id="h-1")
    app = osc52_app(on)
    async with app.run_test(size=SIZE) as pilot:
        written: list[str] = []
        assert app._driver is not None
        original = app._driver.write

        def spy(data: str) -> None:
            written.append(data)
            original(data)

        app._driver.write = spy  # type: ignore[method-assign]
        await app.push_screen(BodyScreen("q", hostile))
        await pilot.press("y")
        await pilot.pause(0.1)
        notices = " ".join(str(n.message) for n in app._notifications)
        osc = [w for w in written if w.startswith("\x1b]52;c;")]
        if not on:
            assert app.clipboard == "" and not osc
            assert "start the console with --clipboard" in notices
            return
        import base64

        assert len(osc) == 1
        copied = base64.b64decode(osc[0][len("\x1b]52;c;"):-1]).decode()
        assert copied == app.clipboard and "rm -rf /" in copied
        assert "\x1b" not in copied and "\x07" not in copied  # pasted into a shell, it carries no escape sequence
        assert "copied the body" in notices


def test_qdeck_console_help_names_the_new_keys_and_flag() -> None:
    run = qdeck("console", "--help")
    assert run.code == 0 and "--clipboard" in run.out


# ---- issue 18: dead-letter actions in the console --------------------------------------------------------------------
def action_app(name: str, writable: bool) -> QdeckApp:
    import dataclasses

    from probes.dlq.memory_store import CONSUMERS, MEMORY
    from probes.dlq.model import Place, Record

    MEMORY[name] = {"work": [], "other": [], "work.dlq": [
        Record(id=f"m-{i}", body=b'{"n": %d}' % i, reason="rejected", origin=Place("queue", "work"))
        for i in range(5)]}
    CONSUMERS[name] = {"work", "other"}
    broker = FakeBroker(queues=[q("work", 0, target="dlx"), q("other", 0), q("work.dlq", 5, consumers=0, dlq=True)])
    target = dataclasses.replace(parse_broker_url(f"memory://{name}"), name=name, allow_write=writable)
    return QdeckApp([target], interval=3600, clock=lambda: FROZEN + 3,
                    probes={target.label: FrozenProbe(target, broker=broker)})


async def dialog_says(pilot, app: QdeckApp, text: str) -> None:  # type: ignore[no-untyped-def]
    await until(pilot, lambda: text in screen_text(app), what=repr(text))


async def test_read_only_broker_gets_the_dry_run_and_no_way_to_act() -> None:
    from console.tui.dlq_action import ActionDialog
    from probes.dlq.engine import Action
    from probes.dlq.memory_store import MEMORY

    app = action_app("dlq-ro", writable=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("d")
            await until(pilot, lambda: names(app) == ["work.dlq"], what="the DLQ")
            assert "R M X need allow_write = true" in screen_text(app)
            await pilot.press("R")  # disabled: nothing opens
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ActionDialog)
            await app.push_screen(ActionDialog(app.targets["dlq-ro"], "work.dlq", Action("redrive")))
            await dialog_says(pilot, app, "would be redriven")
            assert "has no allow_write = true" in screen_text(app)
            await pilot.press("y")
            await pilot.pause(0.2)
            assert len(MEMORY["dlq-ro"]["work.dlq"]) == 5 and MEMORY["dlq-ro"]["work"] == []
    finally:
        MEMORY.pop("dlq-ro", None)


async def test_redrive_move_and_export_from_the_dead_letter_view(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from probes.dlq.memory_store import MEMORY

    monkeypatch.setenv("QDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr("console.tui.peek_marks.screenshot_dir", lambda: tmp_path)
    app = action_app("dlq-rw", writable=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("d")
            await until(pilot, lambda: names(app) == ["work.dlq"], what="the DLQ")
            await pilot.press("E")
            await dialog_says(pilot, app, "y writes every message of work.dlq")
            await pilot.press("y")
            await dialog_says(pilot, app, "selected 5 = exported 5")
            exported = list(tmp_path.glob("qdeck-export-work.dlq-*.jsonl"))
            assert len(exported) == 1 and len(exported[0].read_text().splitlines()) == 6
            await pilot.press("escape")
            await pilot.press("M")
            await dialog_says(pilot, app, "destination queue")
            await pilot.press(*"other", "enter")
            await dialog_says(pilot, app, "would be moved")
            await pilot.press("y")
            await dialog_says(pilot, app, "selected 5 = moved 5")
            assert [r.id for r in MEMORY["dlq-rw"]["other"]] == [f"m-{i}" for i in range(5)]
            await pilot.press("escape")
            MEMORY["dlq-rw"]["work.dlq"] = list(MEMORY["dlq-rw"]["other"])
            MEMORY["dlq-rw"]["other"] = []
            await pilot.press("R")
            await dialog_says(pilot, app, "would be redriven")
            assert MEMORY["dlq-rw"]["work"] == []  # the dry run changed nothing
            await pilot.press("y")
            await dialog_says(pilot, app, "selected 5 = moved 5")
            assert len(MEMORY["dlq-rw"]["work"]) == 5 and MEMORY["dlq-rw"]["work.dlq"] == []
            assert "journal:" in screen_text(app)
    finally:
        MEMORY.pop("dlq-rw", None)
