"""Arrival schedules: the *intended* send times (ns from the run's start) of an open-loop test.

constant, poisson, ramp (from → to over a duration), steps (rate for a time, then the next), trace replay (CSV of
offsets and payload sizes). Closed-loop concurrency is not a schedule of times: see ``ClosedLoop``.
Every schedule is deterministic for a given seed.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import ScheduleError

NS = 1_000_000_000
MAX_RATE = 10_000_000.0  # requests/s: far past any one generator (see MAX_GENERATOR_RATE); beyond it, a typo
MAX_GENERATOR_RATE = 200_000.0  # what one generator process can send at best (bench/loadgen_ceiling.py: ~50k/s)
MAX_TRACE_NS = 7 * 24 * 3600 * NS
MAX_TRACE_PAYLOAD = 64 * 1024 * 1024




@dataclass(frozen=True, slots=True)
class Arrival:
    offset_ns: int
    payload_size: int | None = None  # trace replay may set a size per request


@dataclass(frozen=True, slots=True)
class Constant:
    rate: float
    kind: str = "constant"

    def __post_init__(self) -> None:
        _positive(self.rate)

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        step = NS / self.rate
        i = 0
        while True:
            yield Arrival(int(i * step))
            i += 1

    def describe(self) -> str:
        return f"constant {self.rate:g}/s"

    def mean_rate(self, duration_s: float) -> float:
        return self.rate

    def count_before(self, t_ns: int) -> int:
        """How many arrivals fall before ``t_ns`` (constant time: what an aborted run never sent)."""
        return 0 if t_ns <= 0 else math.ceil(t_ns * self.rate / NS - 1e-9)


@dataclass(frozen=True, slots=True)
class Poisson:
    rate: float
    kind: str = "poisson"

    def __post_init__(self) -> None:
        _positive(self.rate)

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        rng = random.Random(seed)
        t = 0.0
        while True:
            yield Arrival(int(t))
            t += rng.expovariate(self.rate) * NS

    def describe(self) -> str:
        return f"poisson {self.rate:g}/s"

    def mean_rate(self, duration_s: float) -> float:
        return self.rate

    def count_before(self, t_ns: int) -> int:
        """The expected number of arrivals before ``t_ns`` (a Poisson count is random; this is its mean)."""
        return 0 if t_ns <= 0 else round(t_ns * self.rate / NS)


@dataclass(frozen=True, slots=True)
class Ramp:
    """Rate goes linearly from ``start`` to ``end`` over ``over_s`` seconds, then stays at ``end``."""

    start: float
    end: float
    over_s: float
    kind: str = "ramp"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.over_s)) or self.start < 0 or self.over_s <= 0:
            raise ScheduleError("ramp needs a start rate >= 0, an end rate > 0 and a duration > 0")
        _positive(self.end)
        if self.start > MAX_RATE:
            _positive(self.start)

    def arrivals(self, seed: int) -> Iterator[Arrival]:
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

    def count_before(self, t_ns: int) -> int:
        t = max(t_ns, 0) / NS
        k = (self.end - self.start) / self.over_s
        if t <= self.over_s:
            return math.ceil(self.start * t + k * t * t / 2 - 1e-9)
        ramp_total = self.start * self.over_s + k * self.over_s**2 / 2
        return math.ceil(ramp_total + (t - self.over_s) * self.end - 1e-9)

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

    def __post_init__(self) -> None:
        if not self.steps or any(not (r > 0 and d > 0) or not math.isfinite(d) for r, d in self.steps):
            raise ScheduleError("steps need rate:duration pairs with both above zero")
        for rate, _secs in self.steps:
            _positive(rate)

    @property
    def total_s(self) -> float:
        return sum(d for _r, d in self.steps)

    def count_before(self, t_ns: int) -> int:
        t, begin, total = max(t_ns, 0) / NS, 0.0, 0
        for i, (rate, secs) in enumerate(self.steps):
            last = i == len(self.steps) - 1
            span = t - begin if last else min(t - begin, secs)
            if span <= 0:
                break
            total += math.ceil(span * rate - 1e-9)
            begin += secs
        return total

    def arrivals(self, seed: int) -> Iterator[Arrival]:
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
                        off_f = float(row[col]) * scale
                        size = int(row["payload_bytes"]) if row.get("payload_bytes") else None
                    except (TypeError, ValueError):
                        raise ScheduleError(f"trace {p} line {line_no}: not a number") from None
                    if not math.isfinite(off_f) or off_f > MAX_TRACE_NS:
                        raise ScheduleError(f"trace {p} line {line_no}: offset beyond {MAX_TRACE_NS // NS // 86400} "
                                            "days")
                    off = int(off_f)
                    if off < 0 or (size is not None and size < 0):
                        raise ScheduleError(f"trace {p} line {line_no}: negative value")
                    if size is not None and size > MAX_TRACE_PAYLOAD:
                        raise ScheduleError(f"trace {p} line {line_no}: payload_bytes above {MAX_TRACE_PAYLOAD}")
                    rows.append(Arrival(off, size))
        except OSError as exc:
            raise ScheduleError(f"cannot read trace {p}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ScheduleError(f"trace {p} is not UTF-8 text (a CSV with an offset_ms or offset_s column)") from None
        except csv.Error as exc:
            raise ScheduleError(f"trace {p} is not a readable CSV: {exc}") from None
        if not rows:
            raise ScheduleError(f"trace {p} has no rows")
        return cls(tuple(sorted(rows, key=lambda a: a.offset_ns)), str(p))

    def arrivals(self, seed: int) -> Iterator[Arrival]:
        yield from self.rows

    def count_before(self, t_ns: int) -> int:
        return bisect.bisect_left([a.offset_ns for a in self.rows], t_ns)

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
    if not rate > 0 or not math.isfinite(rate):
        raise ScheduleError(f"rate must be a positive number, not {rate:g}")
    if rate > MAX_RATE:
        raise ScheduleError(f"rate {rate:g}/s is beyond what qdeck can generate (at most {MAX_RATE:,.0f}/s over "
                            f"all agents, {MAX_GENERATOR_RATE:,.0f}/s from one)")


def params(schedule: Schedule | ClosedLoop) -> dict[str, Any]:
    """The schedule's parameters as JSON-ready values (a trace: its source and row count, not its rows)."""
    if isinstance(schedule, Trace):
        return {"source": schedule.source, "rows": len(schedule.rows)}
    doc = dataclasses.asdict(schedule)
    doc.pop("kind", None)
    return {k: list(map(list, v)) if isinstance(v, tuple) else v for k, v in doc.items()}


