"""``qdeck load search``: the highest open-loop rate λ* (``max_rate``) at which every SLO holds.

Each probe is a constant (or Poisson) run of ``probe_s`` at one rate, with its own run id, through the engine,
summary builder and SLO judge of ``load run``. A probe **passes** when (1) every SLO holds on its summary
(``judge_all``, the one judge); (2) the generator kept up (the summary's ``generator.behind``: schedule-lag p99 at
most 10 ms, nothing unsent); (3) the backlog is not growing. The backlog is the requests in flight (sent, neither
answered nor timed out; warm-up ones too, so the series is continuous) at each interval end of the measured window,
regressed on time: it *grows* when the slope's 95 % confidence interval (Student's t) lies above 0 and the fitted
growth over the window is material (at least ``MIN_GROWTH`` requests and ``MIN_GROWTH_SHARE`` of those sent: a
constant-rate sampler beating against the arrivals steps the count by one, which a few seconds' regression can call
significant). The median queue wait per interval is regressed too: it grows when its slope's CI lies above 0 and
it grows by at least 2 % of the time passing (20 ms/s), continuous where the count is coarse; a stalled worker
answers nothing, so there the count alone sees the backlog.

A probe whose backlog clearly grows (the rule held at ``EARLY_STREAK`` interval ends in a row) stops sending early.
Either way the engine waits for the requests in flight to be answered or to time out, so the next probe starts on
a drained queue (requests that timed out may still be queued). A probe that failed only because the generator fell
behind is run once more and the second verdict stands: one stall of a shared VM fails a short probe at any rate.

``RateSearch`` picks the rates: double from ``start`` while probes pass (up to ``ceiling``), halve while they fail
(down to ``floor``), then bisect between the highest pass and the lowest fail until the fail is within
``precision`` of the pass. λ* is the highest rate that passed; the limit lies in [λ*, λ* × (1 + precision)).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.errors import PlanError
from loadgen.results.slo import Slo, Verdict, judge_all, verdicts_json
from loadgen.results.summary import BEHIND_LAG_US, build_summary, write_outputs
from loadgen.run.engine import Engine, RunResult
from loadgen.run.recorder import IntervalStats
from loadgen.run.schedules import MAX_GENERATOR_RATE, Constant, Poisson
from loadgen.run.spec import RunSpec, new_run_id
from loadgen.transports import open_transport
from probes.errors import ProbeError
from probes.redact import redact_text
from probes.urls import BrokerTarget

DEFAULT_START = 10.0
FLOOR_DIVISOR = 8.0  # default floor: start / 8 (three halvings)
MIN_PROBE_S, MAX_PROBE_S = 1.0, 3600.0
MAX_PRECISION = 0.5
MAX_PROBES = 60
POINTS_PER_PROBE = 20  # interval = probe / 20, within [0.1 s, 1 s]: enough points for a regression
MIN_GROWTH = 3.0  # requests: growth below this over a probe is sampling noise
MIN_GROWTH_SHARE = 0.02  # ... and below this share of the requests sent
MIN_WAIT_GROWTH = 0.02  # queue wait growing slower than 2 % of the time passing (20 ms/s) is not a backlog
EARLY_MIN_POINTS = 6
EARLY_STREAK = 3

# Student's t, two-sided 95 % (the 0.975 quantile), for 1..30 degrees of freedom; beyond, a Cornish-Fisher expansion.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518,
         2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (the half-width factor of a 95 % CI)."""
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


@dataclass(frozen=True, slots=True)
class Trend:
    """A least-squares slope (units per second) and its 95 % confidence half-width (inf with fewer than 3 points)."""

    slope: float
    half_width: float
    points: int

    @property
    def low(self) -> float:
        return self.slope - self.half_width

    @property
    def high(self) -> float:
        return self.slope + self.half_width

    def as_dict(self) -> dict[str, Any]:
        finite = math.isfinite(self.half_width)
        return {"slope_per_s": round(self.slope, 6), "points": self.points,
                "ci95": [round(self.low, 6), round(self.high, 6)] if finite else None}


