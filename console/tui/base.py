"""What every console screen shares: the broker health header, the footer, and refreshing on new data."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Label

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
        table.hidden = {"broker"} if len(self.qapp.states) == 1 else set()
        return table

    def on_data_changed(self, message: DataChanged) -> None:
        self.query_one(HealthBar).update_health()
        self.refresh_data()

    def on_screen_resume(self) -> None:
        self.query_one(HealthBar).update_health()
        self.refresh_data()


class TableScreen(BaseScreen):
    """A screen that is one titled table, refilled from the broker states on every change."""

    columns: ClassVar[list[Column]] = []
    caption = ""

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Label(self.caption, classes="section caption")
        yield VirtualTable(self.columns, id=self.name)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.query_one(VirtualTable).focus()
        self.refresh_data()

