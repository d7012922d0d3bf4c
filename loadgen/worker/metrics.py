"""Worker metrics: counters, and a line per interval on stderr (human) or as JSON lines."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import TextIO


@dataclass(slots=True)
class Counters:
    batches: int = 0
    items: int = 0
    errors: int = 0  # requests answered with an error (model failure)
    dead_lettered: int = 0
    malformed: int = 0

    def copy(self) -> Counters:
        return Counters(self.batches, self.items, self.errors, self.dead_lettered, self.malformed)


@dataclass(frozen=True, slots=True)
class Interval:
    worker: str
    device: str
    model: str
    seconds: float
    batches: int
    items: int
    mean_batch: float
    items_per_s: float
    errors: int
    dead_lettered: int
    malformed: int
    total_items: int


class MetricsReporter:
    def __init__(self, worker: str, device: str, model: str, fmt: str = "human", out: TextIO | None = None) -> None:
        self.worker, self.device, self.model, self.fmt = worker, device, model, fmt
        self.out = out or sys.stderr
        self.counters = Counters()
        self._last = Counters()
        self._last_t = time.monotonic()

    def interval(self) -> Interval:
        now = time.monotonic()
        c, p = self.counters, self._last
        secs = max(now - self._last_t, 1e-9)
        batches, items = c.batches - p.batches, c.items - p.items
        iv = Interval(worker=self.worker, device=self.device, model=self.model, seconds=round(secs, 3),
                      batches=batches, items=items, mean_batch=round(items / batches, 2) if batches else 0.0,
                      items_per_s=round(items / secs, 1), errors=c.errors - p.errors,
                      dead_lettered=c.dead_lettered - p.dead_lettered, malformed=c.malformed - p.malformed,
                      total_items=c.items)
        self._last, self._last_t = c.copy(), now
        return iv

    def emit(self) -> Interval:
        iv = self.interval()
        if self.fmt == "json":
            line = json.dumps({"event": "worker_metrics", **asdict(iv)})
        else:
            line = (f"qdeck worker {iv.worker} [{iv.model} on {iv.device}] {iv.items_per_s:,.1f} items/s, "
                    f"{iv.batches} batches (mean size {iv.mean_batch}), errors {iv.errors}, "
                    f"dead-lettered {iv.dead_lettered}, total {iv.total_items:,}")
        print(line, file=self.out, flush=True)
        return iv

    def event(self, text: str, **fields: object) -> None:
        """A one-off line (started, stopping, claimed entries) in the chosen format."""
        if self.fmt == "json":
            print(json.dumps({"event": text, "worker": self.worker, **fields}), file=self.out, flush=True)
        else:
            extra = ", ".join(f"{k} {v}" for k, v in fields.items())
            print(f"qdeck worker {self.worker}: {text}" + (f" ({extra})" if extra else ""), file=self.out,
                  flush=True)