def fit_trend(points: Sequence[tuple[float, float]]) -> Trend:
    """Ordinary least squares of y on t over ``points`` (t seconds, y any unit), with the slope's 95 % CI."""
    n = len(points)
    if n < 3:
        return Trend(0.0, math.inf, n)
    mt = math.fsum(t for t, _ in points) / n
    my = math.fsum(y for _, y in points) / n
    stt = math.fsum((t - mt) ** 2 for t, _ in points)
    if stt <= 0:
        return Trend(0.0, math.inf, n)
    slope = math.fsum((t - mt) * (y - my) for t, y in points) / stt
    sse = math.fsum((y - my - slope * (t - mt)) ** 2 for t, y in points)
    return Trend(slope, t975(n - 2) * math.sqrt(sse / (n - 2) / stt), n)


def backlog_grows(trend: Trend, span_s: float, sent: int) -> bool:
    """The growth rule: the slope's 95 % CI lies above 0 and the fitted growth over ``span_s`` is material."""
    return trend.low > 0 and trend.slope * span_s >= max(MIN_GROWTH, MIN_GROWTH_SHARE * sent)


def wait_grows(trend: Trend) -> bool:
    """The same rule on the median queue wait (ms): its slope's CI lies above 0 and it grows by at least
    ``MIN_WAIT_GROWTH`` of the time passing (a queue fed faster than it drains waits longer by (λ − μ)/μ s/s)."""
    return trend.low > 0 and trend.slope >= MIN_WAIT_GROWTH * 1000


class RateSearch:
    """Which rate to probe next. Double from ``start`` while probes pass (capped at ``ceiling``), halve while they
    fail (not below ``floor``), then bisect between the highest pass and the lowest fail until the fail is within
    ``precision`` of the pass. ``next_rate`` is None when the search is over."""

    def __init__(self, start: float, ceiling: float, precision: float, floor: float) -> None:
        self.ceiling, self.precision, self.floor = ceiling, precision, floor
        self.passed: float | None = None  # the highest rate that passed
        self.failed: float | None = None  # the lowest rate that failed
        self.probes = 0
        self._next: float | None = min(start, ceiling)

    def next_rate(self) -> float | None:
        return self._next if self.probes < MAX_PROBES else None

    def record(self, rate: float, ok: bool) -> None:
        self.probes += 1
        if ok:
            self.passed = rate if self.passed is None else max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)
        self._next = self._choose()

    def _choose(self) -> float | None:
        passed, failed = self.passed, self.failed
        if failed is None:
            assert passed is not None
            return None if passed >= self.ceiling else min(passed * 2, self.ceiling)
        if passed is None:
            lower = failed / 2
            return lower if lower >= self.floor * (1 - 1e-9) else None
        if failed <= passed * (1 + self.precision) + 1e-12:
            return None
        return (passed + failed) / 2


def check_start(start: float) -> None:
    if not (math.isfinite(start) and 0 < start <= MAX_GENERATOR_RATE):
        raise PlanError(f"--start must be above 0 and at most {MAX_GENERATOR_RATE:,.0f}/s (what one load generator "
                        f"can send), not {start:g}")


def check_probe(probe_s: float) -> None:
    if not (math.isfinite(probe_s) and MIN_PROBE_S <= probe_s <= MAX_PROBE_S):
        raise PlanError(f"--probe must be between {MIN_PROBE_S:g} s and {MAX_PROBE_S / 3600:g} h, not "
                        f"{probe_s:g} s")


@dataclass(frozen=True)
class SearchSpec:
    """A search: ``run`` is the probes' template (queue, payload, warm-up, timeout, coalescing, confirm ...; its
    schedule, length and run id are replaced for each probe)."""

    run: RunSpec
    slos: tuple[Slo, ...]
    start: float = DEFAULT_START
    ceiling: float = MAX_GENERATOR_RATE
    floor: float | None = None  # None: start / FLOOR_DIVISOR
    precision: float = 0.05
    probe_s: float = 10.0
    poisson: bool = False

    def __post_init__(self) -> None:
        if not self.slos:
            raise PlanError("no SLO to search by: give at least one --slo (e.g. --slo 'p99<250ms') or [slo] in the "
                            "plan")
        check_start(self.start)
        if not self.start <= self.ceiling <= MAX_GENERATOR_RATE:
            raise PlanError(f"--max-rate must be at least --start ({self.start:g}/s) and at most "
                            f"{MAX_GENERATOR_RATE:,.0f}/s, not {self.ceiling:g}")
        if not 0 < self.lowest <= self.start:
            raise PlanError(f"--min-rate must be above 0 and at most --start ({self.start:g}/s), not {self.lowest:g}")
        if not 0 < self.precision <= MAX_PRECISION:
            raise PlanError(f"--precision must be above 0 % and at most {MAX_PRECISION:.0%}, not "
                            f"{self.precision * 100:g} %")
        check_probe(self.probe_s)

    @property
    def lowest(self) -> float:
        return self.floor if self.floor is not None else self.start / FLOOR_DIVISOR

    @property
    def interval_s(self) -> float:
        return min(1.0, max(0.1, self.probe_s / POINTS_PER_PROBE))

    def probe_spec(self, rate: float) -> RunSpec:
        schedule = Poisson(rate) if self.poisson else Constant(rate)
        return dataclasses.replace(self.run, schedule=schedule, duration_s=self.probe_s, requests=None,
                                   interval_s=self.interval_s, run_id=new_run_id())


