"""The health panel (``h``): the health rules' findings per broker — what ``qdeck check`` judges, after every poll.

Each broker is judged by the rules (``console.health``; ``qdeck console --rules FILE``, else the built-in
defaults) over a window of its last minute of polls, so the trend rules (lag growing, DLQ growing) see a trend. The
table lists the findings at WARN or worse, worst first (``a``: the OK ones too, each rule's status per queue); the
caption counts them per broker. A broker whose polls fail is UNKNOWN (unreachable), its other findings those of its
last good poll, drawn dim. Enter opens the queue a finding is about. The overview's ``health`` column shows each
queue's worst finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from textual.binding import Binding, BindingType

from console.health.catalog import RULES, fmt_figure
from console.health.model import Finding, Level, worst
from console.health.report import counts, ordered
from console.queue_filter import name_matches
from console.safe_text import safe
from console.tui.base import TableScreen
from console.tui.state import BrokerState
from console.tui.table import Column, VirtualTable

COLUMNS = [Column("level", "level", 7), Column("broker", "broker", 0, max_width=28, cut_middle=True, priority=4),
           Column("queue", "queue / topic / stream", 0, max_width=36),
           Column("group", "group", 0, max_width=24, priority=3), Column("rule", "rule", 0, max_width=28, priority=2),
           Column("value", "value", 10, right=True, priority=5),
           Column("threshold", "threshold", 10, right=True, priority=6),
           Column("summary", "summary", 0, max_width=80, priority=1)]


def _figure(f: Finding, value: float | None) -> str:
    if value is None:
        return "-"
    info = RULES.get(f.rule)
    return fmt_figure(value, info.unit if info is not None else "messages")


def broker_line(label: str, st: BrokerState) -> str:
    """``prod: 1 CRIT, 2 WARN, 40 OK``, or ``prod: not polled yet``."""
    found = st.health_findings()
    if not found:
        return f"{safe(st.short or label, 40)}: " + ("not polled yet" if st.health.up is None else "nothing to judge")
    n = counts(found)
    said = ", ".join(f"{n[lv]} {lv}" for lv in (Level.CRIT, Level.UNKNOWN, Level.WARN, Level.OK) if n[lv])
    return f"{safe(st.short or label, 40)}: {worst(found)} ({said})"


class HealthPanelScreen(TableScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("a", "toggle_ok", "OK ones too")]
    columns = COLUMNS
    filter_hint = "filter: a queue, group, rule or broker name; substring or glob (Esc clears)"

    def __init__(self) -> None:
        super().__init__(name="findings")
        self.show_ok = False

    def findings(self, states: Mapping[str, BrokerState]) -> list[tuple[str, Finding]]:
        every = [(label, f) for label, st in states.items() for f in st.health_findings()]
        by_finding = {id(f): label for label, f in every}
        chosen = [f for _l, f in every if (self.show_ok or f.level is not Level.OK)
                  and (not self.pattern or any(name_matches(text, self.pattern)
                                               for text in (f.queue or "", f.group or "", f.rule, f.broker)))]
        return [(by_finding[id(f)], f) for f in ordered(chosen)]

    def refresh_data(self) -> None:
        states = self.qapp.shown_states()
        now = self.qapp.clock()
        shown = {label: st.shown_label(now) for label, st in states.items()}
        stale = {label for label, st in states.items() if st.stale_s(now) is not None}
        rows: list[tuple[str, ...]] = []
        keys: list[tuple[str, str | None]] = []
        alerts: set[int] = set()
        warned: set[int] = set()
        old: set[int] = set()
        chosen = self.findings(states)
        for label, f in chosen:
            i = len(rows)
            if f.level is Level.CRIT:
                alerts.add(i)
            elif f.level is not Level.OK:
                warned.add(i)
            if label in stale and f.rule != "unreachable":
                old.add(i)
            keys.append((label, f.queue))
            rows.append((str(f.level), safe(shown[label], 60), safe(f.queue or "-", 120), safe(f.group or "-", 60),
                         safe(f.rule, 40), _figure(f, f.value), _figure(f, f.threshold), safe(f.summary, 300)))
        table = self.broker_column(self.query_one(VirtualTable))
        table.set_rows(keys, rows, alerts, stale=old, warned=warned)
        total = sum(len(st.health_findings()) for st in states.values())
        rules = self.qapp.states[next(iter(self.qapp.states))].rules.source if self.qapp.states else ""
        what = "every finding" if self.show_ok else "findings at WARN or worse (a: the OK ones too)"
        self.caption = (f"health — {what} · rules: {safe(rules, 80)} · "
                        + " · ".join(broker_line(label, st) for label, st in states.items()))
        self.set_caption(len(chosen), total)

    def action_toggle_ok(self) -> None:
        self.show_ok = not self.show_ok
        self.refresh_data()

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.key is not None and message.key[1] is not None:
            self.open_detail(message.key[0], message.key[1])
