"""Recent snapshots of one broker, oldest first, for the rules that judge a trend (lag growing, DLQ growing)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from probes.models import BrokerSnapshot

Memo = dict[tuple[int, str], tuple[BrokerSnapshot, Any]]


class SnapshotWindow:
    """The snapshots of ONE broker taken in the last ``span_s`` seconds (by their ``taken_at``), oldest first. The
    latest is always kept, and the newest one at least ``span_s`` old too, so the window covers the whole span
    once enough has been seen (a trend judged over "at least N seconds" needs a snapshot from N seconds ago)."""

    def __init__(self, span_s: float = 300.0, memo: Memo | None = None) -> None:
        if span_s < 0:
            raise ValueError("span_s must not be negative")
        self.span_s = span_s
        self._snapshots: deque[BrokerSnapshot] = deque()
        # what the trend rules derive from each snapshot (its backlogs, its dead letters), kept while the snapshot
        # is in the window: judged again and again, a snapshot is read once (a caller that builds a new window for
        # each judging passes its own memo and ``prune``s it)
        self.memo: Memo = {} if memo is None else memo

    def add(self, snapshot: BrokerSnapshot) -> None:
        """Append ``snapshot`` (one older than the latest is ignored: polls can come back out of order)."""
        if self._snapshots and snapshot.taken_at < self._snapshots[-1].taken_at:
            return
        self._snapshots.append(snapshot)
        cutoff = snapshot.taken_at - self.span_s
        dropped = False
        while len(self._snapshots) > 1 and self._snapshots[1].taken_at <= cutoff:
            self._snapshots.popleft()
            dropped = True
        if dropped:  # (not on every add: a window being filled from a caller's kept snapshots shares their memo)
            prune(self.memo, self._snapshots)

    def derived(self, snapshot: BrokerSnapshot, what: str, fn: Callable[[BrokerSnapshot], Any]) -> Any:
        """``fn(snapshot)``, computed once while ``snapshot`` is in the window (``what`` names ``fn``)."""
        key = (id(snapshot), what)
        hit = self.memo.get(key)
        if hit is not None and hit[0] is snapshot:
            return hit[1]
        value = fn(snapshot)
        self.memo[key] = (snapshot, value)
        return value

    @property
    def latest(self) -> BrokerSnapshot | None:
        return self._snapshots[-1] if self._snapshots else None

    @property
    def previous(self) -> BrokerSnapshot | None:
        return self._snapshots[-2] if len(self._snapshots) > 1 else None

    @property
    def snapshots(self) -> Sequence[BrokerSnapshot]:
        return tuple(self._snapshots)

    @property
    def covered_s(self) -> float:
        """Seconds between the oldest and the latest snapshot kept."""
        if len(self._snapshots) < 2:
            return 0.0
        return self._snapshots[-1].taken_at - self._snapshots[0].taken_at


def prune(memo: Memo, keep: Sequence[BrokerSnapshot]) -> None:
    """Forget what was derived from snapshots no longer in ``keep``."""
    alive = {id(s): s for s in keep}
    for key in [k for k, (snap, _v) in memo.items() if alive.get(k[0]) is not snap]:
        del memo[key]
