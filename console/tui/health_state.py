"""The health rules over one broker in the console: the snapshots the trend rules need, the findings, and each
queue's worst level (the overview's ``health`` column). Pure data, no Textual.

The rules are ``console.health``'s (what ``qdeck check`` judges), over a window of the last ``WINDOW_S`` seconds:
every snapshot at least ``STEP_S`` apart from the one kept before it, and the newest (so a console polling every
0.5 s keeps about a dozen snapshots, not 120, and the trend rules read that many). A small broker is judged at once
after each poll; one whose judging takes longer than ``INLINE_S`` (or that lists ``BIG`` queues or more) is judged
on the UI's event loop a slice of at most ``SLICE_S`` at a time (``judge_in_slices``, on a copy of the window), so
paints and keys go on between slices — a judging thread starved the loop of the GIL: with 10,000 queues a poll's
new rows took 0.9 s to paint instead of 0.13 s —, and not more often than once every ``SPACING`` × the time the
last judging worked, so that judging a big broker takes under 2 % of a core (10,000 queues: judged about
every 25 s).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

from console.health.evaluate import evaluate, steps
from console.health.model import SEVERITY, Finding, Level
from console.health.rules_file import RuleSet
from console.health.window import Memo, SnapshotWindow, prune
from probes.models import BrokerSnapshot

WINDOW_S = 60.0  # the trend rules (lag growing, DLQ growing) judge the last minute of polls
STEP_S = 6.0  # snapshots kept for them at least this far apart (the newest is always judged)
INLINE_S = 0.02  # judging that takes longer is judged in slices
BIG = 2000  # queues: a broker this big is judged in slices from its first poll
SLICE_S = 0.01  # a slice of judging works this long at most before the event loop runs again
REST = 2.0  # between slices the event loop runs alone for this many times a slice
SPACING = 60.0  # in slices, a judging starts at least this many times its last working time after it ended


def queue_levels(findings: Iterable[Finding]) -> dict[str, Level]:
    """Each queue's worst finding at WARN or worse (CRIT > UNKNOWN > WARN)."""
    levels: dict[str, Level] = {}
    for f in findings:
        if f.queue is not None and f.level is not Level.OK:
            old = levels.get(f.queue)
            if old is None or SEVERITY[f.level] > SEVERITY[old]:
                levels[f.queue] = f.level
    return levels


def judge(rules: RuleSet, window: SnapshotWindow) -> tuple[list[Finding], dict[str, Level], float]:
    """Every rule over ``window``: the findings, each queue's level, and how long it took."""
    t0 = time.perf_counter()
    findings = evaluate(rules, window)
    return findings, queue_levels(findings), time.perf_counter() - t0


async def judge_in_slices(rules: RuleSet, window: SnapshotWindow,
                          slice_s: float = SLICE_S) -> tuple[list[Finding], dict[str, Level], float]:
    """``judge`` a subject at a time, leaving the event loop alone for ``REST`` × ``slice_s`` after every
    ``slice_s`` of work; the time it took is the working time only (the slices), not the rests."""
    findings: list[Finding] = []
    worked = 0.0
    start = time.perf_counter()
    for n, finding in enumerate(steps(rules, window)):
        if finding is not None:
            findings.append(finding)
        if n % 32 == 0 and time.perf_counter() - start >= slice_s:
            worked += time.perf_counter() - start
            await asyncio.sleep(REST * slice_s)  # sleep(0) would take turns with every step of a paint
            start = time.perf_counter()
    levels = queue_levels(findings)
    return findings, levels, worked + time.perf_counter() - start


class BrokerHealth:
    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.kept: deque[BrokerSnapshot] = deque()  # the trend rules' snapshots, STEP_S apart, oldest first
        self.memo: Memo = {}  # what the trend rules derived from the kept snapshots (each read once, not per judging)
        self.findings: list[Finding] = []  # every rule over the window, OK ones included
        self.levels: dict[str, Level] = {}  # queue name -> its worst finding, WARN or worse
        self._about: tuple[list[Finding], list[Finding]] = ([], [])  # (findings, those about the broker)
        self.seconds = 0.0  # how long the last judging took
        self.next_at = 0.0  # time.monotonic() before which a big broker is not judged again
        self.busy = False  # a judging runs off the UI thread
        self.big = False

    def keep(self, snap: BrokerSnapshot) -> None:
        kept = self.kept
        if not kept or snap.taken_at - kept[-1].taken_at >= STEP_S:
            kept.append(snap)
        while len(kept) > 1 and kept[1].taken_at <= snap.taken_at - WINDOW_S:
            kept.popleft()
        if not self.busy:  # a judging in slices reads the memo: pruned after it
            prune(self.memo, kept)
        self.big = self.big or len(snap.queues) >= BIG

    def window(self, latest: BrokerSnapshot) -> SnapshotWindow:
        """The window the rules read: the kept snapshots and ``latest`` (a new window each time: a thread judges
        it while the UI thread keeps the next polls)."""
        window = SnapshotWindow(WINDOW_S, self.memo)
        for snap in self.kept:
            window.add(snap)
        if not self.kept or self.kept[-1] is not latest:
            window.add(latest)
        return window

    @property
    def about_broker(self) -> list[Finding]:
        """The findings about the broker itself, WARN or worse (the header's badge): picked once per judging,
        since the header asks on every paint and a big broker has tens of thousands of findings."""
        source, picked = self._about
        if source is not self.findings:
            picked = [f for f in self.findings if f.queue is None and f.level is not Level.OK]
            self._about = (self.findings, picked)
        return picked

    @property
    def inline(self) -> bool:
        """Whether the next judging runs at once on the UI thread."""
        return not self.big and self.seconds <= INLINE_S

    def due(self, now: float | None = None) -> bool:
        return not self.busy and (time.monotonic() if now is None else now) >= self.next_at

    def judge_now(self, latest: BrokerSnapshot) -> None:
        self.take(*judge(self.rules, self.window(latest)))

    def take(self, findings: list[Finding], levels: dict[str, Level], seconds: float) -> None:
        self.findings, self.levels, self.seconds = findings, levels, seconds
        self.busy = False
        self.next_at = time.monotonic() + SPACING * seconds
