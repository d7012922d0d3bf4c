"""A run's report: ``summary.json`` (schema below), ``end_to_end.hgrm`` (wrk2 ``--latency`` spectrum), tables.

summary.json, schema_version 1::

    schema_version, qdeck_version, run_id, started_at (ISO 8601 UTC), broker (redacted), queue, workload,
    schedule {kind, description}, duration_s, warmup_s, timeout_s, coalesce_s, closed_loop,
    counts {intended, sent, replied, errors, timeouts, unsent, late, foreign, malformed_replies, warmup_sent},
    errors_by_kind {kind: n}, rates {target, achieved, achieved_ratio},
    stages {name: {count, min_ms, mean_ms, p50_ms, p90_ms, p99_ms, p99_9_ms, max_ms, stddev_ms,
                   out_of_range, clamped_negative, histogram (base64 HdrHistogram, µs)}},
    batch_sizes {size: n}, devices {device: n}, generator {behind, behind_intervals, schedule_lag_p99_ms},
    notes [text], aborted (text or null),
    agents [{index, host, run_id, counts, rates, generator, aborted}] (distributed runs only: loadgen/merge_runs.py)

All latencies are milliseconds; the encoded histograms hold microseconds (1 µs to 1 h, 3 significant figures).
``gate`` and ``compare`` read these files back, so any percentile can be judged later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.engine import BEHIND_LAG_US, RunResult
from loadgen.recorder import STAGES, new_histogram
from loadgen.schedules import ClosedLoop

SCHEMA_VERSION = 1
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


class ReportError(ValueError):
    """A summary file that cannot be read; one line for the user."""


def stage_figures(hist: HdrHistogram) -> dict[str, Any]:
    n = hist.get_total_count()
    if not n:
        return {"count": 0}
    fig: dict[str, Any] = {"count": n, "min_ms": hist.get_min_value() / 1000, "mean_ms": round(hist.get_mean_value()
                                                                                                / 1000, 4)}
    for name, pct in PERCENTILES:
        fig[f"{name}_ms"] = hist.get_value_at_percentile(pct) / 1000
    fig["max_ms"] = hist.get_max_value() / 1000
    fig["stddev_ms"] = round(hist.get_stddev() / 1000, 4)
    return fig


def stage_entry(hist: HdrHistogram, out_of_range: int, clamped: int) -> dict[str, Any]:
    """A stage's summary.json entry: its figures, its counted-aside values and the whole encoded histogram."""
    entry = stage_figures(hist)
    entry["out_of_range"] = out_of_range
    entry["clamped_negative"] = clamped
    entry["histogram"] = hist.encode().decode() if hist.get_total_count() else None
    return entry


def build_summary(result: RunResult, *, broker: str) -> dict[str, Any]:
    spec, rec = result.spec, result.recorder
    stages: dict[str, Any] = {}
    for stage in STAGES:
        stages[stage] = stage_entry(rec.total[stage], rec.out_of_range.get(stage, 0), rec.clamped.get(stage, 0))
    lag = rec.total["schedule_lag"]
    lag_p99 = lag.get_value_at_percentile(99) if lag.get_total_count() else 0
    target, achieved = result.target_rate, result.achieved_rate
    behind = bool(result.unsent) or lag_p99 > BEHIND_LAG_US or (target > 0 and achieved < 0.95 * target)
    closed = isinstance(spec.schedule, ClosedLoop)
    notes = []
    if behind:
        notes.append(f"THE LOAD GENERATOR FELL BEHIND: schedule-lag p99 {lag_p99 / 1000:.1f} ms, {result.unsent} "
                     f"intended requests never sent; latencies include the generator's own delay")
    if closed:
        notes.append("closed loop: each request waits for the previous reply, so stalls are under-reported "
                     "(coordinated omission); use an open-loop schedule for latency truth")
    if any(rec.clamped.values()):
        notes.append("some stage times were negative and clamped to 0: the worker's clock differs from this "
                     "host's (cross-host stages are approximate)")
    try:
        version = metadata.version("qdeck")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "schema_version": SCHEMA_VERSION,
        "qdeck_version": version,
        "run_id": spec.run_id,
        "started_at": datetime.fromtimestamp(result.started_epoch_s, UTC).isoformat(timespec="milliseconds"),
        "broker": broker,
        "queue": spec.queue,
        "workload": spec.workload,
        "schedule": {"kind": spec.schedule.kind, "description": spec.schedule.describe()},
        "duration_s": round(result.measured_s, 3),
        "warmup_s": spec.warmup_s,
        "timeout_s": spec.timeout_s,
        "coalesce_s": spec.coalesce_s,
        "closed_loop": closed,
        "counts": {"intended": result.intended, "sent": result.sent, "replied": rec.replied,
                   "errors": rec.error_count, "timeouts": rec.timeouts, "unsent": result.unsent,
                   "late": result.late, "foreign": result.foreign, "malformed_replies": result.malformed_replies,
                   "warmup_sent": result.warmup_sent},
        "errors_by_kind": dict(rec.errors),
        "rates": {"target": round(target, 3), "achieved": round(achieved, 3),
                  "achieved_ratio": round(achieved / target, 5) if target else None},
        "stages": stages,
        "batch_sizes": {str(k): v for k, v in sorted(rec.batch_sizes.items())},
        "devices": dict(rec.devices),
        "generator": {"behind": behind, "behind_intervals": result.behind_intervals,
                      "schedule_lag_p99_ms": lag_p99 / 1000},
        "notes": notes,
        "aborted": result.aborted,
    }


def write_outputs(summary: dict[str, Any], result: RunResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(summary, out_dir / "summary.json")
    hgrm = write_hgrm(result.recorder.total["end_to_end"], out_dir / "end_to_end.hgrm")
    return [summary_path, hgrm, out_dir / "latency.hlog"]


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def write_hgrm(hist: HdrHistogram, path: Path) -> Path:
    """The percentile spectrum, values in ms, as wrk2's ``--latency`` prints it (empty when nothing was recorded)."""
    with path.open("wb") as fh:
        if hist.get_total_count():
            hist.output_percentile_distribution(fh, 1000.0)
    return path


def load_summary(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise ReportError(f"cannot read {p}: {exc.strerror}") from None
    except ValueError as exc:
        raise ReportError(f"{p} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ReportError(f"{p} is not a qdeck summary.json (no schema_version)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ReportError(f"{p}: summary schema_version {doc['schema_version']} is not supported "
                          f"(this qdeck reads {SCHEMA_VERSION})")
    return doc


def stage_histogram(summary: dict[str, Any], stage: str) -> HdrHistogram:
    """The stage's full histogram (µs) decoded from a summary; empty if the stage recorded nothing."""
    entry = summary.get("stages", {}).get(stage)
    if entry is None:
        raise ReportError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    encoded = entry.get("histogram")
    if not encoded:
        return new_histogram()
    try:
        return HdrHistogram.decode(encoded.encode())
    except Exception as exc:  # hdrh raises assorted errors for a corrupt payload
        raise ReportError(f"stage {stage}: corrupt histogram in the summary ({type(exc).__name__})") from None
