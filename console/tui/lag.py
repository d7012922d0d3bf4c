"""Lag: consumer groups (Kafka, Redis streams) and queue backlogs (RabbitMQ, Redis lists), with seconds to drain."""

from __future__ import annotations

from typing import ClassVar

from console.queue_filter import LAG_NUMERIC, LagSort, select_lag
from console.render import drain_text, fmt_net_rate, fmt_rate
from console.safe_text import safe
from console.tui.base import TableScreen
from console.tui.table import Column, VirtualTable

# priority: on a narrow screen the highest give way first; the backlog, time to drain and net rate stay at 80
COLUMNS = [Column("broker", "broker", 0, max_width=28, cut_middle=True, priority=10),
           Column("source", "queue / topic / stream", 0, max_width=32),
           Column("group", "group", 0, max_width=30, priority=2),
           Column("backlog", "backlog", 10, right=True, priority=1),
           Column("pending", "pending", 8, right=True, priority=8),
           Column("consumers", "consumers", 9, right=True, priority=6),
           Column("produce", "in/s", 8, right=True, priority=9), Column("rate", "out/s", 8, right=True, priority=7),
           Column("net", "net/s", 9, right=True, priority=4), Column("eta", "to drain", 16, right=True, priority=3),
           Column("trend", "trend", 8, priority=5), Column("state", "state", 0, max_width=14, priority=11),
           Column("basis", "rates from", 0, max_width=26, priority=12)]


class LagScreen(TableScreen):
    columns = COLUMNS
    caption = "lag — net/s = out/s − in/s · to drain = backlog ÷ net · '?' until a rate is known"

    filter_hint = "filter: a queue, topic, stream or group name; substring or glob (Esc clears)"
    sortable: ClassVar[list[str]] = [str(s) for s in LagSort]
    numeric = LAG_NUMERIC
    default_sort = "backlog"

    def __init__(self) -> None:
        super().__init__(name="lag")

    def refresh_data(self) -> None:
        keys: list[object] = []
        rows: list[tuple[str, ...]] = []
        alerts: set[int] = set()
        stale: set[int] = set()
        now = self.qapp.clock()
        states = self.qapp.shown_states()
        every = [(label, r) for label, st in states.items() for r in st.lag()]
        by_row = {id(r): label for label, r in every}
        chosen = select_lag((r for _l, r in every), self.pattern, self.sort_column, self.sort_reverse)
        shown = {label: st.shown_label(now) for label, st in states.items()}
        old = {label for label, st in states.items() if st.stale_s(now) is not None}
        for r in chosen:
            label = by_row[id(r)]
            if r.backlog and r.consumers == 0:
                alerts.add(len(rows))
            if label in old:
                stale.add(len(rows))
            keys.append((label, r.source, r.group))
            rows.append((safe(shown[label], 60), safe(r.source, 120), safe(r.group or "-", 60),
                         f"{r.backlog:,}" + ("" if r.exact else "+"),
                         f"{r.pending:,}" if r.pending is not None else "-", f"{r.consumers:,}",
                         fmt_rate(r.produce_rate), fmt_rate(r.consume_rate), fmt_net_rate(r.net_rate),
                         drain_text(r), r.trend or "?", safe(r.state or "", 20), safe(r.rate_basis or "", 30)))
        self.sorted_table().set_rows(keys, rows, alerts, stale=stale)
        self.set_caption(len(chosen), len(every))

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.key is not None:
            self.open_detail(message.key[0], message.key[1])
