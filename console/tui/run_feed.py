"""A load run as the console follows it: its live feed (``loadgen.run.live_feed``: one JSON line per interval)
read as it grows, and what the load-run view draws from it. Pure data, no Textual.

The feed is read, never trusted: a line that is not a JSON object of the feed's version is counted and skipped, a
figure that is not a finite number shows as ``-``, and every text passes the one sanitiser where it is drawn.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.run.live_feed import FEED_NAME, VERSION

MAX_LINE = 1 << 20  # a longer line is not the feed's (its lines are a few kB)
MAX_READ = 4 << 20  # read at most this much at a time (a long finished run comes in a few reads)
KEPT = 3600  # intervals kept (an hour of seconds)


def num(value: Any) -> float | None:
    """A finite number from the feed, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def feed_file(path: Path) -> Path:
    """A run's directory (``--out``, made or still to be made) or its feed file (``*.jsonl``): the feed file."""
    return path if path.is_file() or path.suffix == ".jsonl" else path / FEED_NAME


class FeedTail:
    """Reads the whole lines appended to a file since the last read; starts again when the file is replaced or cut
    (a new run into the same ``--out``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None
        self.partial = b""
        self.restarted = False  # the last read found a new file: what was read before is not its

    def read(self) -> list[bytes]:
        self.restarted = False
        try:
            with self.path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_ino != self.inode or st.st_size < self.offset:
                    self.restarted = self.inode is not None
                    self.inode, self.offset, self.partial = st.st_ino, 0, b""
                fh.seek(self.offset)
                data = fh.read(MAX_READ)
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:
            self.partial = b""
        return lines


@dataclass
class LiveRun:
    """What the feed said so far: its start line, its intervals (the newest ``KEPT``), its end line."""

    path: Path
    start: dict[str, Any] = field(default_factory=dict)
    intervals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEPT))
    end: dict[str, Any] | None = None
    bad_lines: int = 0

    def add(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line) if len(line) <= MAX_LINE else None
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict) or record.get("v") != VERSION:
            self.bad_lines += 1
            return
        kind = record.get("t")
        if kind == "start":
            self.start, self.end = record, None
            self.intervals.clear()
        elif kind == "interval":
            self.intervals.append(record)
        elif kind == "end":
            self.end = record
        else:
            self.bad_lines += 1

    def reset(self) -> None:
        self.start, self.end, self.bad_lines = {}, None, 0
        self.intervals.clear()

    # -- what the view shows ----------------------------------------------------------------------------------------

    def text(self, key: str) -> str:
        """A text field of the start line ('' when missing or not text)."""
        value = self.start.get(key)
        return value if isinstance(value, str) else ""

    @property
    def run_id(self) -> str:
        return self.text("run_id")

    @property
    def queue(self) -> str:
        return self.text("queue")

    @property
    def broker(self) -> str:
        return self.text("broker")

    @property
    def timeout_s(self) -> float:
        return num(self.start.get("timeout_s")) or 0.0

    @property
    def elapsed_s(self) -> float:
        """Seconds of the run the feed covers (the last interval's end)."""
        return (num(self.intervals[-1].get("end_s")) or 0.0) if self.intervals else 0.0

    def state(self, process_alive: bool | None = None) -> str:
        """``waiting`` (no line yet), ``running``, ``ended`` (its end line), or ``gone`` (no end line and its process
        is no more: killed). ``process_alive``: what the caller knows of the process (a run it started); else the
        feed's ``pid`` is asked (a run on this machine)."""
        if self.end is not None:
            return "ended"
        if not self.start:
            return "waiting"
        alive = process_alive if process_alive is not None else pid_alive(self.start.get("pid"))
        return "running" if alive else "gone"

    def verdict(self) -> str:
        value = self.end.get("verdict") if self.end else None
        return value if isinstance(value, str) else ""

    def slo(self) -> list[Mapping[str, Any]]:
        """The SLO verdicts: the end line's, else the newest interval's (the run so far)."""
        source = self.end.get("slo") if self.end else None
        if source is None:
            source = next((i.get("slo") for i in reversed(self.intervals) if i.get("slo") is not None), None)
        return [v for v in source if isinstance(v, dict)] if isinstance(source, list) else []

    def stages(self) -> tuple[str, Mapping[str, Any]]:
        """What the stage table shows and its title: the whole run (end line), else the newest interval with
        replies or timeouts, else nothing yet."""
        if self.end and isinstance(self.end.get("stages"), dict):
            return "whole run", self.end["stages"]
        for record in reversed(self.intervals):
            stages = record.get("stages")
            e2e = stages.get("end_to_end") if isinstance(stages, dict) else None
            if isinstance(stages, dict) and isinstance(e2e, dict) and num(e2e.get("count")):
                start, end = num(record.get("start_s")), num(record.get("end_s"))
                when = f"{start:g}–{end:g} s" if start is not None and end is not None else "?"
                return f"interval {when}", stages
        return "no replies yet", {}

    def series(self, key: str, stage: str | None = None) -> list[float]:
        """One figure per measured interval, oldest first (a missing one as 0): ``key`` of the interval, or of its
        ``stage``'s figures; ``failed`` is errors + timeouts."""
        out: list[float] = []
        for record in self.intervals:
            if record.get("warmup"):
                continue
            value: float | None
            if key == "failed":
                value = (num(record.get("errors")) or 0.0) + (num(record.get("timeouts")) or 0.0)
            elif stage is not None:
                stages = record.get("stages")
                figures = stages.get(stage) if isinstance(stages, dict) else None
                value = num(figures.get(key)) if isinstance(figures, dict) else None
            else:
                value = num(record.get(key))
            out.append(value or 0.0)
        return out

    def latest(self) -> Mapping[str, Any]:
        return self.intervals[-1] if self.intervals else {}

    def totals(self) -> Mapping[str, Any]:
        """The run's counts: the end line's, else the newest interval's totals."""
        counts = self.end.get("counts") if self.end else None
        if isinstance(counts, dict):
            return counts
        totals = self.latest().get("totals")
        return dict(totals) if isinstance(totals, dict) else {}


def pid_alive(pid: Any) -> bool:
    """Whether a process ``pid`` runs on this machine (a zombie does not count)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        return fh.read().rpartition(")")[2].split()[0] != "Z"
    return True
