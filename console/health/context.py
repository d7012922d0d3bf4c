"""What every rule family reads: the rules, the window, the latest snapshot, its lag rows (``probes.lag``), and the
one way a rule turns a figure into a finding (``Context.judge``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from console.health.catalog import finding
from console.health.model import Finding
from console.health.rules_file import RuleSet
from console.health.window import SnapshotWindow
from probes.lag import LagRow, lag_rows
from probes.models import BrokerSnapshot, QueueStats


@dataclass
class Context:
    rules: RuleSet
    window: SnapshotWindow
    latest: BrokerSnapshot
    rows: list[LagRow] = field(default_factory=list)  # lag_rows(latest, previous): rates need two snapshots
    queues: dict[str, QueueStats] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: RuleSet, window: SnapshotWindow, latest: BrokerSnapshot,
           rows: Sequence[LagRow] | None = None) -> Context:
        """``rows``: ``lag_rows(latest, window.previous)`` when the caller has them already (the exporter)."""
        rows = list(rows) if rows is not None else lag_rows(latest, window.previous)
        return cls(rules, window, latest, rows, {q.name: q for q in latest.queues})

    @property
    def broker(self) -> str:
        return self.latest.broker

    def judge(self, rule: str, value: float, *, queue: str | None = None, group: str | None = None,
              detail: str | None = None, figure: str | None = None) -> Finding | None:
        """``value`` judged by the thresholds that apply to this subject; None when the rule is off there."""
        thresholds = self.rules.thresholds(rule, self.broker, queue, group)
        if thresholds is None:
            return None
        return finding(rule, thresholds, value, broker=self.broker, queue=queue, group=group, detail=detail,
                       figure=figure)

    def row_queue(self, row: LagRow) -> QueueStats | None:
        """The queue a plain backlog row is about (None for a consumer group's row)."""
        return self.queues.get(row.source) if row.group is None else None


def is_delay_queue(q: QueueStats) -> bool:
    """A waiting room, not a backlog: a RabbitMQ queue with a message TTL, a dead-letter target and no consumer
    (the retry / delay queue pattern). Its messages leave by expiring, so no_consumers and the lag rules skip it."""
    return (q.kind == "queue" and q.consumers == 0 and q.message_ttl_ms is not None
            and q.dead_letter_target is not None and not q.is_dead_letter)


def dead_letters(q: QueueStats) -> int:
    """Messages a dead-letter queue holds: ready + unacked for queues and lists; a stream's or topic's length
    already counts its pending entries."""
    return q.depth + (q.in_flight if q.kind in ("queue", "list") else 0)


def is_backlog(ctx: Context, row: LagRow) -> bool:
    """Whether the lag rules judge ``row``: every consumer group; every plain queue but dead-letter queues (the
    dlq rules judge those) and delay queues."""
    q = ctx.row_queue(row)
    return q is None or not (q.is_dead_letter or is_delay_queue(q))
