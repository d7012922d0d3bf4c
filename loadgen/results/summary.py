"""A run's report: ``summary.json`` (schema below), ``end_to_end.hgrm`` (wrk2 ``--latency`` spectrum).

One builder, ``build_summary(RunRecord)``, for local runs and merged distributed runs alike; it reads plain data,
never the engine. summary.json, schema_version 2::

    schema_version, qdeck_version, run_id, started_at (ISO 8601 UTC), broker (redacted), broker_kind, queue,
    workload, schedule {kind, description, params}, payload {size | text_chars}, duration_s, warmup_s, timeout_s,
    coalesce_s, confirm (RabbitMQ publisher confirms), persistent (RabbitMQ delivery mode 2), closed_loop,
    counts {intended, sent, replied, errors, timeouts, unsent, late, duplicates, foreign, malformed_replies,
            warmup_sent},
    errors_by_kind {kind: n}, rates {target, achieved, achieved_ratio},
    stages {name: {count, min_ms, mean_ms, p50_ms, p90_ms, p99_ms, p99_9_ms, max_ms, stddev_ms,
                   timeouts (values entered at no less than the timeout), at_least [figures that are lower bounds],
                   out_of_range, clamped_negative, skewed, histogram (base64 HdrHistogram, µs)}},
    batch_sizes {size: n}, devices {device: n}, workers {"model, batch ≤ N, wait Tms, ×C": n},
    service_by_batch {size: {n, mean_ms, stddev_ms (population), sum_us, sum_sq_us}} (the replies' service time by
        batch size, what ``qdeck load plan`` fits; the integer µs sums make merges exact),
    generator {behind, behind_intervals, schedule_lag_p99_ms, reconnects (broker connections re-made)},
    notes [text], aborted (text or null), gaps [{from_s, to_s, unsent, reason}] (broker outages),
    slo [{slo, ok, actual, detail}] (the SLOs judged when the run was made),
    agents [{index, host, run_id, counts, rates, generator, aborted}] (distributed runs only),
    broker_samples {queue, interval_s, sample_period_s, source,
                    samples [{t_s, depth, in_flight, consumers, lag, depth_max, n}], depth_mean, depth_samples,
                    error} or null,
    littles_law {mean_depth, arrival_rate, mean_queue_wait_ms, predicted_depth, ratio, ratio_stderr,
                 depth_samples} or null,
    llm {ttft, ttft_uncorrected, tpot, itl, e2e, input_tokens, output_tokens, output_tokens_per_s, requests_per_s,
         goodput, attainment, ...} (streamed replies only: the key is absent from other runs; schema and formulas in
         ``loadgen.results.llm_summary``),
    gpu {samples, devices [{worker, index, mem_total_mib, intervals [{t, util_pct, mem_used_mib, power_w,
         sm_clock_mhz, samples}]}], intervals [{t, util_pct, queue_wait_p50_ms}]} (the GPU samples the replies
         carried, per interval: absent when none did; ``loadgen.results.gpu_intervals``),
    flags [{flag, message, intervals_t, likely_causes}] (patterns found in the run, each also a note: today
         ``gpu_idle_while_queue_wait_rises``, the rule in ``gpu_intervals.idle_flag``; absent when none)

``broker_samples``: the request queue as the broker saw it, from a connection of the sampler's own
(``loadgen.run.broker_sampler``), read every ``sample_period_s`` (at a random instant of each period; Redis and
RabbitMQ: 0.025-0.1 s, sized to give the window 320 readings; Kafka: the interval) over the measured window;
``source`` says which broker call gave which figure. ``depth`` is the requests waiting in the broker, not yet handed
to a worker: RabbitMQ ready messages (passive queue.declare, exact), a Redis stream's worker-group lag (entries not
yet delivered; pending ones are ``in_flight``), Kafka's group lag. ``depth_mean``: the mean of every reading's depth
over the window, ``depth_samples`` how many (null and 0 when none worked). ``samples``: one per interval of the
window, t_s its start (seconds from the window's start); ``depth``, ``in_flight``, ``lag`` the means of the
interval's readings (not an instant), ``consumers`` the fewest, ``depth_max`` the largest depth, ``n`` the readings
with a depth (a figure the broker does not give, or an interval whose readings all failed: null). A summary written
when the sampler read once an interval has instants for samples and none of the later keys (``n`` is taken as 1).
``error``: why readings failed (in part or whole); it never fails the run. Null when nothing was sampled: the memory
transport, ``--no-broker-samples``, distributed runs (agents do not sample).
``littles_law`` (``loadgen.results.littles_law``): ``depth_mean`` (older summaries: the samples' mean) against λ·W
(achieved send rate × the queue_wait mean) and their ratio, about 1 on a steady run; null, with a note, when it
cannot be judged (fewer than 5 depth readings, no replies).

Counts: sent = replied + errors + timeouts; unsent were intended and never sent; late replies came after their
request timed out, duplicates for a request already answered (neither is in ``replied``). Timed-out requests are in
``end_to_end`` and ``end_to_end_uncorrected`` at no less than the timeout. All latencies are milliseconds; the
encoded histograms hold microseconds (1 µs to 1 h, 3 significant figures).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from hdrh.histogram import HdrHistogram

from loadgen.errors import ReportError
from loadgen.results.gpu_intervals import idle_flag
from loadgen.results.hdrh_compat import mean_and_stddev
from loadgen.results.latency import at_least
from loadgen.results.littles_law import littles_law
from loadgen.results.llm_summary import llm_section
from loadgen.results.stages import CROSS_HOST_STAGES, STAGES, new_histogram

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))
BEHIND_LAG_US = 10_000  # schedule-lag p99 above this: the generator fell behind
COUNTS = ("intended", "sent", "replied", "errors", "timeouts", "unsent", "late", "duplicates", "foreign",
          "malformed_replies", "warmup_sent")

__all__ = ["BEHIND_LAG_US", "COUNTS", "SCHEMA_VERSION", "ReportError", "RunRecord", "build_summary",
           "load_summary", "service_by_batch_json", "stage_entry", "stage_histogram", "write_hgrm", "write_outputs",
           "write_summary"]


@dataclass
class RunRecord:
    """What a run measured, as plain data: the engine makes one (``RunResult.record()``), and so does the merge of
    a distributed run's shares."""

    facts: dict[str, Any]  # RunSpec.facts(): run_id, queue, workload, schedule, payload, warmup_s, timeout_s, ...
    broker: str  # redacted
    broker_kind: str
    started_epoch_s: float
    measured_s: float  # the measured time the run had (less than planned when it was aborted)
    counts: dict[str, int]
    errors_by_kind: dict[str, int]
    stages: dict[str, HdrHistogram]
    out_of_range: dict[str, int] = field(default_factory=dict)
    clamped: dict[str, int] = field(default_factory=dict)
    skewed: dict[str, int] = field(default_factory=dict)
    timeouts_by_stage: dict[str, int] = field(default_factory=dict)
    batch_sizes: dict[int, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)  # replies by worker model and batching
    # batch size -> (replies, sum µs, sum of squares µs²) of their service time (Recorder.service_by_batch)
    service_by_batch: Mapping[int, Sequence[int]] = field(default_factory=dict)
    behind_intervals: int = 0
    behind: bool = False  # known behind from elsewhere (an agent said so)
    aborted: str | None = None
    notes: list[str] = field(default_factory=list)
    started_at: str | None = None  # ISO text, when it comes from elsewhere (a merge)
    qdeck_version: str | None = None
    planned_s: float | None = None  # the measured time the plan asked for (None: as long as it took)
    gaps: list[dict[str, Any]] = field(default_factory=list)  # broker outages: from_s, to_s, unsent, reason
    reconnects: int = 0
    broker_samples: dict[str, Any] | None = None  # the request queue sampled at the broker (None: not sampled)
    llm: dict[str, Any] | None = None  # streamed replies' figures (Recorder.llm_record()); None: not an LLM run
    gpu: dict[str, Any] | None = None  # the GPU samples replies carried, per interval (GpuIntervals.record())


