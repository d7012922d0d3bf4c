"""Read every broker for ``qdeck check``: once, or repeatedly over a window for the trend rules, through the one
poller (``console.poller.Poller``), and judge what was read."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from console.health.evaluate import evaluate, unreachable
from console.health.model import Finding
from console.health.rules_file import RuleSet
from console.health.window import SnapshotWindow
from console.poller import Poller, PollResult
from probes import BrokerTarget


@dataclass
class BrokerReading:
    """What the check saw of one broker: its window of snapshots and the error of its last poll (None: it
    answered)."""

    label: str
    kind: str  # the broker's kind (rabbitmq, redis, kafka, ...), known before it answers
    window: SnapshotWindow = field(default_factory=lambda: SnapshotWindow(span_s=math.inf))
    error: str | None = None
    polls: int = 0

    def take(self, result: PollResult) -> None:
        self.polls += 1
        if result.snapshot is not None:
            self.window.add(result.snapshot)
            self.error = None
        else:
            self.error = result.error or "no answer"

    def findings(self, rules: RuleSet) -> list[Finding]:
        """The rules' findings; a broker whose last poll failed is UNKNOWN alone (old snapshots judge nothing)."""
        if self.error is not None or self.window.latest is None:
            return [unreachable(self.label, self.error or "no answer")]
        return evaluate(rules, self.window)


async def read_once(targets: Sequence[BrokerTarget], timeout: float) -> list[BrokerReading]:
    """One poll of every broker, all at once."""
    readings = [BrokerReading(t.label, t.kind) for t in targets]
    poller = Poller(targets, interval=1.0, timeout=timeout, on_result=lambda _r: None)
    try:
        results = await asyncio.gather(*(poller.poll_once(t.label) for t in targets))
    finally:
        await poller.aclose()
    for reading, result in zip(readings, results, strict=True):
        reading.take(result)
    return readings


async def read_window(targets: Sequence[BrokerTarget], window_s: float, interval: float,
                      timeout: float) -> list[BrokerReading]:
    """Poll every broker every ``interval`` (backing off after failures) until each has answered a poll that came
    back ``window_s`` or more after the start; then stop. The last answer of each broker decides whether it is
    reachable."""
    readings = {t.label: BrokerReading(t.label, t.kind) for t in targets}
    deadline = time.perf_counter() + window_s
    finished: set[str] = set()
    done = asyncio.Event()

    def on_result(result: PollResult) -> None:
        readings[result.label].take(result)
        if result.arrived >= deadline:
            finished.add(result.label)
            if len(finished) == len(readings):
                done.set()

    poller = Poller(targets, interval=min(interval, window_s), timeout=timeout, on_result=on_result)
    running = asyncio.create_task(poller.run(), name="qdeck check poller")
    waiting = asyncio.create_task(done.wait())
    try:
        # the last round can wait out a backoff: bounded by the window, a poll interval, a timeout and the
        # longest backoff (console.runner.MAX_BACKOFF_S)
        await asyncio.wait({running, waiting}, timeout=window_s + interval + timeout + 60.0,
                           return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()  # a probe that cannot be built from its settings: its ProbeError
    finally:
        for task in (running, waiting):
            task.cancel()
        await asyncio.gather(running, waiting, return_exceptions=True)
    return list(readings.values())
