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
    ("", "o / d / l / b", "overview / dead letters / lag / brokers (each keeps its filter, sort and cursor)"),
    ("", "h", "health: the check rules' findings per broker, worst first (qdeck console --rules FILE)"),
    ("", "L", "the load-run view: a load run beside its request queue (your newest run, or qdeck console --run)"),
    ("", "?", "this help"),
    ("", "Esc", "back (never quits)"),
    ("", "q", "back; on the overview, quit"),
    ("", "↑ ↓ PgUp PgDn Home End", "move; Enter (or a second click) opens"),
    ("", "j k g G, Ctrl-D Ctrl-U", "the same, vim's way: down, up, top, bottom, half a page"),
    ("", "f, Ctrl-R", "pause / resume polling, poll every broker now"),
    ("", "+ / -", "poll half / twice as often (0.5 s to 5 min)"),
    ("lists", "/", "filter (substring, or a glob like embed.*); Esc clears"),
    ("", "s, r", "sort by the next column, reverse (or click a column title); ▼ biggest first"),
    ("overview", "!", "only dead-letter queues with messages → lagging → no consumers → all"),
    ("health", "a, Enter", "the OK findings too (each rule's status); open the finding's queue"),
    ("brokers", "Enter", "show only this broker in every view (connects a profile); 'every broker' undoes it"),
    ("queue", "p", "peek messages (RabbitMQ asks first: its peek requeues them)"),
    ("", "P", "peek a quorum queue that has a delivery limit anyway"),
    ("", "] / [", "next / previous page of messages (the title says which of how many)"),
    ("", "r", "messages newest first / oldest first"),
    ("", "i", "Redis stream: a group's pending entries (idle, deliveries); again: the next group"),
    ("", "c, Tab", "refresh consumers, move between tables"),
    ("", "space, /, *", "mark a message (again: unmark); filter the page (id, reason, queue, body); mark all shown"),
    ("", "R M X E", "redrive / move / delete / export the marked messages, or the whole queue (X: purge); dry run "
                    "first; R M X need allow_write"),
    ("load run", "n", "start qdeck load run from a plan file (TOML, as --plan); the view follows it"),
    ("", "S", "stop the run started here (as Ctrl-C: it writes its files; again: at once)"),
    ("", "L", "open your newest run"),
    ("message", "w", "save it (headers, deaths, whole body) as JSON; the notice says where"),
    ("", "y", "copy the body through OSC 52 (only with qdeck console --clipboard)"),
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
            yield Static("The console changes nothing unless you ask: a RabbitMQ peek requeues (after you confirm); "
                         "R M X show a dry run and act on y, only on a broker whose profile says allow_write = true "
                         "(qdeck console --read-only turns both off). Esc closes this.")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
