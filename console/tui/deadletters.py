"""Dead letters across brokers: each DLQ with its count and the queues that feed it; Enter shows its messages."""

from __future__ import annotations

from typing import ClassVar, cast

from textual.binding import Binding, BindingType

from console.queue_filter import DeadLetterSort, dead_letter_queues, select_dead_letters
from console.safe_text import safe
from console.tui.base import TableScreen
from console.tui.dlq_action import ActionDialog, writable
from console.tui.peek_marks import export_path
from console.tui.table import Column, VirtualTable
from probes.dlq.engine import Action, ActionKind
from probes.urls import BrokerTarget

COLUMNS = [Column("broker", "broker", 0, max_width=28, cut_middle=True, priority=3),
           Column("name", "dead-letter queue", 0, max_width=40),
           Column("kind", "kind", 6, priority=4), Column("depth", "messages", 10, right=True, priority=1),
           Column("feeders", "fed by", 0, max_width=60, priority=2)]


class DeadLettersScreen(TableScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("R", "act('redrive')", "redrive"),
        Binding("M", "act('move')", "move"),
        Binding("X", "act('purge')", "purge"),
        Binding("E", "act('export')", "export"),
    ]
    columns = COLUMNS
    caption = "dead-letter queues — Enter shows their messages (reason, original queue, deaths)"
    filter_hint = "filter: a dead-letter queue's name or a queue that feeds it; substring or glob (Esc clears)"
    sortable: ClassVar[list[str]] = [str(s) for s in DeadLetterSort]
    numeric = frozenset({"depth"})
    default_sort = "depth"

    def __init__(self) -> None:
        super().__init__(name="deadletters")

    def refresh_data(self) -> None:
        keys: list[object] = []
        rows: list[tuple[str, ...]] = []
        alerts: set[int] = set()
        stale: set[int] = set()
        now = self.qapp.clock()
        states = self.qapp.shown_states()
        every, feeders = dead_letter_queues((label, q) for label, st in states.items() for q in st.queues())
        dlqs = select_dead_letters(every, feeders, self.pattern, self.sort_column, self.sort_reverse)
        for label, q in dlqs:
            if q.depth + q.in_flight:
                alerts.add(len(rows))
            if states[label].stale_s(now) is not None:
                stale.add(len(rows))
            keys.append((label, q.name))
            rows.append((safe(states[label].shown_label(now), 60), safe(q.name, 120), q.kind,
                         f"{q.depth + q.in_flight:,}",
                         ", ".join(safe(f, 40) for f in feeders.get((label, q.name), [])) or "-"))
        self.sorted_table().set_rows(keys, rows, alerts, stale=stale)
        read_only = sorted(safe(states[label].short or label, 40) for label in states
                           if label in self.qapp.targets and not writable(self.qapp.targets[label]))
        self.set_caption(len(dlqs), len(every), f"  ·  read-only ({', '.join(read_only)}): R M X need "
                                                 "allow_write = true in the profile" if read_only else "")
        self.refresh_bindings()

    def current_target(self) -> tuple[BrokerTarget, str] | None:
        key = self.query_one(VirtualTable).current_key
        if not isinstance(key, tuple):
            return None
        label, queue = key
        target = self.qapp.targets.get(label)
        return (target, queue) if target is not None else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """R, M and X are shown disabled on a broker that is read-only for qdeck (the caption says why)."""
        if action == "act":
            chosen = self.current_target()
            if chosen is None:
                return False
            return True if (parameters and parameters[0] == "export") or writable(chosen[0]) else None
        return super().check_action(action, parameters)

    def on_virtual_table_highlighted(self, message: VirtualTable.Highlighted) -> None:
        self.refresh_bindings()

    def action_act(self, kind: str) -> None:
        """R redrive, M move, X purge, E export: the dialog with the dry run first (console/tui/dlq_action.py)."""
        chosen = self.current_target()
        if chosen is None:
            return
        target, queue = chosen
        export_to = export_path(queue) if kind == "export" else None
        self.app.push_screen(ActionDialog(target, queue, Action(cast("ActionKind", kind)), export_to=export_to))

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.key is not None:
            broker, queue = message.key
            # RabbitMQ asks first (its peek requeues); the others peek without side effects, so straight away.
            self.open_detail(broker, queue, auto_peek=self.qapp.states[broker].kind != "rabbitmq")
