"""One HdrHistogram per stage (µs, 1 µs to 1 h, 3 significant figures), rolled once per interval.

Values are recorded into interval histograms; ``roll()`` adds them into the run's totals, writes them to the interval
logs (``.hlog``) and returns the interval's figures, so percentiles are computed once per interval, never per request.
Values the histogram cannot hold are counted (``record_value`` returns False silently otherwise), and negative
stage times (clock skew between hosts) are clamped to 0 and counted.
"""

from __future__ import annotations

import ctypes
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from loadgen.envelope import Stamps

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGFIGS = 3
STAGES = ("end_to_end", "end_to_end_uncorrected", "schedule_lag", "queue_wait", "batch_wait", "service",
          "reply_transit")
REPLY_STAGES = ("end_to_end", "end_to_end_uncorrected", "queue_wait", "batch_wait", "service", "reply_transit")
STAGE_HELP = {
    "end_to_end": "reply received − intended send time (coordinated-omission correct)",
    "end_to_end_uncorrected": "reply received − actual send time (what a closed-loop tool reports)",
    "schedule_lag": "actual send − intended send (the generator's own health)",
    "queue_wait": "taken by the worker − sent",
    "batch_wait": "inference start − taken by the worker (batch forming, waiting for a model slot)",
    "service": "inference end − inference start",
    "reply_transit": "reply received − inference end (reply publish and delivery)",
}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS)


def _reset(hist: HdrHistogram) -> None:
    """``HdrHistogram.reset`` zeroes its counts one by one in Python; a memset does it in microseconds."""
    ctypes.memset(ctypes.addressof(hist.counts), 0, ctypes.sizeof(hist.counts))
    hist.total_count = 0
    hist.min_value = sys.maxsize
    hist.max_value = 0
    hist.start_time_stamp_msec = sys.maxsize
    hist.end_time_stamp_msec = 0


class FastSink:
    """One interval histogram's counts, recorded into by ``Recorder._record`` with HdrHistogram's index arithmetic
    inlined (~3× cheaper than ``record_value``, and bit-for-bit the same counts: tests check it). The total, min
    and max are applied to the histogram at ``flush()``, before anyone reads it."""

    __slots__ = ("counts", "hi", "hist", "lo", "n", "stage")

    def __init__(self, hist: HdrHistogram, stage: str) -> None:
        self.hist, self.stage = hist, stage
        self.counts = hist.counts
        self.n, self.lo, self.hi = 0, 1 << 62, 0

    def flush(self) -> None:
        if self.n:
            h = self.hist
            h.total_count += self.n
            h.min_value = min(h.min_value, self.lo)
            h.max_value = max(h.max_value, self.hi)
            self.n, self.lo, self.hi = 0, 1 << 62, 0


def log_path(directory: Path, stage: str) -> Path:
    return directory / "latency.hlog" if stage == "end_to_end" else directory / "hlog" / f"{stage}.hlog"


