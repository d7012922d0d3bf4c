"""Dead letters across brokers: each DLQ with its count and the queues that feed it; Enter shows its messages."""

from __future__ import annotations

from console.queue_filter import dead_letter_queues
from console.safe_text import safe
from console.tui.base import TableScreen
from console.tui.table import Column, VirtualTable

COLUMNS = [Column("broker", "broker", 0, max_width=28, cut_middle=True, priority=3),
           Column("name", "dead-letter queue", 0, max_width=40),
           Column("kind", "kind", 6, priority=4), Column("depth", "messages", 10, right=True, priority=1),
           Column("feeders", "fed by", 0, max_width=60, priority=2)]


class DeadLettersScreen(TableScreen):
    columns = COLUMNS
    caption = "dead-letter queues — Enter shows their messages (reason, original queue, deaths)"

    def __init__(self) -> None:
        super().__init__(name="deadletters")

    def refresh_data(self) -> None:
        keys: list[object] = []
        rows: list[tuple[str, ...]] = []
        alerts: set[int] = set()
        stale: set[int] = set()
        now = self.qapp.clock()
        states = self.qapp.states
        dlqs, feeders = dead_letter_queues((label, q) for label, st in self.qapp.states.items()
                                           for q in st.queues())
        for label, q in dlqs:
            if q.depth + q.in_flight:
                alerts.add(len(rows))
            if states[label].stale_s(now) is not None:
                stale.add(len(rows))
            keys.append((label, q.name))
            rows.append((safe(states[label].shown_label(now), 60), safe(q.name, 120), q.kind,
                         f"{q.depth + q.in_flight:,}",
                         ", ".join(safe(f, 40) for f in feeders.get((label, q.name), [])) or "-"))
        self.broker_column(self.query_one(VirtualTable)).set_rows(keys, rows, alerts, stale=stale)

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.key is not None:
            broker, queue = message.key
            # RabbitMQ asks first (its peek requeues); the others peek without side effects, so straight away.
            self.open_detail(broker, queue, auto_peek=self.qapp.states[broker].kind != "rabbitmq")
