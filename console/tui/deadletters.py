"""Dead letters across brokers: each DLQ with its count and the queues that feed it; Enter shows its messages."""

from __future__ import annotations

from console.safe_text import safe
from console.tui.base import TableScreen
from console.tui.table import Column, VirtualTable

COLUMNS = [Column("broker", "broker", 0, max_width=24), Column("name", "dead-letter queue", 0),
           Column("kind", "kind", 6), Column("depth", "messages", 10, right=True),
           Column("feeders", "fed by", 0, max_width=60)]


class DeadLettersScreen(TableScreen):
    columns = COLUMNS
    caption = "dead-letter queues — Enter shows their messages (reason, original queue, deaths)"

    def __init__(self) -> None:
        super().__init__(name="deadletters")

    def refresh_data(self) -> None:
        keys: list[object] = []
        rows: list[tuple[str, ...]] = []
        alerts: set[int] = set()
        for label, st in self.qapp.states.items():
            queues = st.queues()
            feeders: dict[str, list[str]] = {}
            for q in queues:
                for target in (*q.dead_letter_queues, *([q.dead_letter_target] if q.dead_letter_target else [])):
                    feeders.setdefault(target, []).append(q.name)
            for q in sorted((q for q in queues if q.is_dead_letter), key=lambda q: (-q.depth, q.name)):
                if q.depth:
                    alerts.add(len(rows))
                keys.append((label, q.name))
                fed = sorted(set(feeders.get(q.name, [])))
                rows.append((safe(label, 40), safe(q.name, 120), q.kind, f"{q.depth:,}",
                             ", ".join(safe(f, 40) for f in fed) or "-"))
        self.query_one(VirtualTable).set_rows(keys, rows, alerts)

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.key is not None:
            broker, queue = message.key
            # RabbitMQ asks first (its peek requeues); the others peek without side effects, so straight away.
            self.open_detail(broker, queue, auto_peek=self.qapp.states[broker].kind != "rabbitmq")
