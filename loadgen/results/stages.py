"""The one stage registry: every per-request latency stage, its meaning, and the histogram that holds it.

Every stage is an HdrHistogram of integer microseconds, 1 µs to 1 h, 3 significant figures. The recorder, the
summary builder, the interval-log writer and reader, the SLO gate, ``compare`` and the live view all take the stage
list from here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogWriter

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGFIGS = 3

# name → (from → to): in the order the tables print them.
STAGE_HELP = {
    "end_to_end": "reply received − intended send time (coordinated-omission correct; a timeout counts as at "
                  "least the timeout)",
    "end_to_end_uncorrected": "reply received − actual send time (what a closed-loop tool reports; a timeout "
                              "counts as at least the timeout)",
    "schedule_lag": "actual send − intended send (the generator's own health)",
    "queue_wait": "taken by the worker − sent",
    "batch_wait": "inference start − taken by the worker (batch forming, waiting for a model slot)",
    "service": "inference end − inference start",
    "reply_transit": "reply received − inference end (reply publish and delivery)",
}
STAGES = tuple(STAGE_HELP)
# Stages a reply fills, in the order ``Recorder.record_reply`` passes them.
REPLY_STAGES = ("end_to_end", "end_to_end_uncorrected", "queue_wait", "batch_wait", "service", "reply_transit")
# Stages a request that timed out still enters, at no less than the timeout (as wrk2 and k6 count them).
TIMEOUT_STAGES = ("end_to_end", "end_to_end_uncorrected")
# The worker's stages: compare checks each one's p99.
WORKER_STAGES = ("queue_wait", "batch_wait", "service", "reply_transit")
# Stages whose two ends are stamped on different hosts (the worker's clock against the generator's).
CROSS_HOST_STAGES = ("queue_wait", "reply_transit")


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS)


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
