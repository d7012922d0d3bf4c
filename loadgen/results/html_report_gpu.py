"""The HTML report's GPU section: each GPU's utilisation per interval beside the queue wait, and the "GPU idle while
queue wait rises" flag (``gpu_intervals.idle_flag``, the rule summary.json's ``flags`` holds) with its likely causes.

Reads summary.json's ``gpu`` section only (``loadgen.results.gpu_intervals``); every text from it goes through
``Page.h``/``Page.text`` as the rest of the page does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from loadgen.results import html_report_view as view
from loadgen.results.gpu_intervals import IDLE_UTIL_PCT, RISE_MS, RISE_SHARE, idle_flag
from loadgen.results.html_report_view import Page, as_dict, as_list, as_num

if TYPE_CHECKING:
    from loadgen.results.html_report import Run

MAX_DEVICES = 16  # GPU lines per run in the chart; the table lists them all (up to view.MAX_ROWS)
COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#1f77b4")
WAIT_COLOR = "#ff7f0e"


def _thin(ts: list[float], ys: list[float | None], max_points: int) -> view.Column:
    """At most ``max_points`` points: past that each is the mean of consecutive intervals (at the last one's t)."""
    step = max(1, math.ceil(len(ts) / max_points))
    if step == 1:
        return ts, ys
    out_t: list[float] = []
    out_y: list[float | None] = []
    for i in range(0, len(ts), step):
        values = [y for y in ys[i:i + step] if y is not None]
        out_t.append(ts[min(i + step, len(ts)) - 1])
        out_y.append(round(sum(values) / len(values), 3) if values else None)
    return out_t, out_y


def _column(rows: list[Any], key: str, max_points: int) -> view.Column:
    ts, ys = [], []
    for row in rows:
        t = as_num(as_dict(row).get("t"))
        if t is not None:
            ts.append(t)
            ys.append(as_num(as_dict(row).get(key)))
    return _thin(ts, ys, max_points)


def _device_row(run: Run, device: dict[str, Any]) -> list[Any]:
    """One GPU over the run: worker, index, mean utilisation, largest memory used of the total, mean power and SM
    clock (means of its intervals' figures, weighted by their samples)."""
    rows = [as_dict(r) for r in as_list(device.get("intervals"))]

    def mean(key: str) -> str:
        pairs = [(v, as_num(r.get("samples")) or 1.0) for r in rows if (v := as_num(r.get(key))) is not None]
        weight = sum(w for _, w in pairs)
        return f"{sum(v * w for v, w in pairs) / weight:,.1f}" if weight else "-"

    used = [v for r in rows if (v := as_num(r.get("mem_used_mib"))) is not None]
    total = as_num(device.get("mem_total_mib"))
    memory = (f"{max(used):,.0f}" if used else "-") + (f" of {total:,.0f}" if total is not None else "")
    return [run.label, device.get("worker"), device.get("index"), mean("util_pct"), memory, mean("power_w"),
            mean("sm_clock_mhz")]


def gpu_section(page: Page, runs: list[Run], max_points: int) -> str:
    series: list[dict[str, Any]] = []
    columns: list[view.Column] = []
    rows: list[list[Any]] = []
    said: list[str] = []
    flags: list[str] = []
    for r in runs:
        who = "" if r.label == "this run" else "base: "
        gpu = r.summary.get("gpu")
        if not isinstance(gpu, dict):
            said.append(f"{who}no GPU samples in this run (the worker had no NVML, or --gpu-interval 0)")
            continue
        devices = [d for d in as_list(gpu.get("devices")) if isinstance(d, dict)]
        for i, d in enumerate(devices[:MAX_DEVICES]):
            series.append(view.series_of(f"{d.get('worker')} GPU{d.get('index')} util %",
                                         COLORS[i % len(COLORS)], r, unit="%"))
            columns.append(_column(as_list(d.get("intervals")), "util_pct", max_points))
        intervals = as_list(gpu.get("intervals"))
        series.append(view.series_of("queue_wait p50", WAIT_COLOR, r, unit="ms", scale="y2"))
        columns.append(_column(intervals, "queue_wait_p50_ms", max_points))
        rows += [_device_row(r, d) for d in devices[:view.MAX_ROWS]]
        more = f" ({len(devices) - MAX_DEVICES} more GPUs in the table only)" if len(devices) > MAX_DEVICES else ""
        said.append(f"{who}{view.count_text(gpu.get('samples'))} samples from {len(devices)} GPUs{more}")
        flag = idle_flag(gpu)
        if flag is not None:
            causes = "".join(f"<li>{page.h(c)}</li>" for c in flag["likely_causes"])
            flags.append(f'<div class="alert" id="gpu-idle">{page.h(who)}{page.h(flag["message"])}. Likely causes:'
                         f'<ul class="notes">{causes}</ul></div>')
    chart = view.chart(page, "gpu", x={"label": "time (s)", "unit": "s"}, y={"label": "GPU utilisation (%)",
                                                                             "min": 0, "max": 100},
                       y2={"label": "queue wait p50 (ms)"}, series=series, columns=columns,
                       empty="; ".join(said) or "no GPU samples in this run", span_gaps=len(runs) > 1)
    table = (view.table(page, ["run", "worker", "GPU", "mean util (%)", "memory used, most (MiB)", "mean power (W)",
                               "mean SM clock (MHz)"], rows, numeric_from=2) if rows else "")
    return ('<section id="gpu-panel"><h2>GPU utilisation and queue wait</h2><p class="caption">'
            f"{page.h('; '.join(said))}. Each GPU's mean utilisation per interval (left axis; the samples its replies "
            "carried, each counted once) beside the queue wait p50 of the interval's replies (right axis). Flagged: "
            f"intervals in which the mean utilisation was under {IDLE_UTIL_PCT:g} % while the queue wait p50 rose by "
            f"more than {RISE_MS:g} ms and {RISE_SHARE:.0%} over the interval before.</p>"
            f"{''.join(flags)}{chart}{table}</section>")
