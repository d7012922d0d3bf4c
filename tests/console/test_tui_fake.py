"""The console with a fake probe: navigation, sorting, filtering, failure display, the body viewer, and snapshots
of the main screens (pytest-textual-snapshot; update with --snapshot-update after a deliberate layout change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.safe_text import is_binary
from console.tui.body import body_text, hexdump
from console.tui.detail import QueueDetailScreen
from console.tui.state import backoff
from console.tui.table import VirtualTable
from probes.errors import BrokerUnreachable
from tests.console.tui_fixtures import demo_app

SIZE = (130, 32)


def names(app) -> list[str]:
    return [row[1] for row in app.screen.query_one(VirtualTable).rows]


async def test_sort_filter_and_navigation() -> None:
    app, _broker = demo_app("nav")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert names(app) == ["events", "embed.requests", "rerank.requests", "embed.requests.dlq",
                              "evil\\x1b]0;pwned\\x07"]  # depth, largest first; the hostile name escaped
        await pilot.press("r")
        assert names(app)[0] == "evil\\x1b]0;pwned\\x07"
        await pilot.click(VirtualTable, offset=(20, 0))  # the "queue" column title: sort by name
        await pilot.pause(0.1)
        assert names(app) == sorted(names(app))
        await pilot.press("slash", *"*.requests")
        await pilot.pause(0.1)
        assert names(app) == ["embed.requests", "rerank.requests"]
        await pilot.press("enter", "escape")
        assert len(names(app)) == 5
        await pilot.press("l")
        assert app.screen.name == "lag"
        await pilot.press("d")
        assert app.screen.name == "deadletters" and names(app) == ["embed.requests.dlq"]
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, QueueDetailScreen)  # memory:// peeks without asking: nothing changes
        table = app.screen.query_one("#messages", VirtualTable)
        assert [row[1] for row in table.rows] == ["rejected", "expired"]
        assert table.rows[0][2] == "embed.requests" and table.rows[0][3] == "3"
        await pilot.press("escape", "escape")
        assert app.screen.name == "overview"
        await pilot.press("colon")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "CommandPalette"
        await pilot.press("escape", "question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape", "q")
    assert app.return_code == 0


async def test_failure_shows_in_header_and_polling_backs_off() -> None:
    app, broker = demo_app("fail", interval=0.2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        broker.fail_with = BrokerUnreachable("broker unreachable: memory://fail: connection refused")
        state = app.states["memory://fail"]
        while state.health.up is not False:
            await pilot.pause(0.05)
        header = str(app.screen.query_one("#health").render())
        assert "DOWN" in header and "connection refused" in header
        assert names(app)  # the last good rows stay on screen
        broker.fail_with = None
        while state.health.up is not True:
            await pilot.pause(0.05)
        assert "DOWN" not in str(app.screen.query_one("#health").render())
    assert [backoff(2.0, n) for n in range(7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]  # one cap: 60 s


def test_body_viewer_formats() -> None:
    how, text = body_text(b'{"a": [1, 2], "b": "\\u001b[2J"}', 31)
    assert how == "JSON" and '"a": [\n    1,' in text and "\\u001b[2J" in text and "\x1b" not in text
    how, text = body_text(b"\x00\x01binary\xff", 9)
    assert how == "binary, hex" and text.startswith("00000000  00 01 62")
    how, text = body_text(b"plain \x1b[31mred\x1b[0m text\nline 2", 32)
    assert how == "text" and "\\x1b[31mred" in text and "\nline 2" in text
    how, text = body_text(b"x" * 70_000, 1_000_000)
    assert "more bytes not shown" in text and len(text) < 70_000
    assert not is_binary(b"caf\xc3\xa9 \x1b[1m") and is_binary(b"\x00") and is_binary(bytes(range(20)))
    assert hexdump(b"AB") == "00000000  " + "41 42".ljust(48) + " AB"


SCREENS = {"overview": [], "dead-letters": ["d"], "lag": ["l"], "queue-detail": ["enter"],
           "dlq-messages": ["d", "enter"], "body": ["d", "enter", "enter"], "help": ["question_mark"],
           "sorted-in-flight": ["s"], "brokers": ["b"]}
# Every screen at 160×45 and at 80×24 (issue 17 item 4: usable in a small terminal).
SIZES = {"": (160, 45), "-80x24": (80, 24)}


@pytest.mark.parametrize(("keys", "size"),
                         [(keys, size) for _suffix, size in SIZES.items() for keys in SCREENS.values()],
                         ids=[name + suffix for suffix in SIZES for name in SCREENS])
def test_snapshots(snap_compare, keys: list[str], size: tuple[int, int], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "brokers.toml"  # the brokers view lists the profile file's brokers: one, not connected
    config.write_text('[brokers.standby]\nurl = "amqp://ops@rabbit-standby.example:5672/%2F"\n'
                      'description = "the standby cluster"\n')
    monkeypatch.setenv("QDECK_CONFIG", str(config))
    app, _broker = demo_app(f"snap-{'-'.join(keys) or 'overview'}")

    async def settle(pilot) -> None:
        await pilot.pause(0.3)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=settle)
