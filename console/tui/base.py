"""What every console screen shares: the broker health header, the footer, and refreshing on new data."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, Label

from console.safe_text import safe
from console.tui.health import HealthBar
from console.tui.messages import DataChanged, OpenQueue
from console.tui.table import Column, VirtualTable

if TYPE_CHECKING:
    from console.tui.protocol import ConsoleApp


class BaseScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "escape", "back", show=False),
        Binding("q", "app.back_or_quit", "back/quit"),
    ]

    @property
    def qapp(self) -> ConsoleApp:
        return cast("ConsoleApp", self.app)

    def compose_header(self) -> ComposeResult:
        yield HealthBar(self.qapp.states, self.qapp.clock, self.qapp.poll_status)

    def compose_footer(self) -> ComposeResult:
        yield Footer(compact=True)

    def action_escape(self) -> None:
        self.qapp.go_back()

    def refresh_data(self) -> None:
        """Redraw from ``self.qapp.states``; screens override."""

    def open_detail(self, broker: str, queue: str, *, auto_peek: bool = False) -> None:
        """Ask the app for a queue's detail (it routes ``OpenQueue``; no screen imports another)."""
        self.post_message(OpenQueue(broker, queue, auto_peek))

    def broker_column(self, table: VirtualTable) -> VirtualTable:
        """With one broker its column says nothing (the header names it): hidden; with several it is shown."""
        table.hidden = {"broker"} if len(self.qapp.shown_states()) == 1 else set()
        return table

    def on_data_changed(self, message: DataChanged) -> None:
        self.query_one(HealthBar).update_health()
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self.query_one(HealthBar).update_health()
        self.refresh_data()


class FilteredScreen(BaseScreen):
    """A view whose rows the user filters (``/``: a substring or a glob, ``queue_filter.name_matches``) and sorts
    (``s`` the next column, ``r`` reverse, or a click on a column title): the overview, dead letters and lag. The
    screens keep the filter, the sort and their rows; ``refresh_data`` selects with the CLI's own functions."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter"),
        Binding("s", "sort_next", "sort"),
        Binding("r", "reverse", "reverse"),
    ]
    sortable: ClassVar[list[str]] = []  # column keys ``s`` steps through (and a click on their title sorts by)
    numeric: ClassVar[frozenset[str]] = frozenset()  # sorted largest first; the others A→Z
    default_sort = ""
    filter_hint = "filter: substring, or a glob like embed.*  (Enter keeps it, Esc clears)"

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.pattern = ""
        self.sort_column = self.default_sort
        self.sort_reverse = False  # numbers: largest first unless reversed; names A→Z unless reversed

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Sorting keys are off (and out of the footer) in a view whose order is fixed."""
        return bool(self.sortable) or action not in ("sort_next", "reverse")

    def compose_filter(self) -> ComposeResult:
        box = Input(placeholder=self.filter_hint, id="filter")
        box.display = False
        yield box

    @property
    def descending(self) -> bool:
        """Whether the rows run biggest first (the title's ▼)."""
        return (self.sort_column in self.numeric) != self.sort_reverse

    def sorted_table(self) -> VirtualTable:
        """The table, with its sort marker set and the broker column shown only with several brokers."""
        table = self.broker_column(self.query_one(VirtualTable))
        table.sort_column, table.sort_descending = self.sort_column, self.descending
        return table

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.pattern = event.value.strip()
        self.refresh_data()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#filter", Input).display = bool(self.pattern)
        self.query_one(VirtualTable).focus()

    def action_escape(self) -> None:
        """Esc clears the filter first; then it goes back."""
        box = self.query_one("#filter", Input)
        if box.has_focus or self.pattern:
            box.value = ""
            box.display = False
            self.pattern = ""
            self.refresh_data()
            self.query_one(VirtualTable).focus()
            return
        super().action_escape()

    def action_sort_next(self) -> None:
        if not self.sortable:
            return
        i = self.sortable.index(self.sort_column) if self.sort_column in self.sortable else -1
        self.sort_column, self.sort_reverse = self.sortable[(i + 1) % len(self.sortable)], False
        self.refresh_data()

    def action_reverse(self) -> None:
        if not self.sortable:
            return
        self.sort_reverse = not self.sort_reverse
        self.refresh_data()

    def on_virtual_table_sorted(self, message: VirtualTable.Sorted) -> None:
        if message.column not in self.sortable:
            return
        if message.column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = message.column, False
        self.refresh_data()

    def filter_note(self, shown: int, total: int) -> str:
        """What the caption adds while a filter hides rows."""
        return f"  ·  {shown:,} of {total:,} match {safe(self.pattern, 40)!r} (Esc clears)" if self.pattern else ""


class TableScreen(FilteredScreen):
    """A screen that is one titled, filterable, sortable table, refilled from the broker states on every change."""

    columns: ClassVar[list[Column]] = []
    caption = ""

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Label(self.caption, classes="section caption", id="caption")
        yield from self.compose_filter()
        yield VirtualTable(self.columns, id=self.name)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.query_one(VirtualTable).focus()
        self.refresh_data()

    def set_caption(self, shown: int, total: int, extra: str = "") -> None:
        self.query_one("#caption", Label).update(self.caption + self.filter_note(shown, total) + extra)

