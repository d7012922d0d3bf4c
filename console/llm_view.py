"""The printed table of a run's streamed replies (summary.json's ``llm`` section): TTFT, TPOT, ITL, E2E, token
counts, tokens/s, goodput and attainment, each with its formula."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from console.output import stdout_console
from console.safe_text import safe
from loadgen.results.latency import fmt_figure
from loadgen.results.stages import LLM_METRICS

_MS = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "mean_ms")
_TOKENS = ("p50", "p90", "p99", "p99_9", "max", "mean")


def llm_table(summary: dict[str, Any]) -> Table:
    llm = summary["llm"]
    timeout_s = float(summary.get("timeout_s", 0.0))
    t = Table(title="streamed replies (LLM metrics, timed from the intended send)", title_justify="left",
              show_edge=False)
    t.add_column("metric")
    for col in ("count", "p50", "p90", "p99", "p99.9", "max", "mean", "formula"):
        t.add_column(col, justify="left" if col == "formula" else "right")
    for name, (unit, _formula) in LLM_METRICS.items():
        m = llm.get(name) or {}
        label = f"{name} ({'ms' if unit == 'us' else unit})"
        if not m.get("count"):
            t.add_row(label, "0", *["-"] * 6, safe(m.get("formula", "")))
            continue
        if unit == "us":
            bounds = set(m.get("at_least", ()))
            cells = [fmt_figure(m[k], k.removesuffix("_ms") in bounds, timeout_s, k) for k in _MS]
        else:
            cells = [f"{m[k]:,.0f}" if k != "mean" else f"{m[k]:,.1f}" for k in _TOKENS]
        t.add_row(label, f"{m['count']:,}", *cells, safe(m.get("formula", "")))
    goodput, attainment = llm["goodput"], llm["attainment"]
    judged = (f"goodput {goodput['value']:,.2f}/s · attainment {attainment['value']:.2f}% "
              f"({attainment['met']:,} of {attainment['judged']:,} met {' and '.join(llm['objectives'])})"
              if goodput.get("value") is not None and attainment.get("value") is not None
              else "goodput and attainment: no --objective given")
    t.caption = safe(f"output {llm['output_tokens_per_s']['value']:,.1f} tokens/s · "
                     f"{llm['requests_per_s']['value']:,.2f} requests/s completed · {judged}"
                     + (f" · {llm['streams_cut']:,} streams cut by the timeout" if llm.get("streams_cut") else ""),
                     None)
    lengths = lengths_line(llm)
    if lengths:
        t.caption += "\n" + safe(lengths, None)
    t.caption_justify = "left"
    return t


def lengths_line(llm: dict[str, Any]) -> str:
    """The lengths the run asked for (a dataset: its file, rows, skipped conversations and sha256); empty when it
    asked for none."""
    ds, cap = llm.get("dataset"), llm.get("max_tokens")
    capped = f", output capped at {cap:,} tokens" if isinstance(cap, int) else ""
    if isinstance(ds, dict):
        skipped = sum(int(n) for n in (ds.get("skipped") or {}).values())
        return (f"lengths: dataset {ds.get('file')} ({ds.get('format')}, {ds.get('rows_used', 0):,} rows"
                + (f", {skipped:,} conversations skipped" if skipped else "")
                + f", sha256 {str(ds.get('sha256'))[:12]}…; tokens {ds.get('token_counts')}){capped}")
    if llm.get("input_lengths") is None and llm.get("output_lengths") is None:
        return ""
    return (f"lengths: input {llm.get('input_lengths') or 'the worker default'}, output "
            f"{llm.get('output_lengths') or 'the worker default'}{capped}")


def print_llm(summary: dict[str, Any], console: Console | None = None) -> None:
    (console or stdout_console()).print(llm_table(summary))