def stage_figures(hist: HdrHistogram) -> dict[str, Any]:
    n = hist.get_total_count()
    if not n:
        return {"count": 0}
    mean, stddev = mean_and_stddev(hist)
    fig: dict[str, Any] = {"count": n, "min_ms": hist.get_min_value() / 1000, "mean_ms": round(mean / 1000, 4)}
    for name, pct in PERCENTILES:
        fig[f"{name}_ms"] = hist.get_value_at_percentile(pct) / 1000
    fig["max_ms"] = hist.get_max_value() / 1000
    fig["stddev_ms"] = round(stddev / 1000, 4)
    return fig


def stage_entry(hist: HdrHistogram, *, out_of_range: int = 0, clamped: int = 0, skewed: int = 0, timeouts: int = 0,
                timeout_s: float = 0.0) -> dict[str, Any]:
    """A stage's summary.json entry: its figures, which of them are lower bounds, its counted-aside values and the
    whole encoded histogram."""
    entry = stage_figures(hist)
    entry["timeouts"] = timeouts
    # Figures that stand on timed-out requests are lower bounds; so is a mean over any of them.
    entry["at_least"] = [name for name in ("min", "mean", *(p for p, _ in PERCENTILES), "max")
                         if f"{name}_ms" in entry and (at_least(entry[f"{name}_ms"] * 1000, timeout_s, timeouts)
                                                       or (name == "mean" and timeouts > 0))]
    entry["out_of_range"] = out_of_range
    entry["clamped_negative"] = clamped
    entry["skewed"] = skewed
    entry["histogram"] = hist.encode().decode() if hist.get_total_count() else None
    return entry


