"""The HTML report's LLM section, for a run with streamed replies (summary.json's ``llm``): TTFT, TPOT, ITL and e2e
percentiles, tokens/s, goodput and attainment with the objectives, the lengths asked for (or the dataset), and TTFT
and ITL over time from their interval logs (``hlog/ttft.hlog``, ``hlog/itl.hlog``).

Absent from the page for a run without an ``llm`` section. Every text from the summary goes through
``Page.h``/``Page.text`` as the rest of the page does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loadgen.results import html_report_view as view
from loadgen.results.html_report_view import Page, as_dict, as_num
from loadgen.results.stages import LLM_HISTOGRAMS, LLM_LATENCY

if TYPE_CHECKING:
    from loadgen.results.html_report import Run

TIMED = tuple(m for m in LLM_LATENCY if m in LLM_HISTOGRAMS)  # latency metrics with an interval log of their own
OVER_TIME = ("ttft", "itl")  # drawn over time; the table has every one
FIGURES = (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("max", "max_ms"))


def _ms(value: Any) -> str:
    n = as_num(value)
    return "-" if n is None else f"{n:,.3f}"


def _rate(entry: Any, unit: str) -> str:
    n = as_num(as_dict(entry).get("value"))
    return "-" if n is None else f"{n:,.2f}{unit}"


def _lengths(llm: dict[str, Any]) -> str:
    dataset = llm.get("dataset")
    if isinstance(dataset, dict):
        return (f"dataset {dataset.get('file')} ({dataset.get('format')}, {view.count_text(dataset.get('rows_used'))} "
                f"rows, sha256 {str(dataset.get('sha256'))[:12]})")
    return (f"input {llm.get('input_lengths') or 'the worker default'}, output "
            f"{llm.get('output_lengths') or 'the worker default'}")


def llm_section(page: Page, runs: list[Run]) -> str:
    with_llm = [(r, r.summary["llm"]) for r in runs if isinstance(r.summary.get("llm"), dict)]
    if not with_llm:
        return ""
    latency_rows: list[list[Any]] = []
    rate_rows: list[list[Any]] = []
    for r, llm in with_llm:
        for metric in LLM_LATENCY:
            entry = as_dict(llm.get(metric))
            latency_rows.append([r.label, metric, view.count_text(entry.get("count")),
                                 *(_ms(entry.get(key)) for _f, key in FIGURES)])
        attainment = as_dict(llm.get("attainment"))
        judged = (f" ({view.count_text(attainment.get('met'))} of {view.count_text(attainment.get('judged'))})"
                  if attainment.get("value") is not None else "")
        cap = llm.get("max_tokens")
        rate_rows.append([r.label, _rate(llm.get("output_tokens_per_s"), "/s"), _rate(llm.get("requests_per_s"), "/s"),
                          _rate(llm.get("goodput"), "/s"), _rate(attainment, " %") + judged,
                          " and ".join(str(o) for o in llm.get("objectives") or []) or "none",
                          _lengths(llm) + (f", output capped at {view.count_text(cap)} tokens" if cap else "")])
    grid = ['<div class="grid">']
    for metric in OVER_TIME:
        series, columns = [], []
        for r, _llm in with_llm:
            tl = r.timelines.get(metric)
            if tl is not None:
                for figure, ys in (("p50", tl.p50_ms), ("p99", tl.p99_ms), ("max", tl.max_ms)):
                    series.append(view.series_of(f"{metric} {figure}", view.FIGURE_COLORS[figure], r, unit="ms"))
                    columns.append((tl.end_s, ys))
        chart = view.chart(page, f"llm-{metric}", x={"label": "time (s)", "unit": "s"}, y={"label": "ms"},
                           series=series, columns=columns, empty=f"no interval log for {metric} (hlog/{metric}.hlog)",
                           span_gaps=len(with_llm) > 1)
        grid.append(f'<div class="panel"><h3>{page.h(metric)} over time</h3>{chart}</div>')
    grid.append("</div>")
    latency = view.table(page, ["run", "metric", "count", "p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)"],
                         latency_rows, numeric_from=2)
    rates = view.table(page, ["run", "output tokens/s", "requests/s", "goodput", "attainment", "objectives",
                              "lengths"], rate_rows, numeric_from=1, numeric_to=4)
    return ('<section id="llm-panel"><h2>Streamed replies (LLM)</h2><p class="caption">TTFT from the intended send '
            "(coordinated-omission correct), TPOT and ITL between chunks, e2e to the final chunk (summary.json's llm "
            "section states each formula); goodput and attainment count a request as met only when it completed and "
            f"met every objective.</p>{latency}{rates}{''.join(grid)}</section>")
