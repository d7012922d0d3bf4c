"""The one stage registry: every per-request latency stage, its meaning, and the histogram that holds it.

Every stage is an HdrHistogram of integer microseconds, 1 µs to 1 h, 3 significant figures. The recorder, the
summary builder, the interval-log writer and reader, the SLO gate, ``compare`` and the live view all take the stage
list from here. The LLM metrics of streamed replies (``LLM_METRICS``: TTFT, TPOT, ITL, token counts) are registered
here the same way, each with its formula.
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
# LLM-shaped load (streamed replies), name → (unit, formula): "us" metrics are histograms of µs like the stages,
# "tokens" ones hold token counts (same histogram, 1 to 3.6e9). ``e2e`` is the end_to_end stage under its LLM name
# (one histogram, two names: LLM_ALIASES).
LLM_METRICS = {
    "ttft": ("us", "first chunk received − intended send (coordinated-omission correct; a request with no chunk by "
                   "the timeout counts as at least the timeout)"),
    "ttft_uncorrected": ("us", "first chunk received − actual send (what tools that time from the send report)"),
    "tpot": ("us", "(last chunk received − first chunk received) / (output tokens − 1), per completed request with "
                   "more than one output token (vLLM's TPOT)"),
    "itl": ("us", "every gap between successive chunks of a request: received − previous chunk received (pooled "
                  "over requests)"),
    "e2e": ("us", "final chunk received − intended send (the end_to_end stage)"),
    "input_tokens": ("tokens", "prompt tokens of each completed request, as sent"),
    "output_tokens": ("tokens", "output tokens of each completed request, summed over its chunks"),
}
LLM_ALIASES = {"e2e": "end_to_end"}
LLM_HISTOGRAMS = tuple(m for m in LLM_METRICS if m not in LLM_ALIASES)  # the ones the recorder keeps itself
LLM_LATENCY = tuple(m for m, (unit, _f) in LLM_METRICS.items() if unit == "us")
# Figures of a run derived from counts, with their formulas (summary.json states each beside its value).
LLM_RATES = {
    "output_tokens_per_s": "output tokens received (every chunk, cut streams included) / measured seconds",
    "requests_per_s": "streamed requests completed / measured seconds",
    "goodput": "requests that met every --objective / measured seconds (errors and timeouts are misses)",
    "attainment": "requests that met every --objective / requests sent × 100 (errors and timeouts are misses)",
}
# Stages a reply fills, in the order ``Recorder.record_reply`` passes them.
REPLY_STAGES = ("end_to_end", "end_to_end_uncorrected", "queue_wait", "batch_wait", "service", "reply_transit")
# Stages a request that timed out still enters, at no less than the timeout (as wrk2 and k6 count them).
TIMEOUT_STAGES = ("end_to_end", "end_to_end_uncorrected")
# The worker's stages: compare checks each one's p99.
WORKER_STAGES = ("queue_wait", "batch_wait", "service", "reply_transit")
# Stages whose two ends are stamped on different hosts (the worker's clock against the generator's).
CROSS_HOST_STAGES = ("queue_wait", "reply_transit")


def metric_help(name: str) -> str:
    """A stage's or an LLM metric's meaning (what its interval log's header says)."""
    return STAGE_HELP[name] if name in STAGE_HELP else LLM_METRICS[name][1]


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS)


def log_path(directory: Path, stage: str) -> Path:
    return directory / "latency.hlog" if stage == "end_to_end" else directory / "hlog" / f"{stage}.hlog"


def open_log(path: Path, stage: str, start_epoch_s: float) -> tuple[HistogramLogWriter, IO[str]]:
    """A new interval log for ``stage``, its header written; intervals are then logged relative to the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("w")
    writer = HistogramLogWriter(fh)
    unit = "tokens" if stage in LLM_METRICS and LLM_METRICS[stage][0] == "tokens" else "microseconds"
    writer.output_comment(f"qdeck stage {stage}: {metric_help(stage)}; values in {unit}")
    writer.output_log_format_version()
    # hdrh's output_start_time is broken (treats ms as s, calls a missing iso_format), so both time lines are
    # written here, with the same digits: a StartTime later than BaseTime would make readers skip the first interval.
    epoch = f"{start_epoch_s:.6f}"
    stamp = datetime.fromtimestamp(start_epoch_s, UTC).isoformat(" ", timespec="milliseconds")
    writer.output_comment(f"[StartTime: {epoch} (seconds since epoch), {stamp}]")
    writer.output_comment(f"[BaseTime: {epoch} (seconds since epoch)]")
    writer.output_legend()
    return writer, fh
