"""The overview: every queue, topic, stream and list across brokers, sortable, filterable, with a depth sparkline."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import ClassVar, overload

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Label, Sparkline, Static

from console.health.model import Level
from console.queue_filter import NUMERIC, Only, select_entries
from console.render import fmt_rate, snapshot_notes, type_text
from console.safe_text import safe
from console.tui.base import FilteredScreen
from console.tui.messages import DataChanged
from console.tui.table import Column, Row, VirtualTable
from probes.models import QueueStats

# priority: what gives way on a narrow screen first (highest); name, depth, consumers and lag stay at 80 columns
COLUMNS = [Column("broker", "broker", 0, max_width=28, cut_middle=True, priority=5),
           Column("name", "queue / topic / stream", 0, max_width=40),
           Column("kind", "type", 7, priority=7), Column("depth", "depth", 10, right=True, priority=1),
           Column("in_flight", "in flight", 9, right=True, priority=6),
           Column("consumers", "consumers", 9, right=True, priority=2),
           Column("publish_rate", "in/s", 8, right=True, priority=8),
           Column("deliver_rate", "out/s", 8, right=True, priority=9),
           Column("lag", "lag", 10, right=True, priority=3), Column("dlq", "dead letters", 0, max_width=30, priority=4),
           Column("health", "health", 6)]  # the worst health finding about the row, WARN or worse (h lists them)
SORTABLE = [c.key for c in COLUMNS if c.key != "health"]
NOTES_SHOWN = 3  # snapshot notes under the table; the rest are counted
QUICK: list[str | None] = [None, *Only]  # what ``!`` steps through (the CLI's ``queues --only``)
QUICK_TEXT: dict[str | None, str] = {None: "every queue", Only.dead_letters: "dead-letter queues holding messages",
              Only.lagging: "queues with a backlog", Only.no_consumers: "queues with messages and no consumer"}


def queue_row(broker: str, q: QueueStats, level: Level | None = None) -> Row:
    dlq = "DLQ" if q.is_dead_letter else (f"→ {safe(q.dead_letter_target, 40)}" if q.dead_letter_target else "")
    return (safe(broker, 60), safe(q.name, 120), safe(type_text(q), 12), f"{q.depth:,}", f"{q.in_flight:,}",
            f"{q.consumers:,}", fmt_rate(q.publish_rate), fmt_rate(q.deliver_rate),
            f"{q.lag:,}" if q.lag is not None else "-", dlq, "" if level is None else str(level))


class QueueRows(Sequence[Row]):
    """Rows formatted only when the table draws them (a screenful, not 10,000); ``shown``: each broker's cell
    (its label, marked while stale)."""

    def __init__(self, entries: list[tuple[str, QueueStats]], shown: dict[str, str] | None = None,
                 levels: Mapping[str, Mapping[str, Level]] | None = None) -> None:
        self.entries = entries
        self.shown = shown or {}
        self.levels = levels or {}  # broker label -> queue name -> its worst health finding (WARN or worse)

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, i: int) -> Row: ...

    @overload
    def __getitem__(self, i: slice) -> list[Row]: ...

    def __getitem__(self, i: int | slice) -> Row | list[Row]:
        shown, levels = self.shown, self.levels
        if isinstance(i, slice):
            return [queue_row(shown.get(label, label), q, levels.get(label, {}).get(q.name))
                    for label, q in self.entries[i]]
        label, q = self.entries[i]
        return queue_row(shown.get(label, label), q, levels.get(label, {}).get(q.name))


class EntryKeys(Sequence[tuple[str, str]]):
    def __init__(self, entries: list[tuple[str, QueueStats]]) -> None:
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, i: int) -> tuple[str, str]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, str]]: ...

    def __getitem__(self, i: int | slice) -> tuple[str, str] | list[tuple[str, str]]:
        if isinstance(i, slice):
            return [(label, q.name) for label, q in self.entries[i]]
        label, q = self.entries[i]
        return label, q.name

    def index(self, key: object, start: int = 0, stop: int | None = None) -> int:
        for i, (label, q) in enumerate(self.entries):
            if (label, q.name) == key:
                return i
        raise ValueError(key)


class OverviewScreen(FilteredScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("exclamation_mark", "quick", "only…", show=False),
        Binding("enter", "open", "open", show=False),
    ]
    sortable = SORTABLE
    numeric = NUMERIC
    default_sort = "depth"

    def __init__(self) -> None:
        super().__init__(name="overview")
        self.quick: str | None = None  # the quick filter (``!`` cycles: QUICK)
        self.last_update_ms: float | None = None
        self.last_latency_ms: float | None = None
        self._notes_shown: list[str] | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield from self.compose_filter()
        yield VirtualTable(COLUMNS, id="queues")
        yield Static("", id="notes")
        with Horizontal(id="spark-row"):
            yield Label("", id="spark-label")
            yield Sparkline([], id="spark")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.query_one(VirtualTable).focus()
        self.refresh_data()

    # -- data ----------------------------------------------------------------------------------------------------

    def entries(self) -> list[tuple[str, QueueStats]]:
        return select_entries(((label, q) for label, st in self.qapp.shown_states().items() for q in st.queues()),
                              self.pattern, self.sort_column, self.sort_reverse, self.quick)

    def refresh_data(self) -> None:
        t0 = time.perf_counter()
        entries = self.entries()
        now = self.qapp.clock()
        states = self.qapp.shown_states()
        shown = {label: st.shown_label(now) for label, st in states.items()}
        stale_brokers = {label for label, st in states.items() if st.stale_s(now) is not None}
        stale = {i for i, (label, _q) in enumerate(entries) if label in stale_brokers} if stale_brokers else set()
        levels = {label: st.queue_levels for label, st in states.items()}
        alerts: set[int] = set()
        warned: set[int] = set()
        name_w = dlq_w = 0
        judged = any(levels.values())
        for i, (label, q) in enumerate(entries):  # one pass over what can be 10,000 rows, every poll
            if q.is_dead_letter and q.depth > 0:
                alerts.add(i)
            if len(q.name) > name_w:
                name_w = len(q.name)
            if q.dead_letter_target is not None and len(q.dead_letter_target) > dlq_w:
                dlq_w = len(q.dead_letter_target)
            if judged:  # a health finding, WARN or worse: CRIT rows in red, the others in yellow
                level = levels[label].get(q.name)
                if level is Level.CRIT:
                    alerts.add(i)
                elif level is not None:
                    warned.add(i)
        widest = {"broker": max((len(text) for text in shown.values()), default=0), "name": name_w,
                  "dlq": dlq_w + 2 if entries else 3}
        table = self.sorted_table()
        table.set_rows(EntryKeys(entries), QueueRows(entries, shown, levels), alerts, widest, stale, warned)
        self._notes()
        self.last_update_ms = (time.perf_counter() - t0) * 1000
        self._spark(table.current_key)

    def _notes(self) -> None:
        """What the snapshots say besides their rows (as the CLI prints them under its table): a missing or
        unroutable dead-letter exchange, a scan cut short; the first NOTES_SHOWN, then how many more."""
        states = self.qapp.shown_states()
        several = len(states) > 1
        notes = [f"! {safe(st.short or label, 40) + ': ' if several else ''}{safe(note, 300)}"
                 for label, st in states.items() if st.snapshot is not None
                 for note in snapshot_notes(st.snapshot)]
        shown = notes[:NOTES_SHOWN]
        if len(notes) > NOTES_SHOWN:
            shown.append(f"! … and {len(notes) - NOTES_SHOWN} more notes ('qdeck queues' lists them all)")
        if shown == self._notes_shown:  # unchanged: no new layout (each repaints the whole screen)
            return
        self._notes_shown = shown
        box = self.query_one("#notes", Static)
        box.update(Text("\n".join(shown), style="yellow"))
        box.display = bool(shown)

    def on_data_changed(self, message: DataChanged) -> None:
        """Redraw, then note how long after the snapshot's arrival the rows were replaced. ``prevent_default``:
        Textual would otherwise call ``BaseScreen.on_data_changed`` too, replacing every row a second time."""
        super().on_data_changed(message)
        self.last_latency_ms = (time.perf_counter() - message.arrived) * 1000
        message.prevent_default()

    def _spark(self, key: tuple[str, str] | None) -> None:
        label = self.query_one("#spark-label", Label)
        spark = self.query_one("#spark", Sparkline)
        if key is None:
            what = f" among {QUICK_TEXT[self.quick]}" if self.quick else ""
            label.update("no queues" + (f" match {safe(self.pattern, 40)!r}" if self.pattern else " yet" if not what
                                        else "") + what)
            spark.data = []
            return
        st = self.qapp.states.get(key[0])
        hist = st.history.get(key[1]) if st else None
        points = list(hist.depth) if hist else []
        label.update(f"depth {safe(key[1], 40)}: {int(points[-1]) if points else 0:,} now, "
                     f"{int(min(points)) if points else 0:,}–{int(max(points)) if points else 0:,} "
                     f"over {len(points)} polls ")
        spark.data = points or [0.0]

    def on_virtual_table_highlighted(self, message: VirtualTable.Highlighted) -> None:
        self._spark(message.key)

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.key is not None:
            self.open_detail(*message.key)

    # -- keys ----------------------------------------------------------------------------------------------------

    def action_quick(self) -> None:
        """!: every queue → dead-letter queues holding messages → lagging → no consumers → every queue."""
        i = QUICK.index(self.quick)
        self.quick = QUICK[(i + 1) % len(QUICK)]
        self.notify(f"showing {QUICK_TEXT[self.quick]} (! for the next)", timeout=3)
        self.refresh_data()

    def action_open(self) -> None:
        self.query_one(VirtualTable).action_open()
