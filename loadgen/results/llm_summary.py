"""summary.json's ``llm`` section: the figures of streamed replies, each under its name with its formula.

::

    llm {ttft, ttft_uncorrected, tpot, itl, e2e: {formula, unit "ms", count, min_ms, mean_ms, p50_ms, p90_ms,
                                                   p99_ms, p99_9_ms, max_ms, stddev_ms, timeouts, at_least, ...,
                                                   histogram (base64, µs)},
         input_tokens, output_tokens: {formula, unit "tokens", count, min, mean, p50, p90, p99, p99_9, max,
                                       histogram (base64, tokens)},
         output_tokens_per_s, requests_per_s, goodput: {formula, value (per second)},
         attainment: {formula, value (percent, null without objectives), met, judged},
         objectives [text], input_lengths, output_lengths (the distributions asked for, "dataset FILE", or null),
         dataset (null, or {file, format, rows_used, skipped {why: count}, sha256, order, token_counts}),
         max_tokens (the cap on output lengths, or null),
         streams (completed), streams_cut (cut by the timeout after their first chunk), cut_tokens,
         output_tokens_total (every measured chunk's tokens, cut streams' included: output_tokens_per_s × duration)}

``e2e`` is the ``end_to_end`` stage (one histogram, two names). Goodput and attainment count a request as met only
when it completed and met every objective; errors and timeouts are misses; with no objectives both are null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.results.hdrh_compat import mean_and_stddev
from loadgen.results.stages import LLM_ALIASES, LLM_METRICS, LLM_RATES, new_histogram

StageEntry = Callable[..., dict[str, Any]]


def token_figures(hist: HdrHistogram) -> dict[str, Any]:
    """A token-count metric's figures (whole tokens; the histogram holds counts, not µs)."""
    n = hist.get_total_count()
    if not n:
        return {"count": 0, "histogram": None}
    mean, _sd = mean_and_stddev(hist)
    fig: dict[str, Any] = {"count": n, "min": hist.get_min_value(), "mean": round(mean, 2)}
    for name, pct in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9)):
        fig[name] = hist.get_value_at_percentile(pct)
    fig["max"] = hist.get_max_value()
    fig["histogram"] = hist.encode().decode()
    return fig


def llm_section(llm: Mapping[str, Any], *, stage_entries: Mapping[str, dict[str, Any]], entry: StageEntry,
                timeouts_by_stage: Mapping[str, int], out_of_range: Mapping[str, int], clamped: Mapping[str, int],
                timeout_s: float, measured_s: float, sent: int) -> dict[str, Any]:
    """Build the section from the recorder's plain data (``Recorder.llm_record()``)."""
    hists: Mapping[str, HdrHistogram] = llm.get("histograms", {})
    out: dict[str, Any] = {}
    for name, (unit, formula) in LLM_METRICS.items():
        if name in LLM_ALIASES:
            fig = {k: v for k, v in stage_entries[LLM_ALIASES[name]].items()}
        elif unit == "tokens":
            fig = token_figures(hists.get(name) or new_histogram())
        else:
            fig = entry(hists.get(name) or new_histogram(), out_of_range=out_of_range.get(name, 0),
                        clamped=clamped.get(name, 0), timeouts=timeouts_by_stage.get(name, 0), timeout_s=timeout_s)
        out[name] = {"formula": formula, "unit": "ms" if unit == "us" else unit, **fig}
    per_s = 1 / measured_s if measured_s else 0.0
    objectives = list(llm.get("objectives") or [])
    met = int(llm.get("met", 0))
    out["output_tokens_per_s"] = {"formula": LLM_RATES["output_tokens_per_s"],
                                  "value": round(int(llm.get("output_tokens", 0)) * per_s, 3)}
    out["requests_per_s"] = {"formula": LLM_RATES["requests_per_s"],
                             "value": round(int(llm.get("streams", 0)) * per_s, 3)}
    out["goodput"] = {"formula": LLM_RATES["goodput"], "value": round(met * per_s, 3) if objectives else None}
    out["attainment"] = {"formula": LLM_RATES["attainment"],
                         "value": round(100.0 * met / sent, 3) if objectives and sent else None,
                         "met": met if objectives else None, "judged": sent}
    facts = llm.get("facts") or {}
    out["objectives"] = objectives
    out["input_lengths"] = facts.get("input_tokens")
    out["output_lengths"] = facts.get("output_tokens")
    out["dataset"] = facts.get("dataset")
    out["max_tokens"] = facts.get("max_tokens")
    for key in ("streams", "streams_cut", "cut_tokens"):
        out[key] = int(llm.get(key, 0))
    out["output_tokens_total"] = int(llm.get("output_tokens", 0))
    return out
