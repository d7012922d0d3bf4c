"""What the exporter knows: each broker's latest poll, its snapshot window and the rules' findings over it.

The poller's loop writes (``record``, on the event loop); the HTTP server's threads read (``views``, ``health``).
Each broker's ``BrokerView`` is immutable and replaced whole, so a scrape reads one consistent poll per broker and
never waits for a poll: scrapes cost the brokers nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from console.health.evaluate import evaluate, unreachable
from console.health.model import Finding, worst
from console.health.rules_file import RuleSet
from console.health.window import SnapshotWindow
from console.poller import PollResult
from probes import BrokerSnapshot, BrokerTarget
from probes.lag import LagRow, lag_rows, with_snapshot_rates


@dataclass(frozen=True, slots=True)
class BrokerView:
    """One broker as the last poll left it. ``snapshot`` is the last good one (rates filled in from the one before);
    while ``up`` is False it is stale and the exporter does not export its figures."""

    label: str
    kind: str
    vhost: str  # RabbitMQ: the vhost polled; "" for the others
    up: bool | None = None  # None: not polled yet
    snapshot: BrokerSnapshot | None = None
    rows: tuple[LagRow, ...] = ()  # probes.lag rows of the latest snapshot against the one before (time to drain)
    findings: tuple[Finding, ...] = ()
    error: str | None = None  # why the last poll failed
    polls: int = 0
    errors: int = 0
    last_poll: float | None = None  # perf_counter() when the last poll came back
    poll_duration_s: float | None = None
    next_poll_s: float | None = None


class ExporterState:
    def __init__(self, targets: Sequence[BrokerTarget], rules: RuleSet, *, window_s: float, timeout: float,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.rules = rules
        self.timeout = timeout
        self.clock = clock
        self._windows: dict[str, SnapshotWindow] = {}
        self._window_s = window_s
        self._views: dict[str, BrokerView] = {}
        self.running = False  # the poller's loop is alive (cmd_exporter sets it)
        for target in targets:
            self.add(target)

    def add(self, target: BrokerTarget) -> None:
        vhost = (target.path or "/") if target.kind == "rabbitmq" else ""
        self._views.setdefault(target.label, BrokerView(target.label, target.kind, vhost))
        self._windows.setdefault(target.label, SnapshotWindow(self._window_s))

    def record(self, result: PollResult) -> None:
        """The poller's ``on_result``: the snapshot joins the broker's window and the rules judge the window; a
        failed poll is the ``unreachable`` finding (UNKNOWN)."""
        view = self._views[result.label]
        common: dict[str, Any] = {"polls": view.polls + 1, "last_poll": result.arrived,
                                  "poll_duration_s": result.duration_s, "next_poll_s": result.next_poll_s}
        if result.snapshot is None:
            error = result.error or "poll failed"
            self._views[result.label] = replace(view, up=False, error=error, errors=view.errors + 1,
                                                findings=(unreachable(view.label, error),), **common)
            return
        window = self._windows[result.label]
        snap = with_snapshot_rates(result.snapshot, window.latest)  # Kafka, Redis: in/s and out/s from two polls
        window.add(snap)
        rows = tuple(lag_rows(snap, window.previous))
        findings = tuple(evaluate(self.rules, window, rows))  # the same rows: lag_rows once per poll
        self._views[result.label] = replace(view, up=True, error=None, snapshot=snap, rows=rows,
                                            findings=findings, **common)

    def views(self) -> list[BrokerView]:
        return list(self._views.values())

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``/healthz``: healthy while the loop runs, every broker has been polled (up or down: a broker that is
        down is a figure, not the exporter's failure) and no broker's next poll is overdue (a wedged loop)."""
        now = self.clock()
        brokers = []
        status = "ok" if self.running else "stopped"
        for v in self.views():
            age = now - v.last_poll if v.last_poll is not None else None
            if v.last_poll is None:
                status = "starting" if status == "ok" else status
            elif age is not None and v.next_poll_s is not None and age > v.next_poll_s + 2 * self.timeout:
                status = "stalled" if status == "ok" else status
            brokers.append({
                "broker": v.label, "kind": v.kind, "up": v.up, "error": v.error, "polls": v.polls,
                "errors": v.errors, "last_poll_age_s": round(age, 3) if age is not None else None,
                "poll_duration_s": round(v.poll_duration_s, 3) if v.poll_duration_s is not None else None,
                "partial": v.snapshot.partial if v.snapshot is not None and v.up else None,
                "status": str(worst(v.findings)) if v.up is not None else None,
            })
        return status == "ok", {"status": status, "brokers": brokers}