@dataclass
class ProbeOutcome:
    index: int
    rate: float
    ok: bool
    why: list[str]  # what failed, one phrase each (empty when it passed)
    verdicts: list[Verdict]
    backlog: Trend  # requests in flight, per second
    backlog_grew: bool
    queue_wait: Trend  # median queue wait per interval (ms), per second
    wait_grew: bool
    stopped_early: str | None
    summary: dict[str, Any]
    series: list[dict[str, Any]] = field(default_factory=list)  # per interval: t_s, in_flight, queue_wait_ms
    directory: str | None = None

    @property
    def behind(self) -> bool:
        return bool(self.summary["generator"]["behind"])

    @property
    def growing(self) -> bool:
        return self.backlog_grew or self.wait_grew

    @property
    def failures(self) -> list[str]:
        """What failed: ``slo``, ``generator``, ``backlog`` (empty when the probe passed)."""
        return ([*(["slo"] if any(not v.ok for v in self.verdicts) else []),
                 *(["generator"] if self.behind else []), *(["backlog"] if self.growing else [])])

    def backlog_text(self) -> str:
        return _trend_text("backlog", self.backlog, self.backlog_grew, "/s")

    def wait_text(self) -> str:
        return _trend_text("queue wait", self.queue_wait, self.wait_grew, " ms/s")

    def as_dict(self) -> dict[str, Any]:
        s = self.summary
        stages = s["stages"]
        return {"index": self.index, "rate": round(self.rate, 6), "ok": self.ok, "why": list(self.why),
                "failures": self.failures,
                "run_id": s["run_id"], "dir": self.directory, "stopped_early": self.stopped_early,
                "achieved": s["rates"]["achieved"], "counts": dict(s["counts"]),
                "end_to_end": _figures(stages["end_to_end"]), "queue_wait": _figures(stages["queue_wait"]),
                "generator": dict(s["generator"]), "slo": verdicts_json(self.verdicts),
                "backlog": {**self.backlog.as_dict(), "growing": self.backlog_grew},
                "queue_wait_trend_ms_per_s": {**self.queue_wait.as_dict(), "growing": self.wait_grew},
                "series": self.series, "summary": s}


def _trend_text(what: str, trend: Trend, grew: bool, unit: str) -> str:
    if not math.isfinite(trend.half_width):
        return f"{what} ? (only {trend.points} intervals)"
    return (f"{what} {'grew' if grew else 'flat'} {trend.slope:+.2f}{unit} (95% CI {trend.low:+.2f} to "
            f"{trend.high:+.2f})")


def _figures(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "at_least")}