def service_by_batch_json(sums: Mapping[int, Sequence[int]]) -> dict[str, dict[str, Any]]:
    """``{size: (n, sum µs, sum of squares µs²)}`` as summary.json's ``service_by_batch``."""
    out = {}
    for size, (n, total, squares) in sorted(sums.items()):
        if n > 0:
            mean = total / n
            out[str(size)] = {"n": n, "mean_ms": round(mean / 1000, 4),
                              "stddev_ms": round(math.sqrt(max(squares / n - mean * mean, 0.0)) / 1000, 4),
                              "sum_us": total, "sum_sq_us": squares}
    return out


def _version() -> str:
    try:
        return metadata.version("qdeck")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_summary(rec: RunRecord) -> dict[str, Any]:
    facts = rec.facts
    timeout_s = float(facts["timeout_s"])
    stages = {stage: stage_entry(rec.stages.get(stage) or new_histogram(),
                                 out_of_range=rec.out_of_range.get(stage, 0), clamped=rec.clamped.get(stage, 0),
                                 skewed=rec.skewed.get(stage, 0), timeouts=rec.timeouts_by_stage.get(stage, 0),
                                 timeout_s=timeout_s)
              for stage in STAGES}
    counts = {key: int(rec.counts.get(key, 0)) for key in COUNTS}
    lag = rec.stages.get("schedule_lag")
    lag_p99 = lag.get_value_at_percentile(99) if lag is not None and lag.get_total_count() else 0
    measured = rec.measured_s
    planned = rec.planned_s or measured
    target = counts["intended"] / planned if planned else 0.0
    achieved = counts["sent"] / measured if measured else 0.0
    outage_unsent = sum(int(g.get("unsent", 0)) for g in rec.gaps)
    behind = (rec.behind or bool(counts["unsent"] - outage_unsent > 0 and rec.aborted is None)
              or lag_p99 > BEHIND_LAG_US
              or (target > 0 and (counts["sent"] + outage_unsent) / planned < 0.95 * target and rec.aborted is None))
    notes = list(rec.notes)
    if behind:
        notes.append(f"THE LOAD GENERATOR FELL BEHIND: schedule-lag p99 {lag_p99 / 1000:.1f} ms, {counts['unsent']} "
                     f"intended requests never sent; latencies include the generator's own delay")
    if rec.aborted is not None:
        notes.append(f"the run was aborted after {measured:.1f} s of its measured time: {counts['unsent']:,} "
                     "intended requests were never sent (counted as unsent)")
    if rec.reconnects:
        notes.append(f"the broker connection dropped and was re-made {rec.reconnects} time"
                     f"{'s' if rec.reconnects > 1 else ''}; requests in flight then may have lost their replies "
                     "(they are timeouts)")
    for gap in rec.gaps:
        until = f"{gap['to_s']:.1f} s" if gap.get("to_s") is not None else "the end"
        notes.append(f"broker outage from {gap['from_s']:.1f} s to {until}: {gap['unsent']:,} requests fell due "
                     f"and were not sent (counted as unsent); {gap.get('reason', '')}")
    if counts["timeouts"]:
        notes.append(f"{counts['timeouts']:,} requests timed out: they are in end_to_end at no less than the "
                     f"{timeout_s:g} s timeout, so figures at or above it are lower bounds (shown as ≥)")
    if facts.get("closed_loop"):
        notes.append("closed loop: each request waits for the previous reply, so stalls are under-reported "
                     "(coordinated omission); use an open-loop schedule for latency truth")
    law = None
    if rec.broker_samples is not None:
        wait = stages["queue_wait"]
        law, why = littles_law(rec.broker_samples, arrival_rate=achieved,
                               mean_queue_wait_ms=wait["mean_ms"] if wait["count"] else None)
        if rec.broker_samples.get("error"):
            notes.append(f"broker samples: {rec.broker_samples['error']}")
        if why is not None:
            notes.append(why)
    skewed = {s: n for s, n in rec.skewed.items() if n and s in CROSS_HOST_STAGES}
    if skewed:
        notes.append("clock skew: " + ", ".join(f"{n:,} {s}" for s, n in skewed.items()) + " values were more than "
                     "1 ms negative and were clamped to 0: the worker's clock differs from this host's (cross-host "
                     "stages are approximate)")
    summary = {
        "schema_version": SCHEMA_VERSION,
        "qdeck_version": rec.qdeck_version or _version(),
        "run_id": facts["run_id"],
        "started_at": rec.started_at or datetime.fromtimestamp(rec.started_epoch_s, UTC).isoformat(
            timespec="milliseconds"),
        "broker": rec.broker,
        "broker_kind": rec.broker_kind,
        "queue": facts["queue"],
        "workload": facts["workload"],
        "schedule": facts["schedule"],
        "payload": facts.get("payload", {}),
        "duration_s": round(measured, 3),
        "warmup_s": facts["warmup_s"],
        "timeout_s": timeout_s,
        "coalesce_s": facts["coalesce_s"],
        "confirm": bool(facts.get("confirm")),
        "persistent": bool(facts.get("persistent")),
        "closed_loop": bool(facts.get("closed_loop")),
        "counts": counts,
        "errors_by_kind": dict(rec.errors_by_kind),
        "rates": {"target": round(target, 3), "achieved": round(achieved, 3),
                  "achieved_ratio": round(achieved / target, 5) if target else None},
        "stages": stages,
        "batch_sizes": {str(k): v for k, v in sorted(rec.batch_sizes.items())},
        "devices": dict(rec.devices),
        "workers": dict(rec.workers),
        "service_by_batch": service_by_batch_json(rec.service_by_batch),
        "generator": {"behind": behind, "behind_intervals": rec.behind_intervals,
                      "schedule_lag_p99_ms": lag_p99 / 1000, "reconnects": rec.reconnects},
        "notes": notes,
        "aborted": rec.aborted,
        "gaps": list(rec.gaps),
        "broker_samples": rec.broker_samples,
        "littles_law": law,
    }
    if rec.llm is not None:
        summary["llm"] = llm_section(rec.llm, stage_entries=stages, entry=stage_entry,
                                     timeouts_by_stage=rec.timeouts_by_stage, out_of_range=rec.out_of_range,
                                     clamped=rec.clamped, timeout_s=timeout_s, measured_s=measured, sent=counts["sent"])
        if rec.llm.get("streams_cut"):
            notes.append(f"{rec.llm['streams_cut']:,} streamed replies were cut by the timeout after their first "
                         f"chunk ({rec.llm.get('cut_tokens', 0):,} tokens received): they are timeouts")
    if rec.gpu is not None:
        summary["gpu"] = rec.gpu
        flag = idle_flag(rec.gpu)
        if flag is not None:
            summary["flags"] = [flag]
            notes.append(f"{flag['message']}; likely: {'; '.join(flag['likely_causes'])}")
    return summary


