"""The load run the console shows: the feed it follows (``run_feed``), and the run it started, if any.

A run is started as ``qdeck load run --plan PLAN --out DIR`` in a process of its own (its own session, so a
terminal's signals never reach it; its output in ``DIR/run.log``), and stopped as Ctrl-C stops it: SIGINT, after
which it sends nothing more, waits for the replies in flight, writes its files and its feed's last line, and exits
130; a second SIGINT ends it at once. A plan that names no broker runs against the console's (passed in
``$QDECK_BROKER``, the environment, never the command line: a broker URL may hold a password); a plan that names
one runs against it (``$QDECK_BROKER`` is then left out, so it cannot override the plan). No Textual here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from console.tui.run_feed import FeedTail, LiveRun, feed_file
from console.tui.state import BrokerState
from probes.models import QueueStats
from probes.urls import BrokerTarget

LOG_NAME = "run.log"


@dataclass
class Launched:
    """A run this console started."""

    proc: subprocess.Popen[bytes]
    plan: Path
    out: Path
    interrupts: int = 0  # SIGINTs sent: the first stops it gracefully, a second at once

    @property
    def log(self) -> Path:
        return self.out / LOG_NAME

    def code(self) -> int | None:
        return self.proc.poll()

    def interrupt(self) -> bool:
        """SIGINT to the run (Ctrl-C's signal); False when it has already ended."""
        if self.proc.poll() is not None:
            return False
        try:
            os.kill(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        self.interrupts += 1
        return True

    def log_tail(self, limit: int = 4000) -> str:
        """The last line of its output (why it ended, when it ended early), '' when there is none."""
        try:
            with self.log.open("rb") as fh:
                fh.seek(max(fh.seek(0, os.SEEK_END) - limit, 0))
                text = fh.read().decode("utf-8", errors="backslashreplace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def default_out(plan: Path, now: float | None = None) -> Path:
    """Where a run started from ``plan`` writes its files: ``qdeck-run-<plan>-<time>`` in the current directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path.cwd() / f"qdeck-run-{plan.stem}-{stamp}"


def launch(plan: Path, out: Path, broker: BrokerTarget | None, plan_names_broker: bool) -> Launched:
    """Start ``qdeck load run --plan plan --out out`` (OSError when it cannot start)."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("QDECK_BROKER", None)
    if not plan_names_broker and broker is not None:
        env["QDECK_BROKER"] = broker.name or broker.url
    with (out / LOG_NAME).open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "load", "run", "--plan", str(plan),
                                 "--out", str(out)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return Launched(proc, plan, out)


@dataclass
class RunWatch:
    """The run the load-run view shows: its feed's path, what was read of it, and the process when the console
    started it."""

    path: Path | None = None
    tail: FeedTail | None = None
    run: LiveRun | None = None
    launched: Launched | None = None

    def open(self, path: Path, launched: Launched | None = None) -> None:
        """Follow the run at ``path`` (its directory or its feed), from its first line."""
        feed = feed_file(path)
        self.path, self.tail, self.run = feed, FeedTail(feed), LiveRun(feed)
        self.launched = launched

    def take(self, lines: list[bytes], restarted: bool) -> None:
        if self.run is None:
            return
        if restarted:
            self.run.reset()
        for line in lines:
            self.run.add(line)

    def state(self) -> str:
        """``none`` (no run opened), or the run's state (``run_feed.LiveRun.state``); a started run that exited
        before its feed's first line is ``failed``."""
        if self.run is None:
            return "none"
        alive = None
        if self.launched is not None:
            alive = self.launched.code() is None
            if not alive and not self.run.start:
                return "failed"
        return self.run.state(alive)

    def running(self) -> bool:
        return self.launched is not None and self.launched.code() is None

    def queue_of(self, states: Mapping[str, BrokerState],
                 targets: Mapping[str, BrokerTarget]) -> tuple[str, QueueStats | None] | None:
        """The run's request queue in the console's own snapshots: (broker label, its row or None when the broker
        does not list it yet); None when the run's broker is not one of the console's. The broker is matched by
        its URL (passwords masked on both sides), else, among brokers of the run's kind, by the one that lists
        the queue."""
        run = self.run
        if run is None or not run.queue:
            return None
        labels = [label for label, t in targets.items() if t.display == run.broker and label in states]
        if not labels:
            kind = run.text("broker_kind")
            labels = [label for label, st in states.items() if st.kind == kind
                      and any(q.name == run.queue for q in st.queues())]
            if len(labels) != 1:
                return None
        label = labels[0]
        row = next((q for q in states[label].queues() if q.name == run.queue), None)
        return label, row
