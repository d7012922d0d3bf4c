"""Issue 17 (console): Esc never quits, sort titles keep their arrow, peek dialogs say the truth before asking,
peek rows are told apart, the palette's screenshot lands somewhere that exists, the cursor starts on the first
row, and time to drain is one format."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from console.tui.app import QdeckApp
from console.tui.confirm import ConfirmPeek
from console.tui.detail import QueueDetailScreen, message_row
from console.tui.health import HealthBar
from console.tui.messages import PeekDone
from console.tui.overview import OverviewScreen
from console.tui.table import VirtualTable
from probes.fake import FakeBroker
from probes.models import BrokerSnapshot, PeekedMessage, PeekResult
from probes.urls import parse_broker_url
from tests.console.test_tui_brokers import until
from tests.console.tui_fixtures import FROZEN, FrozenProbe, demo_app, q, screen_text

SIZE = (130, 32)


def header(app: QdeckApp) -> str:
    table = app.screen.query_one(VirtualTable)
    return "".join(seg.text for seg in table.render_line(0))


# ---- item 1: Esc goes back and never leaves the app ------------------------------------------------------------
async def test_escape_never_quits() -> None:
    app, _broker = demo_app("esc")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await pilot.press("slash", *"tui", "enter", "escape", "escape")  # clears the filter, then nothing
        await pilot.pause(0.1)
        assert app.return_code is None and isinstance(app.screen, OverviewScreen)
        assert len(app.screen.query_one(VirtualTable).rows) == 5
        await pilot.press("colon", "escape", "escape", "escape")
        await pilot.pause(0.1)
        assert app.return_code is None and isinstance(app.screen, OverviewScreen)
        await pilot.press("enter")  # a queue, then Esc back, then Esc again: still there
        await pilot.pause(0.1)
        assert isinstance(app.screen, QueueDetailScreen)
        await pilot.press("escape", "escape", "escape")
        await pilot.pause(0.1)
        assert app.return_code is None and isinstance(app.screen, OverviewScreen)
        await pilot.press("q")  # q on the top view quits
        await pilot.pause(0.1)
    assert app.return_code == 0


async def test_colon_q_quits() -> None:
    app, _broker = demo_app("colon-q")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await pilot.press("colon", "q")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
    assert app.return_code == 0


# ---- item 6: the sort marker stays visible, ▼ = biggest first ----------------------------------------------------
async def test_sort_marker_is_whole_and_points_the_usual_way() -> None:
    app, _broker = demo_app("sort")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert "depth ▼" in header(app)  # numbers: biggest first
        await pilot.press("s")  # in flight, biggest first
        assert "in flight ▼" in header(app) and "…" not in header(app)
        await pilot.press("r")
        assert "in flight ▲" in header(app)
        await pilot.click(VirtualTable, offset=(20, 0))  # the queue-name title: A→Z
        await pilot.pause(0.1)
        assert "queue / topic / stream ▲" in header(app)
        await pilot.press("r")
        assert "queue / topic / stream ▼" in header(app)


# ---- item 7: peek dialogs say the truth before asking ------------------------------------------------------------
class RecordingProbe(FrozenProbe):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.peeks: list[tuple[str, bool]] = []

    async def peek(self, queue: str, limit: int, *, force: bool = False,
                   body_bytes: int | None = None) -> PeekResult:
        self.peeks.append((queue, force))
        return await super().peek(queue, limit, force=force)


def rabbit_like_app(name: str) -> tuple[QdeckApp, RecordingProbe]:
    """The demo broker dressed as RabbitMQ (the console asks before a RabbitMQ peek), with a quorum queue that has
    a delivery limit, a stream queue and a classic queue."""
    broker = FakeBroker(queues=[
        dataclasses.replace(q("work.quorum", 3), queue_type="quorum", delivery_limit=2),
        dataclasses.replace(q("events.stream", 9, kind="stream"), queue_type="stream"),
        dataclasses.replace(q("work.classic", 1), queue_type="classic")],
        messages={"work.quorum": [PeekedMessage(position=0, body=b"a", size=1, body_truncated=False)],
                  "work.classic": [PeekedMessage(position=0, body=b"b", size=1, body_truncated=False)]})
    target = parse_broker_url(f"memory://{name}")
    probe = RecordingProbe(target, broker=broker)
    app = QdeckApp([target], interval=3600.0, clock=lambda: FROZEN + 3, probes={target.label: probe})
    app.states[target.label].kind = "rabbitmq"
    return app, probe


async def peek_key(pilot: Any, app: QdeckApp, queue: str) -> None:
    """Open ``queue``'s detail on the app's one broker and press ``p``, as a user does."""
    await pilot.pause(0.2)
    app.open_queue(next(iter(app.states)), queue)
    await pilot.pause(0.1)
    await pilot.press("p")
    await pilot.pause(0.1)


async def test_stream_says_at_once_it_cannot_be_peeked() -> None:
    app, probe = rabbit_like_app("peek-stream")
    async with app.run_test(size=(160, 32)) as pilot:
        await peek_key(pilot, app, "events.stream")
        assert isinstance(app.screen, QueueDetailScreen), type(app.screen).__name__  # no dialog
        title = str(app.screen.query_one("#messages-title").render())
        assert "stream" in title and "cannot be peeked" in title
        assert probe.peeks == []


async def test_quorum_queue_with_a_delivery_limit_offers_the_forced_peek_only() -> None:
    app, probe = rabbit_like_app("peek-quorum")
    async with app.run_test(size=(160, 32)) as pilot:
        await peek_key(pilot, app, "work.quorum")
        assert isinstance(app.screen, ConfirmPeek)
        shown = screen_text(app)
        assert "P: peek anyway" in shown and "counts as a delivery" in shown
        assert "y: peek" not in shown
        await pilot.press("y")  # not offered, so it does nothing
        await pilot.pause(0.1)
        assert isinstance(app.screen, ConfirmPeek) and probe.peeks == []
        await pilot.press("P")
        await pilot.pause(0.2)
        assert isinstance(app.screen, QueueDetailScreen)
        assert probe.peeks == [("work.quorum", True)]
        assert len(app.screen.messages) == 1


async def test_classic_queue_asks_for_y() -> None:
    app, probe = rabbit_like_app("peek-classic")
    async with app.run_test(size=(160, 32)) as pilot:
        await peek_key(pilot, app, "work.classic")
        assert isinstance(app.screen, ConfirmPeek)
        assert "y: peek" in screen_text(app)
        await pilot.press("y")
        await pilot.pause(0.2)
        assert probe.peeks == [("work.classic", False)]


async def test_a_long_peek_message_wraps() -> None:
    app, _probe = rabbit_like_app("peek-wrap")
    async with app.run_test(size=(160, 32)) as pilot:
        await pilot.pause(0.2)
        app.open_queue("memory://peek-wrap", "work.classic")
        await pilot.pause(0.1)
        error = ("refusing to peek quorum queue 'work.classic': it has a delivery limit of 2 and every peek counts "
                 "as a delivery, so repeated peeks dead-letter or drop its messages; the end of this sentence is "
                 "here")
        app.screen.post_message(PeekDone("memory://peek-wrap", "work.classic", None, error))
        await pilot.pause(0.1)
        assert "the end of this sentence is here" in " ".join(screen_text(app).split())


# ---- item 8: peek rows are told apart ------------------------------------------------------------------------------
def test_kafka_rows_show_partition_and_offset() -> None:
    rows = [message_row(PeekedMessage(position=i, body=b"x", size=1, body_truncated=False, partition=p, offset=0,
                                      message_id=f"{p}:0 · key k")) for i, p in enumerate((0, 1))]
    assert [r[0] for r in rows] == ["0:0", "1:0"]


async def test_redis_entry_ids_are_shown_whole() -> None:
    ids = ["1796055123456-0", "1796055123456-1", "1796055123999-12"]
    broker = FakeBroker(queues=[q("jobs:stream", 3, kind="stream")], messages={"jobs:stream": [
        PeekedMessage(position=i, body=b"x", size=1, body_truncated=False, message_id=eid)
        for i, eid in enumerate(ids)]})
    target = parse_broker_url("memory://ids")
    app = QdeckApp([target], interval=3600.0, clock=lambda: FROZEN + 3, probes={target.label: FrozenProbe(target,
                                                                                                    broker=broker)})
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause(0.2)
        app.open_queue(target.label, "jobs:stream")
        await pilot.pause(0.1)
        await pilot.press("p")
        await pilot.pause(0.2)
        table = app.screen.query_one("#messages", VirtualTable)
        lines = ["".join(seg.text for seg in table.render_line(y)) for y in (1, 2, 3)]
        for eid, line in zip(ids, lines, strict=True):
            assert line.split()[0] == eid, line


# ---- item 10: screenshot, first row, one drain format ------------------------------------------------------------
async def test_palette_screenshot_lands_in_a_directory_that_exists(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"  # a server's home: no ~/Downloads
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(work)
    app, _broker = demo_app("shot")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await pilot.press("colon", *"screenshot")
        await pilot.pause(0.3)
        await pilot.press("enter")
        for _ in range(40):
            await pilot.pause(0.05)
            if app._notifications:
                break
        notes = [n.message for n in app._notifications]
    saved = list(work.glob("*.svg"))
    assert len(saved) == 1, (notes, saved)
    assert any(str(saved[0].resolve()) in note for note in notes), notes
    assert "<svg" in saved[0].read_text(encoding="utf-8")


class GatedProbe(FrozenProbe):
    """Answers its first snapshot only once ``gate`` is set (a broker slower than the other)."""

    def __init__(self, *args: object, gate: asyncio.Event, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = gate

    async def snapshot(self) -> BrokerSnapshot:
        await self.gate.wait()
        return await super().snapshot()


async def test_cursor_starts_on_the_first_row_with_several_brokers() -> None:
    gate = asyncio.Event()
    small = FakeBroker(queues=[q("a.small", 1), q("b.small", 2)])
    big = FakeBroker(queues=[q("x.big", 500), q("y.big", 900)])
    t1, t2 = parse_broker_url("memory://small"), parse_broker_url("memory://big")
    app = QdeckApp([t1, t2], interval=3600.0, clock=lambda: FROZEN + 3,
                   probes={t1.label: FrozenProbe(t1, broker=small), t2.label: GatedProbe(t2, broker=big, gate=gate)})
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(VirtualTable)
        while len(table.rows) < 2:
            await pilot.pause(0.05)
        gate.set()
        while len(table.rows) < 4:
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        assert [r[1] for r in table.rows][:2] == ["y.big", "x.big"]
        assert table.cursor == 0
        assert "y.big" in str(app.screen.query_one("#spark-label").render())  # the sparkline follows the cursor


def test_one_drain_format_for_the_cli_and_the_console() -> None:
    # already one function before issue 17 (commit 080c064 removed the console's own "∞"): kept so it stays one
    from console import cmd_lag, render
    from console.tui import lag

    assert lag.drain_text is render.drain_text and cmd_lag.drain_text is render.drain_text


def test_quorum_dialog_snapshot(snap_compare) -> None:
    app, _probe = rabbit_like_app("peek-dialog")

    async def settle(pilot) -> None:
        await pilot.pause(0.3)
        app.open_queue("memory://peek-dialog", "work.quorum")
        await pilot.pause(0.2)
        await pilot.press("p")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(160, 32), run_before=settle)


async def test_vim_keys_move_the_cursor() -> None:
    """Issue 17 item 11: j k g G and Ctrl-D Ctrl-U move as ↓ ↑ Home End and half a page do."""
    app, _broker = demo_app("vim")
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(VirtualTable)
        await until(pilot, lambda: len(table.rows) == 5, what="the rows")
        await pilot.press("j", "j")
        assert table.cursor == 2
        await pilot.press("k")
        assert table.cursor == 1
        await pilot.press("G")
        assert table.cursor == 4
        await pilot.press("g")
        assert table.cursor == 0
        await pilot.press("ctrl+d")
        assert table.cursor == 4  # half of a 20-row table: past the last of 5 rows, so the last
        await pilot.press("ctrl+u")
        assert table.cursor == 0


async def test_pause_refresh_now_and_the_interval_at_run_time() -> None:
    """Issue 17 item 11: f pauses polling (the header says so) and resumes it with a poll of every broker; Ctrl-R
    polls now whatever the interval; + and - change the interval, shown in the header."""
    app, _broker = demo_app("refresh", interval=0.2)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.polls >= 2, what="polling at 0.2 s")
        await pilot.press("f")
        assert app.paused and "paused" in str(app.screen.query_one(HealthBar).render())
        await pilot.pause(0.5)  # a poll in flight may still land
        frozen = app.polls
        await pilot.pause(1.0)
        assert app.polls == frozen  # five intervals, no poll
        await pilot.press("ctrl+r")
        await pilot.pause(0.3)
        assert app.polls == frozen  # paused: refresh waits for resume
        await pilot.press("f")
        await until(pilot, lambda: app.polls > frozen, timeout=2, what="a poll on resume")
        assert not app.paused and "every 0.2s" in str(app.screen.query_one(HealthBar).render())
        for _ in range(12):
            await pilot.press("plus")
        assert app.interval == 300.0  # bounded
        await pilot.pause(0.3)
        slow = app.polls
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.polls > slow, timeout=2, what="Ctrl-R polling at once")
        await pilot.press("minus")
        assert app.interval == 150.0 and "every 150s" in str(app.screen.query_one(HealthBar).render())


async def test_w_saves_the_whole_message_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 item 11: in the body viewer `w` writes the message (every header, its deaths, the body — base64 when
    binary) as `qdeck dlq peek --json` writes it, and the notification gives the full path."""
    import json

    import console.tui.body as body
    from console.tui.body import BodyScreen

    monkeypatch.setattr(body, "screenshot_dir", lambda: tmp_path)
    app, _broker = demo_app("save")
    notes: list[str] = []
    async with app.run_test(size=(120, 30)) as pilot:
        monkeypatch.setattr(app, "notify", lambda message, **_kw: notes.append(message))
        await pilot.pause(0.3)
        for key in ("d", "enter"):
            await pilot.press(key)
            await pilot.pause(0.3)
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen) and len(app.screen.messages) == 2,
                    what="the DLQ's messages")
        await pilot.press("down", "enter")  # the second message: binary
        await until(pilot, lambda: isinstance(app.screen, BodyScreen), what="the body viewer")
        await pilot.press("w")
        await until(pilot, lambda: bool(notes), what="the notification")
    [saved] = list(tmp_path.iterdir())
    assert notes == [f"saved to {saved}"]
    doc = json.loads(saved.read_text())
    assert doc["queue"] == "embed.requests.dlq"
    message = doc["message"]
    # 40 control bytes are valid UTF-8: text, every one a \u escape in the file (nothing raw reaches a terminal)
    assert message["body_text"].encode() == bytes(range(40)) and message["body_base64"] is None
    assert "\\u0000" in saved.read_text() and "\x00" not in saved.read_text()
    assert message["message_id"] == "m-2" and message["deaths"][0]["reason"] == "expired"


@pytest.mark.parametrize(("size", "shown", "gone"), [
    ((80, 24), ["queue / topic / stream", "depth", "consumers", "lag", "dead letters"], ["in/s", "out/s", "type"]),
    ((160, 45), ["queue / topic / stream", "type", "depth", "in flight", "consumers", "in/s", "out/s", "lag",
                 "dead letters"], []),
])
async def test_columns_give_way_by_priority_on_a_narrow_screen(size: tuple[int, int], shown: list[str],
                                                                gone: list[str]) -> None:
    """Issue 17 item 4: at 80 columns name, depth, consumers, lag and the dead-letter marker stay on screen (rates
    and the type give way first) and nothing scrolls sideways; at 160 every column is there."""
    app, _broker = demo_app("narrow")
    async with app.run_test(size=size) as pilot:
        table = app.screen.query_one(VirtualTable)
        await until(pilot, lambda: len(table.rows) == 5, what="the rows")
        await pilot.pause(0.2)
        header = str(table.render_line(0).text)
        assert all(title in header for title in shown), header
        assert not any(f" {title} " in f" {header} " for title in gone), header
        assert table.virtual_size.width <= size[0]
        assert ("in/s" in table.narrowed) == bool(gone)
