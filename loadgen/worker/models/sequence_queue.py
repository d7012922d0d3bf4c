"""What the streaming models share: the requests waiting to join and the sequences running, behind one condition.

The worker's event loop submits requests and asks ``room`` / ``held``; the model's engine thread takes waiting
requests at step boundaries and runs steps while any sequence is active (``_wait_for_work``); ``close`` wakes the
engine to stop and joins it. A model defines ``max_seqs`` and may add to what counts as held (``_held``).
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

W = TypeVar("W")  # what waits to join
A = TypeVar("A")  # what runs


class SequenceQueue(Generic[W, A]):
    """A base of the streaming models (dataclasses): their ``__post_init__`` calls this one's first. Not a dataclass
    itself, so that its state is no field of theirs (their parameters keep their order)."""

    max_seqs: int  # each model declares its own, a parameter
    _lock: threading.Condition
    _waiting: collections.deque[W]
    _active: list[A]
    _closed: bool
    _thread: threading.Thread | None

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting = collections.deque()
        self._active = []
        self._closed = False
        self._thread = None

    def _enqueue(self, item: W) -> None:
        """A request joins the waiting queue; the engine wakes."""
        with self._lock:
            self._waiting.append(item)
            self._lock.notify()

    def room(self) -> int:
        """How many more requests the model takes now."""
        with self._lock:
            return max(self.max_seqs - self._held(), 0)

    def held(self) -> int:
        """Sequences running or waiting."""
        with self._lock:
            return self._held()

    def _held(self) -> int:
        """(lock held) What counts against ``max_seqs``."""
        return len(self._active) + len(self._waiting)

    def _wait_for_work(self) -> bool:
        """(lock held, on the engine thread) Wait until there is something to run or the model closes; False once
        it has closed."""
        while not self._closed and not self._waiting and not self._active:
            self._lock.wait()
        return not self._closed

    def close(self) -> None:
        """Stop the engine: it returns at its next step boundary; wait for it (10 s at most)."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._join_engine()

    def _join_engine(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)
