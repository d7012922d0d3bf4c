"""Recent snapshots of one broker, oldest first, for the rules that judge a trend (lag growing, DLQ growing)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from probes.models import BrokerSnapshot


class SnapshotWindow:
    """The snapshots of ONE broker taken in the last ``span_s`` seconds (by their ``taken_at``), oldest first. The
    latest is always kept, and the newest one at least ``span_s`` old too, so the window covers the whole span
    once enough has been seen (a trend judged over "at least N seconds" needs a snapshot from N seconds ago)."""

    def __init__(self, span_s: float = 300.0) -> None:
        if span_s < 0:
            raise ValueError("span_s must not be negative")
        self.span_s = span_s
        self._snapshots: deque[BrokerSnapshot] = deque()

    def add(self, snapshot: BrokerSnapshot) -> None:
        """Append ``snapshot`` (one older than the latest is ignored: polls can come back out of order)."""
        if self._snapshots and snapshot.taken_at < self._snapshots[-1].taken_at:
            return
        self._snapshots.append(snapshot)
        cutoff = snapshot.taken_at - self.span_s
        while len(self._snapshots) > 1 and self._snapshots[1].taken_at <= cutoff:
            self._snapshots.popleft()

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