def open_log(path: Path, stage: str, start_epoch_s: float) -> tuple[HistogramLogWriter, IO[str]]:
    """A new interval log for ``stage``, its header written; intervals are then logged relative to the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("w")
    writer = HistogramLogWriter(fh)
    writer.output_comment(f"qdeck stage {stage}: {STAGE_HELP[stage]}; values in microseconds")
    writer.output_log_format_version()
    # hdrh's output_start_time is broken (treats ms as s, calls a missing iso_format), so both time lines are
    # written here, with the same digits: a StartTime later than BaseTime would make readers skip the first interval.
    epoch = f"{start_epoch_s:.6f}"
    stamp = datetime.fromtimestamp(start_epoch_s, UTC).isoformat(" ", timespec="milliseconds")
    writer.output_comment(f"[StartTime: {epoch} (seconds since epoch), {stamp}]")
    writer.output_comment(f"[BaseTime: {epoch} (seconds since epoch)]")
    writer.output_legend()
    return writer, fh


@dataclass(frozen=True, slots=True)
class IntervalStats:
    start_s: float
    end_s: float
    sent: int
    replied: int
    errors: int
    timeouts: int
    p50_us: int
    p99_us: int
    max_us: int
    schedule_lag_p99_us: int

    @property
    def achieved_rate(self) -> float:
        return self.sent / max(self.end_s - self.start_s, 1e-9)


@dataclass
class Recorder:
    interval: dict[str, HdrHistogram] = field(default_factory=lambda: {s: new_histogram() for s in STAGES})
    total: dict[str, HdrHistogram] = field(default_factory=lambda: {s: new_histogram() for s in STAGES})
    out_of_range: Counter[str] = field(default_factory=Counter)
    clamped: Counter[str] = field(default_factory=Counter)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    devices: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    replied: int = 0
    _iv_sent: int = 0
    _iv_replied: int = 0
    _iv_errors: int = 0
    _iv_timeouts: int = 0
    _writers: dict[str, tuple[HistogramLogWriter, IO[str]]] = field(default_factory=dict)
    intervals: list[IntervalStats] = field(default_factory=list)
    _sinks: dict[str, FastSink] = field(default_factory=dict)
    _lag_sink: tuple[FastSink, ...] = ()
    _reply_sinks: tuple[FastSink, ...] = ()
    _layout: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    def __post_init__(self) -> None:
        self._sinks = {stage: FastSink(h, stage) for stage, h in self.interval.items()}
        self._lag_sink = (self._sinks["schedule_lag"],)
        self._reply_sinks = tuple(self._sinks[s] for s in REPLY_STAGES)
        h = self.interval["end_to_end"]  # every stage's histogram has the same layout
        self._layout = (h.sub_bucket_mask, h.unit_magnitude, h.sub_bucket_half_count_magnitude,
                        h.sub_bucket_half_count, h.counts_len)

    def _record(self, sinks: tuple[FastSink, ...], values: tuple[int, ...]) -> None:
        """Record ns ``values`` as µs into ``sinks``, pairwise: a negative value is clamped to 0 and counted, one
        beyond the range is counted instead of recorded (``record_value`` would drop it silently)."""
        mask, unit, half_mag, half_count, counts_len = self._layout
        top = unit + half_mag + 1
        for sink, ns in zip(sinks, values, strict=True):
            if ns < 0:
                self.clamped[sink.stage] += 1
                ns = 0
            value = ns // 1000
            bucket = (value | mask).bit_length() - top
            index = ((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half_count
            if index >= counts_len:
                self.out_of_range[sink.stage] += 1
                continue
            sink.counts[index] += 1
            sink.n += 1
            if value < sink.lo:
                sink.lo = value
            if value > sink.hi:
                sink.hi = value

    def flush(self) -> None:
        """Bring the interval histograms' totals up to date (``roll`` does this itself)."""
        for sink in self._sinks.values():
            sink.flush()

    def record_sent(self, count: int = 1) -> None:
        self.sent += count
        self._iv_sent += count

    def record_schedule_lag(self, intended_ns: int, sent_ns: int) -> None:
        self._record(self._lag_sink, (sent_ns - intended_ns,))

    def record_reply(self, intended_ns: int, sent_ns: int, received_ns: int, stamps: Stamps, batch_size: int,
                     device: str) -> None:
        self.replied += 1
        self._iv_replied += 1
        dequeued, _formed, start, end, _published = stamps
        # In REPLY_STAGES order.
        self._record(self._reply_sinks, (received_ns - intended_ns, received_ns - sent_ns, dequeued - sent_ns,
                                         start - dequeued, end - start, received_ns - end))
        self.batch_sizes[batch_size] += 1
        self.devices[device] += 1

    def record_error(self, kind: str) -> None:
        self.errors[kind] += 1
        if kind == "timeout":
            self._iv_timeouts += 1
        else:
            self._iv_errors += 1

    @property
    def timeouts(self) -> int:
        return self.errors.get("timeout", 0)

    @property
    def error_count(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "timeout")

    def open_logs(self, directory: Path, start_epoch_s: float) -> None:
        """One interval log per stage: ``latency.hlog`` is end_to_end; the others are ``hlog/<stage>.hlog``."""
        for stage in STAGES:
            self._writers[stage] = open_log(log_path(directory, stage), stage, start_epoch_s)

    def roll(self, start_s: float, end_s: float) -> IntervalStats:
        """Close the interval [start_s, end_s) (seconds from the run start): totals, logs, figures."""
        self.flush()
        e2e = self.interval["end_to_end"]
        lag = self.interval["schedule_lag"]
        stats = IntervalStats(start_s=start_s, end_s=end_s, sent=self._iv_sent, replied=self._iv_replied,
                              errors=self._iv_errors, timeouts=self._iv_timeouts,
                              p50_us=e2e.get_value_at_percentile(50) if e2e.get_total_count() else 0,
                              p99_us=e2e.get_value_at_percentile(99) if e2e.get_total_count() else 0,
                              max_us=e2e.get_max_value() if e2e.get_total_count() else 0,
                              schedule_lag_p99_us=lag.get_value_at_percentile(99) if lag.get_total_count() else 0)
        for stage in STAGES:
            hist = self.interval[stage]
            if stage in self._writers:
                self._writers[stage][0].output_interval_histogram(hist, start_s, end_s, max_value_unit_ratio=1000.0)
            if hist.get_total_count():
                self.total[stage].add(hist)
            _reset(hist)
        self._iv_sent = self._iv_replied = self._iv_errors = self._iv_timeouts = 0
        self.intervals.append(stats)
        return stats

    def close_logs(self) -> None:
        for _writer, fh in self._writers.values():
            fh.close()
        self._writers.clear()