@dataclass
class SearchOutcome:
    spec: SearchSpec
    broker: str
    broker_kind: str
    started_epoch_s: float
    probes: list[ProbeOutcome] = field(default_factory=list)
    max_rate: float | None = None  # λ*: the highest rate that passed
    failed_rate: float | None = None  # the lowest that failed (None: the ceiling held)
    error: str | None = None  # why the search ended before its end (the broker went away)

    def probe_at(self, rate: float | None) -> ProbeOutcome | None:
        return next((p for p in reversed(self.probes) if rate is not None and p.rate == rate), None)

    def document(self) -> dict[str, Any]:
        """search.json (and ``--json``): the search, every probe with its summary, and λ* (``max_rate``)."""
        spec, run = self.spec, self.spec.run
        above = self.probe_at(self.failed_rate)
        curve = sorted(({"rate": round(p.rate, 6), "achieved": p.summary["rates"]["achieved"],
                         "p50_ms": p.summary["stages"]["end_to_end"].get("p50_ms"),
                         "p99_ms": p.summary["stages"]["end_to_end"].get("p99_ms"),
                         "queue_wait_p99_ms": p.summary["stages"]["queue_wait"].get("p99_ms"),
                         "backlog_slope_per_s": round(p.backlog.slope, 6),
                         "queue_wait_slope_ms_per_s": round(p.queue_wait.slope, 6), "ok": p.ok} for p in self.probes),
                       key=lambda c: c["rate"])
        return {
            "schema": "qdeck.search/1",
            "started_at": datetime.fromtimestamp(self.started_epoch_s, UTC).isoformat(timespec="milliseconds"),
            "broker": self.broker, "broker_kind": self.broker_kind, "queue": run.queue, "workload": run.workload,
            "slo": [s.text for s in spec.slos],
            "search": {"start": spec.start, "max_rate": spec.ceiling, "min_rate": spec.lowest,
                       "precision": spec.precision, "probe_s": spec.probe_s, "interval_s": spec.interval_s,
                       "warmup_s": run.warmup_s, "timeout_s": run.timeout_s,
                       "schedule": "poisson" if spec.poisson else "constant",
                       "rule": {"confidence": 0.95, "min_growth": MIN_GROWTH, "min_growth_share": MIN_GROWTH_SHARE,
                                "min_wait_growth_ms_per_s": MIN_WAIT_GROWTH * 1000,
                                "max_schedule_lag_p99_ms": BEHIND_LAG_US / 1000}},
            "max_rate": None if self.max_rate is None else round(self.max_rate, 6),
            "failed_rate": None if self.failed_rate is None else round(self.failed_rate, 6),
            "ceiling_held": self.max_rate is not None and self.failed_rate is None,
            "limited_by": None if above is None else above.failures,
            "error": self.error,
            "curve": curve,
            "probes": [p.as_dict() for p in self.probes],
        }


class _Watch:
    """Collects a probe's per-interval backlog and queue wait, and stops the probe once its backlog clearly grows."""

    def __init__(self, spec: RunSpec) -> None:
        self.warm_s = spec.warmup_s
        self.end_s = spec.warmup_s + (spec.duration_s or 0.0)
        self.backlog: list[tuple[float, float]] = []
        self.waits: list[tuple[float, float]] = []
        self.series: list[dict[str, Any]] = []
        self.sent = 0
        self.streak = 0
        self.stopped: str | None = None
        self.engine: Engine | None = None
        self._wait_ms: float | None = None

    def on_interval(self, stats: IntervalStats, histograms: dict[str, HdrHistogram]) -> None:
        """The recorder's hook, before the interval's histograms are reset: keep its median queue wait (hdrh's
        ``get_mean_value`` walks all 23,552 counts in Python, ~30 ms here, which would hold up the sender; a
        percentile stops at its value)."""
        qw = histograms["queue_wait"]
        self._wait_ms = qw.get_value_at_percentile(50) / 1000 if qw.get_total_count() else None

    def progress(self, stats: IntervalStats, result: RunResult) -> None:
        """After each interval: the requests in flight now (``result.in_flight``), the regression, the early stop."""
        if self.stopped is not None or not self.warm_s + 1e-9 < stats.end_s <= self.end_s + 1e-9:
            return  # warm-up, the drain after the window, or stopped
        t = stats.end_s - self.warm_s
        self.sent += stats.sent
        self.backlog.append((t, float(result.in_flight)))
        if self._wait_ms is not None:
            self.waits.append(((max(stats.start_s, self.warm_s) + stats.end_s) / 2 - self.warm_s, self._wait_ms))
        self.series.append({"t_s": round(t, 3), "in_flight": result.in_flight,
                            "queue_wait_ms": None if self._wait_ms is None else round(self._wait_ms, 3)})
        if len(self.backlog) < EARLY_MIN_POINTS:
            return
        trend = fit_trend(self.backlog)
        self.streak = self.streak + 1 if backlog_grows(trend, t, self.sent) else 0
        if self.streak >= EARLY_STREAK and self.engine is not None:
            self.stopped = (f"backlog grew {trend.slope:+.2f}/s (95% CI {trend.low:+.2f} to {trend.high:+.2f}) "
                            f"over {t:.1f} s: probe stopped early")
            # The engine's own stop flag (what --abort-on sets): the run stops sending, drains, and says why.
            self.engine.stop(self.stopped)