def write_outputs(summary: dict[str, Any], end_to_end: HdrHistogram, out_dir: Path) -> list[Path]:
    """A run's files: ``summary.json`` and ``end_to_end.hgrm`` (the interval logs are written as the run goes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_summary(summary, out_dir / "summary.json"), write_hgrm(end_to_end, out_dir / "end_to_end.hgrm")]


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=True) + "\n")
    return path


def write_hgrm(hist: HdrHistogram, path: Path) -> Path:
    """The percentile spectrum as wrk2's ``--latency`` prints it, every figure in milliseconds (hdrh 0.10's own
    writer scales the values and the mean but leaves StdDeviation in µs); empty when nothing was recorded."""
    with path.open("w") as fh:
        if hist.get_total_count():
            _spectrum(hist, fh)
    return path


def _spectrum(hist: HdrHistogram, fh: IO[str], scale: float = 1000.0, ticks: int = 5) -> None:
    fh.write(f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}\n\n")
    for it in hist.get_percentile_iterator(ticks):
        value = it.value_iterated_to / scale
        pct, count = it.percentile_level_iterated_to, it.total_count_to_this_value
        tail = f" {1 / (1 - pct / 100):14.2f}" if pct != 100 else ""
        fh.write(f"{value:12.3f} {pct / 100:2.12f} {count:10d}{tail}\n")
    mean, stddev = (figure / scale for figure in mean_and_stddev(hist))
    fh.write(f"#[Mean    = {mean:12.3f}, StdDeviation   = {stddev:12.3f}]\n")
    fh.write(f"#[Max     = {hist.get_max_value() / scale:12.3f}, TotalCount     = {hist.get_total_count():12d}]\n")
    fh.write(f"#[Buckets = {hist.bucket_count:12d}, SubBuckets     = {hist.sub_bucket_count:12d}]\n")
    fh.write("#[Values in milliseconds]\n")


def read_json(path: Path, what: str) -> Any:
    """A JSON file qdeck wrote (``what``: "summary.json", "search.json"); ``ReportError`` in one line when it cannot
    be read, is not UTF-8 JSON, or is nested too deeply to parse."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not a qdeck {what} (not UTF-8 text)") from None
    except RecursionError:
        raise ReportError(f"{path} is nested too deeply to read") from None
    except ValueError as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from None


