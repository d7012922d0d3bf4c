"""One HdrHistogram per stage (µs, see ``loadgen.results.stages``), rolled once per interval.

Values are recorded into interval histograms; ``roll()`` adds them into the run's totals, writes them to the interval
logs (``.hlog``) and returns the interval's figures, so percentiles are computed once per interval, never per request.
Values the histogram cannot hold are counted (``record_value`` returns False silently otherwise). A negative stage
time is clamped to 0 and counted; only one below ``-SKEW_TOLERANCE_US`` counts as clock skew between hosts (on one
host a few µs either way is the resolution of two clocks, not skew).

A request that timed out enters ``end_to_end`` and ``end_to_end_uncorrected`` at no less than the timeout (as wrk2
and k6 count a timed-out request), so a percentile that lands on timeouts shows at least the timeout instead of
vanishing from the figures; ``timeouts_by_stage`` says how many of each stage's values are such lower bounds.

Streamed replies (LLM-shaped load) add the metrics registered in ``stages.LLM_METRICS``: ``ttft`` and
``ttft_uncorrected`` on a stream's first chunk, ``itl`` on every chunk after it, ``tpot``, ``input_tokens`` and
``output_tokens`` when the stream completes (its end-to-end stages as any reply's). A request with no chunk by the
timeout enters ``ttft`` and ``ttft_uncorrected`` at no less than the timeout, as ``end_to_end`` does. Their
interval logs are opened once the first chunk has come (``hlog/<metric>.hlog``); token metrics hold token counts.
Each completed stream is judged against the run's per-request objectives (``met``: what goodput and attainment count).

``service_by_batch`` keeps, per batch size, the count, sum and sum of squares of the service time (integer µs) of
the replies: the joint record ``qdeck load plan`` fits service time against batch size from, in constant memory.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

from loadgen.envelope import Stamps
from loadgen.results import hdrh_compat
from loadgen.results.gpu_intervals import GpuIntervals
from loadgen.results.interval_csv import IntervalCsv
from loadgen.results.objectives import Objectives
from loadgen.results.stages import (
    LLM_HISTOGRAMS,
    REPLY_STAGES,
    STAGES,
    TIMEOUT_STAGES,
    log_path,
    new_histogram,
    open_log,
)

if TYPE_CHECKING:
    from loadgen.run.streams import Stream

TTFT_STAGES = ("ttft", "ttft_uncorrected")
ALL = STAGES + LLM_HISTOGRAMS
BrokerFigures = Callable[[float, float], tuple[int | None, int | None]]  # an interval's (depth, consumers)
SKEW_TOLERANCE_US = 1000  # a negative cross-host stage beyond this is clock skew; within it, measurement noise
BULK_VALUES = 3072  # values buffered for bulk recording before they are counted (512 replies of 6 stages)


class FastSink:
    """One interval histogram's counts, recorded into by ``Recorder._record`` with HdrHistogram's index arithmetic
    inlined (~3× cheaper than ``record_value``, and bit-for-bit the same counts: tests check it), or in bulk by
    ``Recorder._count_bulk``. The total, min and max are applied to the histogram at ``flush()``, before anyone
    reads it."""

    __slots__ = ("counts", "hi", "hist", "lo", "n", "stage", "view")

    def __init__(self, hist: HdrHistogram, stage: str) -> None:
        self.hist, self.stage = hist, stage
        self.counts = hdrh_compat.counts_array(hist)
        self.view = hdrh_compat.counts_view(hist)
        self.n, self.lo, self.hi = 0, 1 << 62, 0

    def flush(self) -> None:
        if self.n:
            hdrh_compat.apply_totals(self.hist, self.n, self.lo, self.hi)
            self.n, self.lo, self.hi = 0, 1 << 62, 0


class Bulk:
    """The hot records of one kind (a reply's stages, a schedule lag, a stream's gap): their stages and sinks, and
    the raw ns values buffered for ``Recorder._count_bulk``, ``len(stages)`` per record (``buf`` None where the
    histograms do not allow bulk counting, ``hdrh_compat.bulk_ok``: their values take ``Recorder._record`` at
    once)."""

    __slots__ = ("buf", "sinks", "stages")

    def __init__(self, stages: tuple[str, ...], sinks: tuple[FastSink, ...], bulk: bool) -> None:
        self.stages, self.sinks = stages, sinks
        self.buf: array[int] | None = array("q") if bulk else None


@dataclass(frozen=True, slots=True)
class IntervalStats:
    start_s: float
    end_s: float
    sent: int  # measured requests sent in the interval
    replied: int
    errors: int
    timeouts: int
    p50_us: int  # end_to_end of the interval's replies and timeouts (a timeout counts as at least the timeout)
    p99_us: int
    max_us: int
    schedule_lag_p99_us: int
    warmup_sent: int = 0
    duplicates: int = 0
    late: int = 0

    @property
    def achieved_rate(self) -> float:
        return self.sent / max(self.end_s - self.start_s, 1e-9)


@dataclass
class Recorder:
    # the stages' histograms, and those of the LLM metrics (stages.LLM_HISTOGRAMS) beside them
    interval: dict[str, HdrHistogram] = field(default_factory=lambda: {s: new_histogram() for s in ALL})
    total: dict[str, HdrHistogram] = field(default_factory=lambda: {s: new_histogram() for s in ALL})
    out_of_range: Counter[str] = field(default_factory=Counter)
    clamped: Counter[str] = field(default_factory=Counter)
    skewed: Counter[str] = field(default_factory=Counter)  # clamped values below -SKEW_TOLERANCE_US
    timeouts_by_stage: Counter[str] = field(default_factory=Counter)
    batch_sizes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    devices: Counter[str] = field(default_factory=Counter)
    workers: Counter[str] = field(default_factory=Counter)  # replies by worker model and batching
    # batch size -> [replies, sum, sum of squares] of their service time in µs (what `load plan` fits)
    service_by_batch: defaultdict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    sent: int = 0
    replied: int = 0
    warmup_sent: int = 0
    duplicates: int = 0
    late: int = 0
    _at_roll: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 0)  # the counts at the last roll: an interval's are the difference
    _writers: dict[str, tuple[HistogramLogWriter, IO[str]]] = field(default_factory=dict)
    _csv: IntervalCsv | None = None
    on_interval: Callable[[IntervalStats, dict[str, HdrHistogram]], None] | None = None  # each interval's figures
    intervals: list[IntervalStats] = field(default_factory=list)
    fast: bool = True  # the inlined hdrh fast path is in use (hdrh_compat.fast_path_ok)
    _sinks: dict[str, FastSink] = field(default_factory=dict)
    _timeout_sinks: tuple[FastSink, ...] = ()
    _layout: hdrh_compat.Layout = (0, 0, 0, 0, 0)
    # Bulk recording of the hot records (raw ns values buffered, counted by numpy every BULK_VALUES)
    _replies: Bulk = field(default_factory=lambda: Bulk(REPLY_STAGES, (), False))
    _lags: Bulk = field(default_factory=lambda: Bulk(("schedule_lag",), (), False))
    _gaps: Bulk = field(default_factory=lambda: Bulk(("itl",), (), False))
    # LLM-shaped load (streamed replies)
    llm_active: bool = False  # a chunk has come, or the run was asked to be LLM-shaped
    llm_facts: dict[str, Any] | None = None  # the run's lengths and objectives (LlmLoad.facts())
    objectives: Objectives = field(default_factory=Objectives)
    output_tokens: int = 0  # every measured chunk's tokens, cut streams included
    streams: int = 0  # streams completed
    streams_cut: int = 0  # streams cut by the timeout after their first chunk
    cut_tokens: int = 0
    met: int = 0  # completed streams that met every objective
    _log_dir: tuple[Path, float] | None = None
    _ttft_sinks: tuple[FastSink, ...] = ()
    _tpot_sink: tuple[FastSink, ...] = ()
    _done_sinks: tuple[FastSink, ...] = ()
    gpu: GpuIntervals = field(default_factory=GpuIntervals)  # the GPU samples replies carried, per interval

    def __post_init__(self) -> None:
        h = self.interval["end_to_end"]  # every stage's histogram has the same layout
        self.fast = all(hdrh_compat.fast_path_ok(hist) for hist in self.interval.values())
        if self.fast:
            self._sinks = {stage: FastSink(hist, stage) for stage, hist in self.interval.items()}
            self._ttft_sinks = tuple(self._sinks[m] for m in TTFT_STAGES)
            self._tpot_sink = (self._sinks["tpot"],)
            self._done_sinks = tuple(self._sinks[m] for m in ("input_tokens", "output_tokens"))
            self._layout = hdrh_compat.layout(h)
            self._timeout_sinks = tuple(self._sinks[s] for s in TIMEOUT_STAGES)
            bulk = all(hdrh_compat.bulk_ok(hist) for hist in self.interval.values())
            self._replies, self._lags, self._gaps = (Bulk(kind.stages, tuple(self._sinks[s] for s in kind.stages), bulk)
                                                     for kind in (self._replies, self._lags, self._gaps))

    def _record(self, sinks: tuple[FastSink, ...], stages: tuple[str, ...], values: tuple[int, ...]) -> None:
        """Record ns ``values`` as µs into ``sinks`` (the histograms of ``stages``), pairwise: a negative value is
        clamped to 0 and counted, one beyond the range is counted instead of recorded."""
        if not self.fast:
            self._record_slow(stages, values)
            return
        layout = self._layout
        mask, unit, half_mag, half_count, counts_len = layout
        top = unit + half_mag + 1
        for sink, ns in zip(sinks, values, strict=True):
            if ns < 0:
                self._clamp(sink.stage, ns)
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

    def _record_slow(self, stages: tuple[str, ...], values: tuple[int, ...]) -> None:
        for stage, ns in zip(stages, values, strict=True):
            if ns < 0:
                self._clamp(stage, ns)
                ns = 0
            if not self.interval[stage].record_value(ns // 1000):
                self.out_of_range[stage] += 1

    def _clamp(self, stage: str, ns: int) -> None:
        self.clamped[stage] += 1
        if ns < -SKEW_TOLERANCE_US * 1000:
            self.skewed[stage] += 1

    def _bulk(self, kind: Bulk, values: Sequence[int]) -> None:
        """Buffer ns ``values`` (whole records of ``kind``, ``len(kind.stages)`` each) for bulk counting; count the
        buffer once it holds ``BULK_VALUES``. Where bulk counting is off, or a value is beyond 64 bits (a hostile
        stamp: the buffer cannot hold it), the records take ``_record`` at once."""
        buf = kind.buf
        if buf is not None:
            start = len(buf)
            try:
                buf.extend(values)
            except OverflowError:
                del buf[start:]
            else:
                if len(buf) >= BULK_VALUES:
                    self._count_bulk(kind)
                return
        k = len(kind.stages)
        for i in range(0, len(values), k):
            self._record(kind.sinks, kind.stages, tuple(values[i:i + k]))

    def _count_bulk(self, kind: Bulk) -> None:
        """Count ``kind``'s buffered values into its sinks (column j of each record into sink j), as ``_record``
        counts them one by one: negative ones clamped to 0 (counted, and as skew below the tolerance), those beyond
        the histogram counted out of range; then empty the buffer."""
        buf, sinks = kind.buf, kind.sinks
        if not buf:
            return
        ns = np.frombuffer(buf, dtype=np.int64).reshape(-1, len(sinks)).copy()
        del buf[:]
        negative = ns < 0
        if negative.any():
            skewed = (ns < -SKEW_TOLERANCE_US * 1000).sum(axis=0)
            for j, clamped in enumerate(negative.sum(axis=0).tolist()):
                if clamped:
                    stage = sinks[j].stage
                    self.clamped[stage] += clamped
                    if skewed[j]:
                        self.skewed[stage] += int(skewed[j])
            ns[negative] = 0
        values = ns // 1000
        index = hdrh_compat.bulk_indices(self._layout, values)
        inside = index < self._layout[4]
        for j, sink in enumerate(sinks):
            col_index, col_values = index[:, j], values[:, j]
            ok = inside[:, j]
            if not ok.all():
                self.out_of_range[sink.stage] += int(ok.size - ok.sum())
                col_index, col_values = col_index[ok], col_values[ok]
            if not col_index.size:
                continue
            first = int(col_index.min())
            counted = np.bincount(col_index - first)
            sink.view[first:first + counted.size] += counted
            sink.n += int(col_index.size)
            lo, hi = int(col_values.min()), int(col_values.max())
            if lo < sink.lo:
                sink.lo = lo
            if hi > sink.hi:
                sink.hi = hi

    def flush(self) -> None:
        """Bring the interval histograms' totals up to date (``roll`` does this itself)."""
        for kind in (self._replies, self._lags, self._gaps):
            self._count_bulk(kind)
        for sink in self._sinks.values():
            sink.flush()

    def record_sent(self, count: int = 1) -> None:
        self.sent += count

    def record_warmup_sent(self, count: int = 1) -> None:
        self.warmup_sent += count

    def record_schedule_lags(self, intended_ns: list[int], sent_ns: int) -> None:
        """One write's requests, all sent at ``sent_ns``: their schedule lags (and their count as sent)."""
        self.sent += len(intended_ns)
        self._bulk(self._lags, [sent_ns - intended for intended in intended_ns])

    def record_schedule_lag(self, intended_ns: int, sent_ns: int) -> None:
        self._bulk(self._lags, (sent_ns - intended_ns,))

    def record_reply(self, intended_ns: int, sent_ns: int, received_ns: int, stamps: Stamps, batch_size: int,
                     device: str, wall_offset_ns: int = 0, worker: str = "") -> None:
        """A reply: ``intended_ns``, ``sent_ns``, ``received_ns`` on the generator's monotonic clock; the worker's
        ``stamps`` are wall-clock ns, so the cross-host stages are taken against the send and receive times on the
        wall clock (monotonic + ``wall_offset_ns``, fixed at the run's start)."""
        self.replied += 1
        dequeued, _formed, start, end, _published = stamps
        self._bulk(self._replies, (received_ns - intended_ns, received_ns - sent_ns,
                                   dequeued - (sent_ns + wall_offset_ns), start - dequeued, end - start,
                                   received_ns + wall_offset_ns - end))
        self.batch_sizes[batch_size] += 1
        service = (end - start) // 1000 if end > start else 0
        sums = self.service_by_batch[batch_size]
        sums[0] += 1
        sums[1] += service
        sums[2] += service * service
        self.devices[device] += 1
        self.workers[worker or "unknown"] += 1

    def record_timeout(self, intended_ns: int, sent_ns: int, timeout_ns: int) -> None:
        """A request with no reply after ``timeout_ns``: it waited at least that long, from its actual send."""
        self.record_error("timeout")
        waited = sent_ns + timeout_ns
        self._record(self._timeout_sinks, TIMEOUT_STAGES, (waited - intended_ns, timeout_ns))
        for stage in TIMEOUT_STAGES:
            self.timeouts_by_stage[stage] += 1

    # -- streamed replies (LLM-shaped load) ------------------------------------------------------------------

    def llm_configure(self, objectives: Objectives, facts: dict[str, Any]) -> None:
        """The run is LLM-shaped: judge completed streams by ``objectives``; ``facts`` go into the summary."""
        self.objectives, self.llm_facts, self.llm_active = objectives, facts, True

    def record_chunk(self, intended_ns: int, sent_ns: int, received_ns: int, tokens: int, gap_ns: int | None) -> None:
        """A measured chunk arrived: the first of its stream (``gap_ns`` None) gives TTFT, the others a gap.

        The gap, recorded for every chunk but a stream's first, is counted in bulk as a reply's stages are
        (``test_recorder_exact`` holds it to hdrh's ``record_value``)."""
        self.llm_active = True
        self.output_tokens += tokens
        if gap_ns is None:
            self._record(self._ttft_sinks, TTFT_STAGES, (received_ns - intended_ns, received_ns - sent_ns))
        else:
            self._bulk(self._gaps, (gap_ns,))

    def record_stream(self, intended_ns: int, sent_ns: int, first_ns: int, last_ns: int, received_ns: int,
                      max_gap_ns: int, stamps: Stamps, batch_size: int, device: str, wall_offset_ns: int, worker: str,
                      input_tokens: int, output_tokens: int) -> None:
        """A stream completed at ``received_ns`` (its final chunk): its end-to-end stages as a reply's (the final
        chunk's stamps), its TPOT (first chunk to ``last_ns``, the last chunk that carried tokens) and token
        counts, and whether it met the objectives."""
        self.record_reply(intended_ns, sent_ns, received_ns, stamps, batch_size, device, wall_offset_ns, worker)
        self.streams += 1
        tpot_ns = (last_ns - first_ns) // (output_tokens - 1) if output_tokens > 1 else None
        if tpot_ns is not None:
            self._record(self._tpot_sink, ("tpot",), (tpot_ns,))
        # token counts are recorded as "ns" ×1000 so that _record's µs conversion gives the count itself; a request
        # that gave no prompt length (0: the worker's default) has no input_tokens value
        if input_tokens > 0:
            self._record(self._done_sinks, ("input_tokens", "output_tokens"),
                         (input_tokens * 1000, output_tokens * 1000))
        else:
            self._record(self._done_sinks[1:], ("output_tokens",), (output_tokens * 1000,))
        if self.objectives.met((first_ns - intended_ns) // 1000, None if tpot_ns is None else tpot_ns // 1000,
                               max_gap_ns // 1000 if output_tokens > 1 else None,
                               (received_ns - intended_ns) // 1000):
            self.met += 1

    def record_stream_timeout(self, intended_ns: int, sent_ns: int, timeout_ns: int, stream: Stream | None) -> None:
        """A streamed request timed out (``record_timeout`` counted it): with no chunk it enters TTFT at no less
        than the timeout; a stream cut after its first chunk keeps its TTFT and gaps, its tokens counted apart."""
        if stream is None or not stream.count:
            waited = sent_ns + timeout_ns
            self._record(self._ttft_sinks, TTFT_STAGES, (waited - intended_ns, timeout_ns))
            for metric in TTFT_STAGES:
                self.timeouts_by_stage[metric] += 1
        else:
            self.streams_cut += 1
            self.cut_tokens += stream.tokens

    def llm_record(self) -> dict[str, Any] | None:
        """The LLM figures as plain data for the summary (None: no stream came and none was asked for)."""
        if not self.llm_active:
            return None
        return {"histograms": {m: self.total[m] for m in LLM_HISTOGRAMS}, "facts": self.llm_facts or {},
                "output_tokens": self.output_tokens,
                "streams": self.streams, "streams_cut": self.streams_cut, "cut_tokens": self.cut_tokens,
                "met": self.met, "objectives": self.objectives.texts}

    def record_error(self, kind: str) -> None:
        self.errors[kind] += 1

    def record_duplicate(self) -> None:
        self.duplicates += 1

    def record_late(self) -> None:
        self.late += 1

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
        self._log_dir = (directory, start_epoch_s)  # the LLM metrics' logs are opened once a chunk has come

    def open_csv(self, path: Path, broker_figures: BrokerFigures | None = None) -> None:
        """Per-interval figures of every stage as CSV rows (``loadgen.results.interval_csv``); ``broker_figures``:
        the request queue's (depth, consumers) at the broker for an interval, when it is sampled."""
        self._csv = IntervalCsv(path)
        self._csv.broker_figures = broker_figures

    def roll(self, start_s: float, end_s: float) -> IntervalStats:
        """Close the interval [start_s, end_s) (seconds from the run start): totals, logs, figures."""
        self.flush()
        e2e = self.interval["end_to_end"]
        lag = self.interval["schedule_lag"]
        has = e2e.get_total_count() > 0
        now = (self.sent, self.replied, self.error_count, self.timeouts, self.warmup_sent, self.duplicates, self.late)
        sent, replied, errors, timeouts, warmup_sent, duplicates, late = (a - b for a, b in zip(now, self._at_roll,
                                                                                               strict=True))
        self._at_roll = now
        stats = IntervalStats(start_s=start_s, end_s=end_s, sent=sent, replied=replied, errors=errors,
                              timeouts=timeouts,
                              p50_us=e2e.get_value_at_percentile(50) if has else 0,
                              p99_us=e2e.get_value_at_percentile(99) if has else 0,
                              max_us=e2e.get_max_value() if has else 0,
                              schedule_lag_p99_us=lag.get_value_at_percentile(99) if lag.get_total_count() else 0,
                              warmup_sent=warmup_sent, duplicates=duplicates, late=late)
        if self._csv is not None:
            self._csv.write(stats, self.interval)
        if self.on_interval is not None:
            self.on_interval(stats, self.interval)
        self.gpu.roll(end_s, self.interval["queue_wait"])
        if self.llm_active:
            self._roll_llm(start_s, end_s)
        for stage in STAGES:
            self._roll_histogram(stage, start_s, end_s)
        self.intervals.append(stats)
        return stats

    def _roll_llm(self, start_s: float, end_s: float) -> None:
        if self._log_dir is not None and "ttft" not in self._writers:
            for metric in LLM_HISTOGRAMS:
                self._writers[metric] = open_log(log_path(self._log_dir[0], metric), metric, self._log_dir[1])
        for metric in LLM_HISTOGRAMS:
            self._roll_histogram(metric, start_s, end_s)

    def _roll_histogram(self, name: str, start_s: float, end_s: float) -> None:
        """Close one histogram's interval: into its interval log (when one is open), into the run's total, reset."""
        hist = self.interval[name]
        if name in self._writers:
            self._writers[name][0].output_interval_histogram(hist, start_s, end_s, max_value_unit_ratio=1000.0)
        if hist.get_total_count():
            self.total[name].add(hist)
        hdrh_compat.reset(hist)

    def close_logs(self) -> None:
        for _writer, fh in self._writers.values():
            fh.close()
        self._writers.clear()
        if self._csv is not None:
            self._csv.close()
            self._csv = None
