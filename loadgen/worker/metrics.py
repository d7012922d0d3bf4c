"""Worker metrics: counters, and a line per interval on stderr (human) or as JSON lines.

With GPU telemetry on (``loadgen.worker.gpu_telemetry``) each interval's line also gives, per GPU, the mean
utilisation, the largest memory used (of the total), the mean power and the mean SM clock (JSON: ``gpu``, a list of
``{index, samples, util_pct, mem_used_mib, mem_total_mib, power_w, sm_clock_mhz}``; absent when it is off).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, TextIO

from loadgen.gpu_sample import GpuFigures


@dataclass(slots=True)
class Counters:
    batches: int = 0
    items: int = 0
    errors: int = 0  # requests answered with an error (model failure, an output that cannot be encoded)
    dead_lettered: int = 0  # dead letters the broker confirmed
    malformed: int = 0
    reply_failures: int = 0  # replies the broker refused (bad destination): dead-lettered instead
    held: int = 0  # outcomes that could not be made durable: left unacknowledged, delivered again later
    task_failures: int = 0  # batches whose handling failed unexpectedly (logged; their requests are redelivered)
    reconnects: int = 0  # times the broker link dropped and was re-made
    batched: int = 0  # the batches' sizes summed (a streaming model: sequences summed over its decode steps)

    def copy(self) -> Counters:
        return Counters(*(getattr(self, f.name) for f in fields(self)))

    def totals(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
    reply_failures: int = 0
    held: int = 0
    task_failures: int = 0
    gpu: tuple[GpuFigures, ...] = ()  # per GPU, when GPU telemetry is on


def one_line(text: str) -> str:
    """Text for a log line: whatever is not printable (controls, bidi marks, lone surrogates) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def gpu_text(figures: tuple[GpuFigures, ...]) -> str:
    """The GPU part of a human metrics line: ``; GPU0 util 87.5%, mem 30,512/81,559 MiB, 312.4 W, SM 1,980 MHz``."""
    parts = []
    for g in figures:
        said = [text for value, text in (
            (g.util_pct, f"util {g.util_pct}%"),
            (g.mem_used_mib, f"mem {g.mem_used_mib or 0:,.0f}/{g.mem_total_mib or 0:,.0f} MiB"),
            (g.power_w, f"{g.power_w} W"), (g.sm_clock_mhz, f"SM {g.sm_clock_mhz or 0:,.0f} MHz")) if value is not None]
        parts.append(f"; GPU{g.index} " + (", ".join(said) or "no figures"))
    return "".join(parts)


class MetricsReporter:
    def __init__(self, worker: str, device: str, model: str, fmt: str = "human", out: TextIO | None = None) -> None:
        self.worker, self.device, self.model, self.fmt = worker, device, model, fmt
        self.out = out or sys.stderr
        self._write_lock = threading.Lock()  # the settler and fetch threads both report: one line, one write
        self.counters = Counters()
        self._last = Counters()
        self._last_t = time.monotonic()
        self.gpu: Callable[[], tuple[GpuFigures, ...]] | None = None  # GpuSampler.take_interval, when it is on

    def interval(self) -> Interval:
        now = time.monotonic()
        c, p = self.counters, self._last
        secs = max(now - self._last_t, 1e-9)
        batches, items = c.batches - p.batches, c.items - p.items
        iv = Interval(worker=self.worker, device=self.device, model=self.model, seconds=round(secs, 3),
                      batches=batches, items=items,
                      mean_batch=round((c.batched - p.batched) / batches, 2) if batches else 0.0,
                      items_per_s=round(items / secs, 1), errors=c.errors - p.errors,
                      dead_lettered=c.dead_lettered - p.dead_lettered, malformed=c.malformed - p.malformed,
                      total_items=c.items, reply_failures=c.reply_failures - p.reply_failures,
                      held=c.held - p.held, task_failures=c.task_failures - p.task_failures,
                      gpu=self.gpu() if self.gpu is not None else ())
        self._last, self._last_t = c.copy(), now
        return iv

    def emit(self) -> Interval:
        iv = self.interval()
        if self.fmt == "json":
            doc = asdict(iv)
            if not iv.gpu:
                del doc["gpu"]
            line = json.dumps({"event": "worker_metrics", **doc})
        else:
            extra = "".join(f", {name.replace('_', ' ')} {value}" for name, value in
                            (("reply_failures", iv.reply_failures), ("held", iv.held),
                             ("task_failures", iv.task_failures)) if value)
            line = (f"qdeck worker {iv.worker} [{iv.model} on {iv.device}] {iv.items_per_s:,.1f} items/s, "
                    f"{iv.batches} batches (mean size {iv.mean_batch}), errors {iv.errors}, "
                    f"dead-lettered {iv.dead_lettered}{extra}, total {iv.total_items:,}{gpu_text(iv.gpu)}")
        self._line(line)
        return iv

    def _line(self, line: str) -> None:
        """One whole line per write, under a lock: ``print`` writes the text and its newline separately, so two
        threads printing at once could glue two JSON events onto one line."""
        with self._write_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def event(self, text: str, **fields: object) -> None:
        """A one-off line (started, stopping, claimed entries) in the chosen format."""
        if self.fmt == "json":
            self._line(json.dumps({"event": text, "worker": self.worker, **fields}))
        else:
            extra = ", ".join(f"{k} {v}" for k, v in fields.items())
            self._line(f"qdeck worker {self.worker}: {text}" + (f" ({extra})" if extra else ""))

    def note(self, event: str, message: str, **fields: Any) -> None:
        """A sentence for people (human format: the sentence alone; JSON: ``event``, ``message`` and ``fields``),
        on one line."""
        message = one_line(message)
        if self.fmt == "json":
            self._line(json.dumps({"event": event, "worker": self.worker, "message": message, **fields}))
        else:
            self._line(f"qdeck worker {self.worker}: {message}")

    def warning(self, message: str) -> None:
        self.note("warning", message)
