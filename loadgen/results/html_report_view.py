"""The HTML of ``qdeck load report`` (``html_report`` reads the runs and makes the page around it).

Every text from a run goes through ``Page.h`` (the one sanitiser, then HTML escapes, then ASCII character
references) or, for the charts' JSON, ``Page.text``. Charts are described in ``Page.charts`` (uPlot options are made
from them by ``report_assets/report.js``); a chart with nothing to draw is a sentence instead, never a blank frame.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from loadgen.results.latency import fmt_figure
from loadgen.results.stages import CROSS_HOST_STAGES, STAGE_HELP, STAGES
from loadgen.results.summary import BEHIND_LAG_US, COUNTS

if TYPE_CHECKING:
    from loadgen.results.html_report import Run

TEXT_LIMIT = 2000  # characters of one text (a note, an error); longer ones are cut with a mark
NAME_LIMIT = 300
MAX_ROWS = 200  # notes, gaps, SLOs and error kinds shown; the rest are counted
STAGE_COLORS = {"end_to_end": "#1f77b4", "end_to_end_uncorrected": "#17becf", "schedule_lag": "#7f7f7f",
                "queue_wait": "#ff7f0e", "batch_wait": "#bcbd22", "service": "#2ca02c", "reply_transit": "#9467bd"}
FIGURE_COLORS = {"p50": "#1f77b4", "p99": "#ff7f0e", "max": "#d62728"}
FLOOR_MS = 0.001  # a log axis cannot show 0: values under 1 µs are drawn at 1 µs
Column = tuple[Sequence[float], Sequence[float | None]]


class Page:
    def __init__(self, clean: Callable[[Any, int | None], str]) -> None:
        self._clean = clean
        self.charts: list[dict[str, Any]] = []
        self.title = ""

    def text(self, value: Any, limit: int = TEXT_LIMIT) -> str:
        """Sanitised text, for the page's JSON."""
        return self._clean(value, limit)

    def h(self, value: Any, limit: int = TEXT_LIMIT) -> str:
        """Sanitised, HTML-escaped, ASCII text for the page."""
        return html.escape(self._clean(value, limit)).encode("ascii", "xmlcharrefreplace").decode("ascii")


def as_num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def plain(value: Any, depth: int = 0) -> str:
    """A summary value as one phrase."""
    if depth > 3:
        return "..."
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {plain(v, depth + 1)}" for k, v in list(value.items())[:MAX_ROWS]) or "-"
    if isinstance(value, list):
        return ", ".join(plain(v, depth + 1) for v in value[:MAX_ROWS]) or "-"
    return str(value)


def count_text(value: Any) -> str:
    n = as_num(value)
    return "-" if n is None else f"{n:,.0f}" if n == int(n) else f"{n:,.3f}"