def load_summary(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    doc = read_json(p, "summary.json")
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ReportError(f"{p} is not a qdeck summary.json (no schema_version)")
    if doc["schema_version"] not in READABLE_VERSIONS:
        raise ReportError(f"{p}: summary schema_version {doc['schema_version']!r} is not supported "
                          f"(this qdeck reads {', '.join(map(str, READABLE_VERSIONS))})")
    for key, kind in (("counts", dict), ("stages", dict), ("rates", dict)):
        if not isinstance(doc.get(key), kind):
            raise ReportError(f"{p} is not a complete qdeck summary.json (no {key!r} object)")
    return doc


def stage_histogram(summary: dict[str, Any], stage: str) -> HdrHistogram:
    """The stage's full histogram (µs) decoded from a summary; empty if the stage recorded nothing."""
    entry = summary.get("stages", {}).get(stage)
    if not isinstance(entry, dict):
        raise ReportError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    encoded = entry.get("histogram")
    if not encoded:
        return new_histogram()
    if not isinstance(encoded, str):
        raise ReportError(f"stage {stage}: the histogram in the summary is not encoded text")
    try:
        return HdrHistogram.decode(encoded.encode())
    except Exception as exc:  # hdrh raises assorted errors for a corrupt payload
        raise ReportError(f"stage {stage}: corrupt histogram in the summary ({type(exc).__name__})") from None
