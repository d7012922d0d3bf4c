"""What the console knows about each broker: health, the last two snapshots, short per-queue histories, and the
health rules' findings (``console.health``) over a window of its recent snapshots.

Pure data, no Textual: the app updates it from poll results and every screen reads it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from console.health.evaluate import unreachable
from console.health.model import Finding, Level
from console.health.rules_file import RuleSet, default_rules
from console.render import fmt_duration
from console.runner import backoff as backoff  # the one poll backoff (CLI --watch and the console)
from console.tui.health_state import BrokerHealth
from probes.lag import LagRow, lag_rows, with_snapshot_rates
from probes.models import BrokerSnapshot, QueueStats
from probes.urls import BrokerTarget

HISTORY = 120  # points of history kept per queue (one per poll)


@dataclass
class Health:
    up: bool | None = None  # None: not polled yet
    last_ok: float | None = None  # time.time() of the last good poll
    last_error: str | None = None
    failures: int = 0  # consecutive failed polls
    poll_s: float | None = None  # how long the last good poll took

    def age(self, now: float | None = None) -> float | None:
        return None if self.last_ok is None else (now or time.time()) - self.last_ok


class QueueHistory:
    """(depth, publish rate, deliver rate) per poll, newest last; one append per poll per queue."""

    __slots__ = ("points",)

    def __init__(self) -> None:
        self.points: deque[tuple[float, float, float]] = deque(maxlen=HISTORY)

    @property
    def depth(self) -> list[float]:
        return [p[0] for p in self.points]

    @property
    def publish(self) -> list[float]:
        return [p[1] for p in self.points]

    @property
    def deliver(self) -> list[float]:
        return [p[2] for p in self.points]


def short_labels(targets: Sequence[BrokerTarget]) -> dict[str, str]:
    """The broker cell of every table, by target label: the profile name, else where the broker is
    (``host:port/vhost``), with the scheme in front when that alone does not tell two brokers apart. The full,
    redacted URL is in the header."""
    short = {t.label: t.name or t.place for t in targets}
    counts = Counter(short.values())
    return {t.label: (f"{t.scheme}://{short[t.label]}" if counts[short[t.label]] > 1 and not t.name else short[t.label])
            for t in targets}


@dataclass
class BrokerState:
    label: str
    kind: str
    short: str = ""  # the table cell (``short_labels``); the label when not given
    health: Health = field(default_factory=Health)
    snapshot: BrokerSnapshot | None = None
    previous: BrokerSnapshot | None = None
    history: dict[str, QueueHistory] = field(default_factory=dict)
    rules: RuleSet = field(default_factory=default_rules)  # the health rules (qdeck console --rules FILE)
    judged: BrokerHealth = field(init=False)  # the rules' findings over its recent snapshots (health_state.py)

    def __post_init__(self) -> None:
        self.judged = BrokerHealth(self.rules)

    @property
    def findings(self) -> list[Finding]:
        """Every health rule over its recent snapshots, OK ones included."""
        return self.judged.findings

    @property
    def queue_levels(self) -> dict[str, Level]:
        """Queue name -> its worst health finding, WARN or worse."""
        return self.judged.levels

    def record(self, snap: BrokerSnapshot) -> None:
        """A new snapshot; a small broker is judged by the health rules at once (a big one: the app does it off
        the UI thread, ``judged.inline`` says which)."""
        snap = with_snapshot_rates(snap, self.snapshot)  # Kafka's and Redis's in/s and out/s: from two snapshots
        self.previous, self.snapshot = self.snapshot, snap
        self.judged.keep(snap)
        if self.judged.inline:
            self.judged.judge_now(snap)
        h = self.health
        h.up, h.last_ok, h.last_error, h.failures, h.poll_s = True, snap.taken_at, None, 0, snap.duration_s
        history = self.history
        for q in snap.queues:
            hist = history.get(q.name)
            if hist is None:
                hist = history[q.name] = QueueHistory()
            hist.points.append((q.depth, q.publish_rate or 0.0, q.deliver_rate or 0.0))
        if len(history) > len(snap.queues):
            seen = {q.name for q in snap.queues}
            for gone in [n for n in history if n not in seen]:
                del history[gone]

    def failed(self, message: str) -> None:
        h = self.health
        h.up, h.last_error, h.failures = False, message, h.failures + 1

    def health_findings(self) -> list[Finding]:
        """The health panel's findings: while the broker's polls fail, its UNKNOWN ``unreachable`` first, then
        those of its last good snapshot (stale, as its rows are)."""
        if self.health.up is False:
            return [unreachable(self.label, self.health.last_error or "no answer"), *self.findings]
        return self.findings

    def broker_findings(self) -> list[Finding]:
        """Findings about the broker itself (a resource alarm), WARN or worse: the header's badge."""
        return self.judged.about_broker  # picked once per judging: the header asks on every paint

    def stale_s(self, now: float | None = None) -> float | None:
        """While the broker's polls fail, how old the figures on screen are (they are its last good snapshot's);
        None while they are live, or when there are none."""
        if self.health.up is not False or self.snapshot is None:
            return None
        return self.health.age(now) or 0.0

    def shown_label(self, now: float | None = None) -> str:
        """The broker cell of every table row: its label, led by ``stale AGE ·`` while its figures are stale (the
        lead comes first, so a narrow column never cuts it)."""
        age = self.stale_s(now)
        name = self.short or self.label
        return name if age is None else f"stale {fmt_duration(age)} · {name}"

    def queues(self) -> tuple[QueueStats, ...]:
        return self.snapshot.queues if self.snapshot else ()

    def lag(self) -> list[LagRow]:
        return lag_rows(self.snapshot, self.previous) if self.snapshot else []