async def run_probe(target: BrokerTarget, spec: SearchSpec, index: int, rate: float, out: Path | None = None, *,
                    started: Callable[[], None] | None = None) -> ProbeOutcome:
    """One probe at ``rate``: run it, judge it (SLOs, generator, backlog); its files under ``out/probe-NN-RATE``."""
    run = spec.probe_spec(rate)
    watch = _Watch(run)
    transport = open_transport(target, run.queue, run.run_id, confirm=run.confirm, persistent=run.persistent)
    engine = Engine(transport, run, progress=watch.progress, started=started)
    engine.recorder.on_interval = watch.on_interval
    watch.engine = engine
    directory = out / f"probe-{index:02d}-{_rate_name(rate)}" if out is not None else None
    result = await engine.run(str(directory) if directory is not None else None)
    if result.aborted is not None and not result.stopped_by_slo:
        raise ProbeError(f"probe {index} at {rate:g}/s: the run was aborted: {result.aborted}")
    summary = build_summary(result.record(broker=target.display, broker_kind=target.kind))
    verdicts = judge_all(summary, spec.slos)
    summary["slo"] = verdicts_json(verdicts)
    measured = max(watch.backlog[-1][0], 1e-9) if watch.backlog else run.duration_s or 0.0
    backlog, wait = fit_trend(watch.backlog), fit_trend(watch.waits)
    why = [f"{v.slo.text} failed: {v.actual}" for v in verdicts if not v.ok]
    gen = summary["generator"]
    if gen["behind"]:
        why.append(f"the generator fell behind (schedule-lag p99 {gen['schedule_lag_p99_ms']:.1f} ms, "
                   f"{summary['counts']['unsent']:,} unsent)")
    outcome = ProbeOutcome(index=index, rate=rate, ok=False, why=why, verdicts=verdicts, backlog=backlog,
                           backlog_grew=watch.stopped is not None or backlog_grows(backlog, measured, watch.sent),
                           queue_wait=wait, wait_grew=wait_grows(wait), stopped_early=watch.stopped,
                           summary=summary, series=watch.series,
                           directory=directory.name if directory is not None else None)
    if outcome.backlog_grew:
        why.append(outcome.backlog_text() + (": stopped early" if watch.stopped else ""))
    if outcome.wait_grew:
        why.append(outcome.wait_text())
    outcome.ok = not why
    if directory is not None:
        write_outputs(summary, result.recorder.total["end_to_end"], directory)
    return outcome


def _rate_name(rate: float) -> str:
    text = f"{float(f'{rate:.4g}'):f}".rstrip("0").rstrip(".")
    return text or "0"


async def run_search(target: BrokerTarget, spec: SearchSpec, *, out: Path | None = None,
                     on_probe: Callable[[ProbeOutcome], None] | None = None,
                     started: Callable[[], None] | None = None) -> SearchOutcome:
    """Probe rates as ``RateSearch`` says until λ* is known within the precision. ``started`` is called once the
    first probe is connected, ``on_probe`` after each probe. With ``out``, search.json is rewritten after every
    probe (an interrupted search keeps what it found), next to each probe's run directory."""
    outcome = SearchOutcome(spec=spec, broker=target.display, broker_kind=target.kind, started_epoch_s=time.time())
    rates = RateSearch(spec.start, spec.ceiling, spec.precision, spec.lowest)
    rate = rates.next_rate()
    try:
        while rate is not None:
            probe = await run_probe(target, spec, len(outcome.probes) + 1, rate, out,
                                    started=started if not outcome.probes else None)
            outcome.probes.append(probe)
            if on_probe is not None:
                on_probe(probe)
            if probe.failures == ["generator"] and not _retried(outcome.probes, rate):
                continue  # once more: one stall of the machine is not a limit (the second verdict stands)
            rates.record(rate, probe.ok)
            outcome.max_rate, outcome.failed_rate = rates.passed, rates.failed
            if out is not None:
                write_document(outcome, out)
            rate = rates.next_rate()
    except ProbeError as exc:
        outcome.error = redact_text(str(exc), target.secrets)
        if out is not None:
            write_document(outcome, out)
        raise ProbeError(outcome.error) from None
    return outcome


def _retried(probes: list[ProbeOutcome], rate: float) -> bool:
    return sum(1 for p in probes if p.rate == rate) > 1


def write_document(outcome: SearchOutcome, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "search.json"
    path.write_text(json.dumps(outcome.document(), indent=2, ensure_ascii=True) + "\n")
    return path