def initial_rate(schedule: Schedule) -> float:
    """The rate a warm-up runs at before the schedule starts: the schedule's opening rate (over its first second
    when it opens at zero, as a ramp from 0 does)."""
    match schedule:
        case Constant(rate=rate) | Poisson(rate=rate):
            return rate
        case Ramp(start=start):
            return start if start > 0 else schedule.count_before(NS)
        case Steps(steps=steps):
            return steps[0][0]
        case Trace():
            return max(schedule.count_before(NS), 1)
    raise ScheduleError(f"no opening rate for {schedule.kind}")


def peak_rate(schedule: Schedule) -> float:
    match schedule:
        case Constant(rate=rate) | Poisson(rate=rate):
            return rate
        case Ramp(start=start, end=end):
            return max(start, end)
        case Steps(steps=steps):
            return max(r for r, _d in steps)
        case Trace(rows=rows):  # the most requests in any one second of the trace
            offsets = [a.offset_ns for a in rows]
            return float(max(bisect.bisect_left(offsets, t + NS) - i for i, t in enumerate(offsets)))
    return 0.0


Due = tuple[int, int | None, bool]
"""A request the engine is to send: (offset ns from the run's start, payload size or None, whether warm-up)."""


def with_warmup(schedule: Schedule, seed: int, warm_ns: int) -> Iterator[Due]:
    """A run's arrivals as ``(offset_ns, payload_size, is_warmup)``: warm-up arrivals at the schedule's opening
    rate over [0, warm_ns) (Poisson for a Poisson schedule, seeded apart), then the whole schedule, shifted to start
    at ``warm_ns``. So the measured part is the schedule as described, whatever the warm-up. Plain tuples: the
    engine takes tens of thousands a second."""
    if warm_ns:
        rate = initial_rate(schedule)
        opener: Schedule = Poisson(rate) if isinstance(schedule, Poisson) else Constant(rate)
        for arrival in opener.arrivals(seed + 1):
            if arrival.offset_ns >= warm_ns:
                break
            yield arrival.offset_ns, arrival.payload_size, True
    for arrival in schedule.arrivals(seed):
        yield arrival.offset_ns + warm_ns, arrival.payload_size, False