def table(page: Page, head: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric_from: int = 1,
          numeric_to: int = 99, row_classes: Sequence[str] = (),
          cell_classes: dict[tuple[int, int], str] | None = None) -> str:
    """Cells are plain values (escaped here); columns ``numeric_from`` to ``numeric_to`` are right-aligned."""
    cls = cell_classes or {}
    numeric = range(numeric_from, numeric_to + 1)
    out = ["<table><thead><tr>"]
    out += [f'<th{" class=n" if i in numeric else ""}>{page.h(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        rc = row_classes[r] if r < len(row_classes) and row_classes[r] else ""
        out.append(f'<tr class="{rc}">' if rc else "<tr>")
        for c, cell in enumerate(row):
            names = " ".join(n for n in ("n" if c in numeric else "", cls.get((r, c), "")) if n)
            out.append(f'<td class="{names}">{page.h(cell)}</td>' if names else f"<td>{page.h(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _more(page: Page, items: list[Any], what: str) -> str:
    if len(items) <= MAX_ROWS:
        return ""
    return f'<p class="caption">... and {len(items) - MAX_ROWS:,} more {page.h(what)}</p>'


def align(columns: Sequence[Column]) -> list[list[float | None]]:
    """uPlot's data: one x array (the union of the columns' x) and each column's y on it (null where it has none)."""
    xs = sorted({x for col, _ in columns for x in col})
    out: list[list[float | None]] = [list(xs)]
    for col_x, col_y in columns:
        at = dict(zip(col_x, col_y, strict=True))
        out.append([at.get(x) for x in xs])
    return out


def chart(page: Page, cid: str, *, x: dict[str, Any], y: dict[str, Any], series: list[dict[str, Any]],
          columns: Sequence[Column], empty: str, kind: str = "line", y2: dict[str, Any] | None = None,
          span_gaps: bool = False, extra: dict[str, Any] | None = None) -> str:
    """A chart's container, its spec in ``page.charts`` (``extra``: more keys for report.js, e.g. marks)."""
    if not any(v is not None for _, ys in columns for v in ys):
        return f'<p class="empty" id="empty-{cid}">{page.h(empty)}</p>'
    for s in series:
        s["label"] = page.text(s["label"], NAME_LIMIT)
    page.charts.append({"id": cid, "kind": kind, "x": x, "y": y, "y2": y2, "series": series,
                        "data": align(columns), "span_gaps": span_gaps, **(extra or {})})
    return f'<div class="qchart" id="chart-{cid}"></div>'


def runs_of(run: Run, base: Run | None) -> list[Run]:
    return [run] if base is None else [run, base]


def series_of(label: str, color: str, run: Run, **extra: Any) -> dict[str, Any]:
    base = run.label == "base"
    return {"label": f"base {label}" if base else label, "color": color, "dash": base, **extra}


def header(page: Page, run: Run, base: Run | None) -> str:
    s = run.summary
    queue = page.h(s.get("queue", "?"), NAME_LIMIT)
    page.title = f"qdeck load report: {queue}"
    sub = f"run {page.h(s.get('run_id', '?'), NAME_LIMIT)}, started {page.h(s.get('started_at', '?'), NAME_LIMIT)}"
    if base is not None:
        b = base.summary
        sub += (f"; compared with base run {page.h(b.get('run_id', '?'), NAME_LIMIT)} (queue "
                f"{page.h(b.get('queue', '?'), NAME_LIMIT)}), drawn dashed")
    return f'<header id="run"><h1>qdeck load report: {queue}</h1><p class="sub">{sub}</p></header>'


def alerts(page: Page, run: Run, base: Run | None) -> str:
    out = []
    for r in runs_of(run, base):
        s, who = r.summary, "" if r.label == "this run" else "base: "
        if s.get("aborted"):
            out.append(f'<div class="alert" id="aborted">{page.h(who)}the run was aborted: '
                       f"{page.h(s['aborted'])}</div>")
        gen = as_dict(s.get("generator"))
        if gen.get("behind"):
            lag = as_num(gen.get("schedule_lag_p99_ms"))
            out.append(f'<div class="alert">{page.h(who)}the load generator fell behind (schedule-lag p99 '
                       f"{page.h('-' if lag is None else f'{lag:.2f} ms')}, over {BEHIND_LAG_US // 1000} ms, or "
                       "intended requests never sent): its latencies include its own delay</div>")
    return "".join(out)


def slos(page: Page, run: Run, base: Run | None) -> str:
    out = ['<section id="slo"><h2>SLO verdicts</h2>']
    for r in runs_of(run, base):
        entries = [e for e in as_list(r.summary.get("slo")) if isinstance(e, dict)]
        if base is not None:
            out.append(f"<h3>{page.h(r.label)}</h3>")
        if not entries:
            out.append('<p class="caption">no SLOs were judged when this run was made (qdeck load gate judges a saved '
                       "run)</p>")
            continue
        rows = [[e.get("slo"), "PASS" if e.get("ok") is True else "FAIL", e.get("actual"), e.get("detail")]
                for e in entries[:MAX_ROWS]]
        marks = {(i, 1): "ok" if row[1] == "PASS" else "bad" for i, row in enumerate(rows)}
        out.append(table(page, ["SLO", "verdict", "actual", "detail"], rows, numeric_to=0, cell_classes=marks))
        out.append(_more(page, entries, "SLOs"))
    return "".join(out) + "</section>"


PARAMS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("run id", lambda s: s.get("run_id")), ("started", lambda s: s.get("started_at")),
    ("qdeck version", lambda s: s.get("qdeck_version")), ("broker", lambda s: s.get("broker")),
    ("broker kind", lambda s: s.get("broker_kind")), ("queue", lambda s: s.get("queue")),
    ("workload", lambda s: s.get("workload")),
    ("schedule", lambda s: as_dict(s.get("schedule")).get("description", s.get("schedule"))),
    ("schedule parameters", lambda s: as_dict(s.get("schedule")).get("params")),
    ("payload", lambda s: s.get("payload")), ("measured time (s)", lambda s: s.get("duration_s")),
    ("warm-up (s)", lambda s: s.get("warmup_s")), ("timeout (s)", lambda s: s.get("timeout_s")),
    ("coalesce window (s)", lambda s: s.get("coalesce_s")), ("closed loop", lambda s: s.get("closed_loop")),
    ("publisher confirms", lambda s: s.get("confirm")), ("persistent requests", lambda s: s.get("persistent")),
    ("worker devices", lambda s: s.get("devices")), ("workers", lambda s: s.get("workers")),
    ("agents", lambda s: len(s["agents"]) if isinstance(s.get("agents"), list) else None),
    ("schema version", lambda s: s.get("schema_version")),
]


def params(page: Page, run: Run, base: Run | None) -> str:
    runs = runs_of(run, base)
    rows = [[name, *(plain(get(r.summary)) for r in runs)] for name, get in PARAMS]
    head = ["parameter", *(r.label for r in runs)]
    return f'<section id="params"><h2>Parameters</h2>{table(page, head, rows, numeric_to=0)}</section>'


def counts(page: Page, run: Run, base: Run | None) -> str:
    runs = runs_of(run, base)
    head = ["count", *(r.label for r in runs)]
    rows: list[list[Any]] = [[key, *(count_text(as_dict(r.summary.get("counts")).get(key)) for r in runs)]
                             for key in COUNTS]
    for key, label in (("target", "target rate (req/s)"), ("achieved", "achieved rate (req/s)")):
        rows.append([label, *(count_text(as_dict(r.summary.get("rates")).get(key)) for r in runs)])
    ratios = [as_num(as_dict(r.summary.get("rates")).get("achieved_ratio")) for r in runs]
    rows.append(["achieved / target", *("-" if v is None else f"{v * 100:.2f}%" for v in ratios)])
    out = [f'<section id="counts"><h2>Counts and rates</h2>{table(page, head, rows)}']
    for r in runs:
        kinds = list(as_dict(r.summary.get("errors_by_kind")).items())
        if kinds:
            out.append(f"<h3>errors by kind ({page.h(r.label)})</h3>")
            out.append(table(page, ["kind", "requests"], [[k, count_text(v)] for k, v in kinds[:MAX_ROWS]]))
            out.append(_more(page, kinds, "kinds"))
    return "".join(out) + "</section>"


def _figure(summary: dict[str, Any], stage: str, key: str) -> tuple[float | None, bool]:
    entry = as_dict(as_dict(summary.get("stages")).get(stage))
    return as_num(entry.get(f"{key}_ms")), key in as_list(entry.get("at_least"))


def _shown(summary: dict[str, Any], stage: str, key: str) -> str:
    value, lower = _figure(summary, stage, key)
    return "-" if value is None else fmt_figure(value, lower, as_num(summary.get("timeout_s")) or 0.0, key)


FIGURES = ("min", "p50", "p90", "p99", "p99_9", "max", "mean")


def stages(page: Page, run: Run, base: Run | None) -> str:
    rows, classes = [], []
    for stage in STAGES:
        for r in runs_of(run, base):
            entry = as_dict(as_dict(r.summary.get("stages")).get(stage))
            name = stage if r.label == "this run" else f"{stage} (base)"
            rows.append([name, count_text(entry.get("count")), *(_shown(r.summary, stage, k) for k in FIGURES)])
            classes.append("base" if r.label == "base" else "")
    head = ["stage", "count", *(f"{k.replace('_', '.')} (ms)" for k in FIGURES)]
    help_rows = "".join(f"<li><b>{page.h(s)}</b>: {page.h(h)}</li>" for s, h in STAGE_HELP.items())
    return (f'<section id="stages"><h2>Stages</h2>{table(page, head, rows, row_classes=classes)}'
            f'<ul class="notes">{help_rows}</ul><p class="caption">{page.h(", ".join(CROSS_HOST_STAGES))} are '
            "stamped on two hosts' clocks (the worker's and the generator's): across hosts they are approximate. "
            "A figure shown with &#8805; stands on timed-out requests: a lower bound.</p></section>")


def notes(page: Page, run: Run, base: Run | None) -> str:
    out = ['<section id="notes"><h2>Notes and outages</h2>']
    for r in runs_of(run, base):
        items = list(as_list(r.summary.get("notes")))
        items += [f"{t.skipped} lines of the {st} interval log could not be read and were left out"
                  for st, t in r.timelines.items() if t.skipped]
        missing = [st for st in STAGES if st not in r.timelines]
        if missing:
            items.append(f"no interval log for {', '.join(missing)}")
        if base is not None:
            out.append(f"<h3>{page.h(r.label)}</h3>")
        lis = "".join(f"<li>{page.h(n)}</li>" for n in items[:MAX_ROWS]) or "<li>no notes</li>"
        out.append(f'<ul class="notes">{lis}</ul>{_more(page, items, "notes")}')
        gaps = [g for g in as_list(r.summary.get("gaps")) if isinstance(g, dict)]
        if gaps:
            rows = [[count_text(g.get("from_s")) if g.get("from_s") is not None else "-",
                     plain(g.get("to_s")) if g.get("to_s") is not None else "the end", count_text(g.get("unsent")),
                     plain(g.get("reason")), plain(g.get("agent"))] for g in gaps[:MAX_ROWS]]
            out.append(table(page, ["outage from (s)", "to (s)", "unsent", "why", "agent"], rows, numeric_to=2))
            out.append(_more(page, gaps, "outages"))
    return "".join(out) + "</section>"


# (label, where, worse when higher: True / False / None for neither, unit)
DELTAS: list[tuple[str, tuple[str, ...], bool | None, str]] = [
    *((f"end_to_end {k.replace('_', '.')}", ("stage", "end_to_end", k), True, "ms")
      for k in ("p50", "p90", "p99", "p99_9", "max", "mean")),
    *((f"{stage} p99", ("stage", stage, "p99"), True, "ms") for stage in STAGES[1:]),
    *((key, ("counts", key), worse, "") for key, worse in (("sent", None), ("replied", None), ("errors", True),
                                                             ("timeouts", True), ("unsent", True))),
    ("target rate", ("rates", "target"), None, "req/s"),
    ("achieved rate", ("rates", "achieved"), False, "req/s"),
    ("queue depth, sampled mean", ("littles_law", "mean_depth"), None, ""),
    ("queue wait, mean (Little)", ("littles_law", "mean_queue_wait_ms"), True, "ms"),
]


def _value(summary: dict[str, Any], where: tuple[str, ...]) -> tuple[float | None, bool]:
    if where[0] == "stage":
        return _figure(summary, where[1], where[2])
    return as_num(as_dict(summary.get(where[0])).get(where[1])), False


def _fmt(value: float, sign: bool = False) -> str:
    text = f"{value:+,.3f}" if sign else f"{value:,.3f}"
    return text.rstrip("0").rstrip(".")


def deltas(page: Page, run: Run, base: Run) -> str:
    rows: list[list[str]] = []
    marks: dict[tuple[int, int], str] = {}
    for label, where, worse, unit in DELTAS:
        (b, b_low), (n, n_low) = _value(base.summary, where), _value(run.summary, where)
        if b is None and n is None:
            continue
        shown = ["-" if v is None else ("\u2265 " if low else "") + _fmt(v) for v, low in ((b, b_low), (n, n_low))]
        change = "-"
        if b is not None and n is not None:
            change = _fmt(n - b, sign=True) + (f" {unit}" if unit else "")
            change += f" ({(n - b) / b * 100:+.1f}%)" if b else ""
            if b_low or n_low:
                change += " (lower bounds)"
            elif worse is not None and n != b:
                marks[(len(rows), 3)] = "worse" if (n > b) == worse else "better"
        rows.append([label + (f" ({unit})" if unit else ""), *shown, change])
    return (f'<section id="deltas"><h2>Changes from the base run</h2>'
            f"{table(page, ['figure', 'base', 'this run', 'change'], rows, cell_classes=marks)}</section>")


SAMPLE_FIELDS = ("depth", "in_flight", "lag", "consumers")


def _samples(block: dict[str, Any], max_points: int) -> tuple[list[float], dict[str, list[float | None]]]:
    """The samples, at most ``max_points``: past that each point is the largest depth, in-flight and lag of the
    samples it stands for, and the fewest consumers."""
    rows = [s for s in as_list(block.get("samples")) if isinstance(s, dict) and as_num(s.get("t_s")) is not None]
    step = max(1, math.ceil(len(rows) / max_points))
    ts: list[float] = []
    out: dict[str, list[float | None]] = {f: [] for f in SAMPLE_FIELDS}
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        ts.append(round(as_num(chunk[-1]["t_s"]) or 0.0, 3))
        for f in SAMPLE_FIELDS:
            values = [v for s in chunk if (v := as_num(s.get(f))) is not None]
            out[f].append((min(values) if f == "consumers" else max(values)) if values else None)
    return ts, out


LITTLE = (("mean_depth", "queue depth, sampled mean"), ("arrival_rate", "arrival rate (req/s)"),
          ("mean_queue_wait_ms", "queue wait, mean (ms)"),
          ("predicted_depth", "depth Little's law predicts (rate x wait)"),
          ("ratio", "ratio, sampled / predicted"))
BROKER_COLORS = {"depth": "#1f77b4", "in_flight": "#ff7f0e", "lag": "#9467bd", "consumers": "#2ca02c"}


def broker_section(page: Page, runs: list[Run], max_points: int) -> str:
    series, columns, said = [], [], []
    for r in runs:
        who = "" if r.label == "this run" else "base: "
        block = r.summary.get("broker_samples")
        if block is None:
            said.append(f"{who}no broker samples in this run")
            continue
        if not isinstance(block, dict):
            said.append(f"{who}the summary's broker_samples is not an object")
            continue
        ts, values = _samples(block, max_points)
        for f in SAMPLE_FIELDS:
            if any(v is not None for v in values[f]):
                series.append(series_of(f, BROKER_COLORS[f], r, scale="y2" if f == "consumers" else "y"))
                columns.append((ts, values[f]))
        every = as_num(block.get("sample_period_s")) or as_num(block.get("interval_s"))
        said.append(f"{who}queue {page.text(block.get('queue', '?'), NAME_LIMIT)}"
                    + (f", read every {every:g} s, each point an interval's mean" if every else "")
                    + (f" from {page.text(block['source'])}" if block.get("source") else "")
                    + (f"; sampling error: {page.text(block['error'])}" if block.get("error") else "")
                    + ("" if ts else "; no samples"))
    drawn = chart(page, "broker", x={"label": "time (s)", "unit": "s"}, y={"label": "messages"},
                  y2={"label": "consumers"}, series=series, columns=columns,
                  empty="; ".join(said) or "no broker samples in this run", span_gaps=len(runs) > 1)
    laws = [r.summary.get("littles_law") for r in runs]
    if any(isinstance(law, dict) for law in laws):
        rows = [[label, *(plain(as_dict(law).get(key)) if isinstance(law, dict) else "-" for law in laws)]
                for key, label in LITTLE]
        little = ("<h3>Little's law</h3>" + table(page, ["figure", *(r.label for r in runs)], rows)
                  + '<p class="caption">L = &lambda;W: the mean depth the arrival rate and the mean queue wait '
                  "predict, against the sampled mean depth; near 1 on a steady run (the summary's notes say what a "
                  "ratio far from 1 most likely means).</p>")
    else:
        little = "<p class=\"caption\">Little's law: no figures in this run's summary.</p>"
    return ('<section id="broker-panel"><h2>Request queue: depth and consumers</h2><p class="caption">'
            f"{page.h('; '.join(said))}. Depth, in-flight and lag on the left axis, consumers on the right."
            f"</p>{drawn}{little}</section>")
