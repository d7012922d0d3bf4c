"""Arrival schedules: the *intended* send times (ns from the run's start) of an open-loop test.

constant, poisson, ramp (from → to over a duration), steps (rate for a time, then the next), trace replay (CSV of
offsets and payload sizes). Closed-loop concurrency is not a schedule of times: see ``ClosedLoop``.
Every schedule is deterministic for a given seed.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NS = 1_000_000_000


class ScheduleError(ValueError):
    """A schedule that cannot be built; one line for the user."""


@dataclass(frozen=True, slots=True)
class Arrival:
    offset_ns: int
    payload_size: int | None = None  # trace replay may set a size per request


@dataclass(frozen=True, slots=True)
class Constant:
    rate: float
    kind: str = "constant"

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        _positive(self.rate)
        step = NS / self.rate
        i = 0
        while True:
            yield Arrival(int(i * step))
            i += 1

    def describe(self) -> str:
        return f"constant {self.rate:g}/s"

    def mean_rate(self, duration_s: float) -> float:
        return self.rate


@dataclass(frozen=True, slots=True)
class Poisson:
    rate: float
    kind: str = "poisson"

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        _positive(self.rate)
        rng = random.Random(seed)
        t = 0.0
        while True:
            yield Arrival(int(t))
            t += rng.expovariate(self.rate) * NS

    def describe(self) -> str:
        return f"poisson {self.rate:g}/s"

    def mean_rate(self, duration_s: float) -> float:
        return self.rate


@dataclass(frozen=True, slots=True)
class Ramp:
    """Rate goes linearly from ``start`` to ``end`` over ``over_s`` seconds, then stays at ``end``."""

    start: float
    end: float
    over_s: float
    kind: str = "ramp"

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        if self.start < 0 or self.end <= 0 or self.over_s <= 0:
            raise ScheduleError("ramp needs a start rate >= 0, an end rate > 0 and a duration > 0")
        k = (self.end - self.start) / self.over_s
        n = 0
        while True:
            # Invert the cumulative count N(t) = start*t + k*t²/2 for the n-th arrival.
            ramp_total = self.start * self.over_s + k * self.over_s**2 / 2
            if n < ramp_total:
                t = n / self.start if abs(k) < 1e-12 else (-self.start + math.sqrt(self.start**2 + 2 * k * n)) / k
            else:
                t = self.over_s + (n - ramp_total) / self.end
            yield Arrival(int(t * NS))
            n += 1

    def describe(self) -> str:
        return f"ramp {self.start:g}/s → {self.end:g}/s over {self.over_s:g} s"

    def mean_rate(self, duration_s: float) -> float:
        if duration_s <= self.over_s:
            return self.start + (self.end - self.start) * duration_s / self.over_s / 2
        ramp = (self.start + self.end) / 2 * self.over_s
        return (ramp + self.end * (duration_s - self.over_s)) / duration_s


@dataclass(frozen=True, slots=True)
class Steps:
    """(rate, seconds) pairs in turn; the last rate holds after the last step."""

    steps: tuple[tuple[float, float], ...]
    kind: str = "steps"

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        if not self.steps or any(r <= 0 or d <= 0 for r, d in self.steps):
            raise ScheduleError("steps need rate:duration pairs with both above zero")
        begin = 0.0
        for i, (rate, secs) in enumerate(self.steps):
            last = i == len(self.steps) - 1
            n = 0
            while True:
                t = begin + n / rate
                if not last and t >= begin + secs:
                    break
                yield Arrival(int(t * NS))
                n += 1
            begin += secs

    def describe(self) -> str:
        return "steps " + ", ".join(f"{r:g}/s for {d:g} s" for r, d in self.steps)

    def mean_rate(self, duration_s: float) -> float:
        total, t = 0.0, 0.0
        for rate, secs in self.steps:
            span = min(secs, max(duration_s - t, 0.0))
            total += rate * span
            t += secs
        if duration_s > t:
            total += self.steps[-1][0] * (duration_s - t)
        return total / duration_s if duration_s else 0.0


@dataclass(frozen=True, slots=True)
class Trace:
    """Replay of a CSV with ``offset_ms`` (or ``offset_s``) and optional ``payload_bytes`` columns."""

    rows: tuple[Arrival, ...]
    source: str = ""
    kind: str = "trace"

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        p = Path(path)
        try:
            with p.open(newline="") as fh:
                reader = csv.DictReader(fh)
                fields = set(reader.fieldnames or ())
                scale = 1e6 if "offset_ms" in fields else 1e9 if "offset_s" in fields else None
                if scale is None:
                    raise ScheduleError(f"trace {p}: needs an offset_ms or offset_s column (has {sorted(fields)})")
                col = "offset_ms" if scale == 1e6 else "offset_s"
                rows = []
                for line_no, row in enumerate(reader, start=2):
                    try:
                        off = int(float(row[col]) * scale)
                        size = int(row["payload_bytes"]) if row.get("payload_bytes") else None
                    except (TypeError, ValueError):
                        raise ScheduleError(f"trace {p} line {line_no}: not a number") from None
                    if off < 0 or (size is not None and size < 0):
                        raise ScheduleError(f"trace {p} line {line_no}: negative value")
                    rows.append(Arrival(off, size))
        except OSError as exc:
            raise ScheduleError(f"cannot read trace {p}: {exc.strerror}") from None
        if not rows:
            raise ScheduleError(f"trace {p} has no rows")
        return cls(tuple(sorted(rows, key=lambda a: a.offset_ns)), str(p))

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        yield from self.rows

    def describe(self) -> str:
        return f"trace {self.source} ({len(self.rows)} requests)"

    def mean_rate(self, duration_s: float) -> float:
        limit = duration_s * NS
        count = sum(1 for a in self.rows if a.offset_ns < limit)
        return count / duration_s if duration_s else 0.0


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """N requests in flight: each sends the next as soon as its reply (or timeout) comes. For contrast only: it
    waits on the system it measures, so it hides stalls (coordinated omission)."""

    concurrency: int
    kind: str = "closed"

    def describe(self) -> str:
        return f"closed loop, {self.concurrency} in flight"

    def mean_rate(self, duration_s: float) -> float:
        return 0.0


Schedule = Constant | Poisson | Ramp | Steps | Trace
AnySchedule = Schedule | ClosedLoop


def parse_steps(text: str) -> tuple[tuple[float, float], ...]:
    """``100:10s,200:10s`` → ((100, 10), (200, 10))."""
    from loadgen.units import parse_duration

    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        rate, sep, dur = part.partition(":")
        if not sep:
            raise ScheduleError(f"step {part!r} is not RATE:DURATION (e.g. 100:10s)")
        try:
            out.append((float(rate), parse_duration(dur)))
        except ValueError as exc:
            raise ScheduleError(f"step {part!r}: {exc}") from None
    if not out:
        raise ScheduleError("--steps is empty")
    return tuple(out)


def _positive(rate: float) -> None:
    if not rate > 0 or math.isinf(rate):
        raise ScheduleError(f"rate must be a positive number, not {rate}")
