"""Where qdeck's consumer group may stand on a dead-letter topic while an action walks it: driver-free.

Kafka cannot take one record out of a log; qdeck "removes" records by committing the ``qdeck-dlq`` group past them,
one position per partition. A walk reads each partition in offset order and every record it reads ends in one of
these states:

- removed: confirmed at its destination (or deleted by purge/delete): the group should pass it;
- released: examined and left as it was (not selected, skipped, a dry run): it may be passed, and is, when a
  removed record after it in its partition is (a log cannot skip it); it never is on its own;
- failed: its publish failed: never passed in this walk, so the removed records after it in its partition stay
  in the topic too (the engine journals them as confirmed; the next run removes them without sending them again);
- held: read, not yet settled (the batch the engine works on).

The commit position of a partition is 1 + the last removed offset of its settled prefix (removed or released
records from the walk's start). ``deletable`` is the end of the prefix that holds removed records only: the most
a purge may delete with DeleteRecords without deleting a record it did not select.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

Key = tuple[int, int]  # (partition, offset)
HELD, RELEASED, REMOVED, FAILED = "held", "released", "removed", "failed"


class Positions:
    def __init__(self, start: Mapping[int, int]) -> None:
        self.start = dict(start)  # where the walk started: the group's committed offsets (or the low watermarks)
        self.committed = dict(start)  # the group's position per partition (where the walk started, then its commits)
        self.deletable = dict(start)  # DeleteRecords may go up to here
        self._queue: dict[int, deque[int]] = {p: deque() for p in start}  # read, not yet passed, in order
        self._state: dict[Key, str] = {}
        self._upto = dict(start)  # 1 + the last removed offset of the settled prefix
        self._pure = dict.fromkeys(start, True)  # the settled prefix holds removed records only
        self._batch: list[Key] = []

    def read(self, keys: Iterable[Key]) -> None:
        """A new batch handed to the engine (each partition's offsets ascending, after the earlier ones)."""
        self._batch = list(keys)
        for p, o in self._batch:
            self._queue.setdefault(p, deque()).append(o)
            self._state[(p, o)] = HELD

    def failed(self, keys: Iterable[Key]) -> None:
        for k in keys:
            if k in self._state:
                self._state[k] = FAILED

    def is_failed(self, key: Key) -> bool:
        return self._state.get(key) == FAILED

    def released(self, keys: Iterable[Key]) -> None:
        for k in keys:
            if self._state.get(k) == HELD:
                self._state[k] = RELEASED

    def removed(self, keys: Iterable[Key]) -> tuple[dict[int, int], set[Key]]:
        """Mark ``keys`` removed; every other record of the current batch that is neither removed nor failed is
        about to be released (the engine releases the rest of a batch after removing). Returns the positions to
        commit (partition → offset, only those that move forward) and the keys of ``keys`` they pass."""
        keys = [k for k in keys if k in self._state]
        for k in keys:
            self._state[k] = REMOVED
        self.released(self._batch)
        moved: dict[int, int] = {}
        for p in sorted({p for p, _o in keys}):
            queue = self._queue[p]
            while queue and self._state[(p, queue[0])] in (RELEASED, REMOVED):
                o = queue.popleft()
                if self._state.pop((p, o)) == REMOVED:
                    self._upto[p] = o + 1
                    if self._pure[p]:
                        self.deletable[p] = o + 1
                else:
                    self._pure[p] = False
            if self._upto[p] > self.committed.get(p, 0):
                moved[p] = self._upto[p]
        passed = {(p, o) for p, o in keys if o < self._upto.get(p, 0)}
        return moved, passed

    def committed_to(self, positions: Mapping[int, int]) -> None:
        """The group's commit of ``positions`` succeeded."""
        for p, o in positions.items():
            self.committed[p] = max(self.committed.get(p, 0), o)
