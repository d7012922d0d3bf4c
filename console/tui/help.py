"""``?``: the keys."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("everywhere", ":", "command palette: jump to a view or a queue"),
    ("", "o / d / l", "overview / dead letters / lag"),
    ("", "?", "this help"),
    ("", "Esc", "back (never quits)"),
    ("", "q", "back; on the overview, quit"),
    ("", "↑ ↓ PgUp PgDn Home End", "move; Enter (or a second click) opens"),
    ("", "j k g G, Ctrl-D Ctrl-U", "the same, vim's way: down, up, top, bottom, half a page"),
    ("", "f, Ctrl-R", "pause / resume polling, poll every broker now"),
    ("", "+ / -", "poll half / twice as often (0.5 s to 5 min)"),
    ("overview", "/", "filter (substring, or a glob like embed.*); Esc clears"),
    ("", "s, r", "sort by the next column, reverse (or click a column title)"),
    ("", "!", "only dead-letter queues with messages → lagging → no consumers → all"),
    ("queue", "p", "peek messages (RabbitMQ asks first: its peek requeues them)"),
    ("", "P", "peek a quorum queue that has a delivery limit anyway"),
    ("", "c, Tab", "refresh consumers, move between tables"),
    ("message", "w", "save it (headers, deaths, whole body) as JSON; the notice says where"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        t = Table(title="qdeck console keys", show_edge=False, title_style="bold")
        for col in ("where", "keys", "does"):
            t.add_column(col)
        for row in KEYS:
            t.add_row(*row)
        with VerticalScroll(id="help"):
            yield Static(t)
            yield Static("read-only: the console never changes broker state, except that a RabbitMQ peek requeues "
                         "(after you confirm). Esc closes this.")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
