"""``qdeck load report``: one self-contained HTML page of a run, optionally over a baseline run.

Reads what ``qdeck load run --out DIR`` wrote — ``summary.json`` and the interval logs (``latency.hlog``,
``hlog/<stage>.hlog``) — and nothing of the engine. The page works offline: uPlot (pinned, vendored in
``report_assets/`` with its licence), its CSS, the page's own script and style and the data (JSON) are all inlined,
and its Content-Security-Policy forbids every fetch and runs only the page's own scripts (by hash).

Every text that comes from a run (queue names, notes, errors, SLO texts, ...) is hostile input: it goes through the
CLI's one sanitiser (handed in as a ``Sanitiser``: results import nothing from console), then is HTML-escaped; inside
the page's JSON, ``<``, ``>``, ``&``, U+2028 and U+2029 are ``\\uXXXX`` escapes. The page is ASCII.

The figures are exact: the spectrum is each stage's whole histogram from the summary, read at fixed steps of the
1/(1-q) axis (HdrHistogram's percentile plot); the figures over time are those of each interval's histogram, or, in
runs of more than MAX_POINTS intervals, of consecutive intervals' histograms added together (adding is exact).
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import IO, Any

from hdrh.histogram import HdrHistogram

from loadgen.errors import ReportError
from loadgen.results import html_report_view as view
from loadgen.results.html_report_gpu import gpu_section
from loadgen.results.html_report_llm import TIMED, llm_section
from loadgen.results.html_report_view import FIGURE_COLORS, FLOOR_MS, STAGE_COLORS, Page, as_dict, as_num
from loadgen.results.merge import read_intervals
from loadgen.results.stages import STAGES, log_path
from loadgen.results.summary import load_summary, stage_histogram

__all__ = ["MAX_BYTES", "MAX_POINTS", "UPLOT_VERSION", "Run", "Sanitiser", "Timeline", "build_report",
           "check_run_dir", "load_run", "read_timeline", "render_page", "spectrum"]

UPLOT_VERSION = "1.6.32"  # npm uplot, vendored in report_assets/ (uPlot.iife.min.js, uPlot.min.css, uPlot.LICENSE)
MAX_BYTES = 5 * 1024 * 1024
MAX_POINTS = 1000  # points per series over time; past this, consecutive intervals are added together
STEPS_PER_DECADE = 20  # spectrum points per decade of 1/(1-q)
ASSETS = "report_assets"


@dataclass(frozen=True, slots=True)
class Sanitiser:
    """The CLI's one sanitiser (``console.safe_text``), handed in: ``text(value, limit)`` is one display-safe line of
    anything, cut to ``limit`` characters; ``json(data)`` ASCII-only JSON of plain data."""

    text: Callable[[Any, int | None], str]
    json: Callable[[Any], str]


@dataclass
class Timeline:
    """One stage's figures over time (ms; ``None`` where a point had no values), from its interval log."""

    end_s: list[float] = field(default_factory=list)  # the point's end, seconds from the run's start
    span_s: list[float] = field(default_factory=list)  # the time the point covers
    count: list[int] = field(default_factory=list)
    p50_ms: list[float | None] = field(default_factory=list)
    p99_ms: list[float | None] = field(default_factory=list)
    max_ms: list[float | None] = field(default_factory=list)
    merged: int = 1  # intervals added together per point
    skipped: int = 0  # lines that could not be read (a run killed mid-write)


@dataclass
class Run:
    label: str  # "this run" / "base"
    directory: Path
    summary: dict[str, Any]
    timelines: dict[str, Timeline]  # by stage, for the stages that have an interval log
    spectra: dict[str, tuple[list[float], list[float]]]  # by stage: x = 1/(1-q), y = ms


def check_run_dir(directory: Path) -> None:
    """``ReportError`` (one line) unless ``directory`` looks like a run directory (it has a summary.json)."""
    if not directory.exists():
        raise ReportError(f"no run directory {str(directory)!r}")
    if not directory.is_dir():
        raise ReportError(f"{str(directory)!r} is not a directory: give the directory 'qdeck load run --out' "
                          "or 'qdeck load search --out' wrote")
    if not (directory / "summary.json").is_file():
        raise ReportError(f"{str(directory)!r} is not a qdeck run directory (no summary.json) nor a search directory "
                          "(no search.json)")


def load_run(directory: Path, label: str, max_points: int = MAX_POINTS) -> Run:
    """A run directory's summary and interval logs; ``ReportError`` (one line) when it is not one."""
    check_run_dir(directory)
    summary = load_summary(directory / "summary.json")
    timelines = {}
    for stage in STAGES + TIMED:
        timeline = read_timeline(log_path(directory, stage), max_points)
        if timeline is not None:
            timelines[stage] = timeline
    spectra = {stage: spectrum(stage_histogram(summary, stage)) for stage in STAGES
               if isinstance(as_dict(summary["stages"]).get(stage), dict)}
    return Run(label, directory, summary, timelines, spectra)


def _data_lines(fh: IO[str]) -> Iterator[str]:
    for raw in fh:
        line = raw.strip()
        if line and not line.startswith(("#", '"')):
            yield line


def read_timeline(path: Path, max_points: int = MAX_POINTS) -> Timeline | None:
    """The interval log at ``path`` as at most ``max_points`` points; ``None`` when there is no such log."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            lines = sum(1 for _ in _data_lines(fh))
            fh.seek(0)
            return _read(fh, max(1, math.ceil(lines / max_points)))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None


def _read(fh: IO[str], merged: int) -> Timeline:
    tl = Timeline(merged=merged)
    acc: HdrHistogram | None = None
    held = 0
    first = last = 0.0  # the first interval's start and the last one's end of the point being added up
    for line in _data_lines(fh):
        try:
            ((start, length, hist),) = read_intervals(line)
            end = start + length
            if not (math.isfinite(end) and start >= 0 and 0 <= length <= 1e6):
                raise ValueError(line[:40])
        except Exception:  # a truncated or corrupt line: counted, skipped
            tl.skipped += 1
            continue
        if acc is None:
            acc, first = hist, start
        else:
            acc.add(hist)
        held += 1
        last = end
        if held == merged:
            _point(tl, acc, first, last)
            acc, held = None, 0
    if acc is not None:
        _point(tl, acc, first, last)
    return tl


def _point(tl: Timeline, hist: HdrHistogram, start: float, end: float) -> None:
    n = int(hist.get_total_count())
    tl.end_s.append(round(end, 3))
    tl.span_s.append(max(end - start, 1e-9))
    tl.count.append(n)
    if n:
        at = hist.get_percentile_to_value_dict([50.0, 99.0])
        top = hist.get_max_value() / 1000
        tl.p50_ms.append(at.get(50.0, hist.get_max_value()) / 1000)
        tl.p99_ms.append(at.get(99.0, hist.get_max_value()) / 1000)
        tl.max_ms.append(top)
    else:
        tl.p50_ms.append(None)
        tl.p99_ms.append(None)
        tl.max_ms.append(None)


def spectrum(hist: HdrHistogram) -> tuple[list[float], list[float]]:
    """The percentile spectrum of ``hist`` (µs) in ms, at x = 1/(1-q) = 10^(k/STEPS_PER_DECADE) up to the count, then
    the max at x = count (the last value)."""
    n = int(hist.get_total_count())
    if not n:
        return [], []
    xs: list[float] = []
    k = 0
    while (x := 10 ** (k / STEPS_PER_DECADE)) < n:
        xs.append(x)
        k += 1
    pcts = [100.0 * (1.0 - 1.0 / x) for x in xs]
    at = hist.get_percentile_to_value_dict(pcts)
    top = hist.get_max_value()
    ys = [at.get(p, top) / 1000 for p in pcts]
    return [float(f"{x:.6g}") for x in xs] + [float(n)], [*ys, top / 1000]


def _time_series(run: Run, stage: str) -> tuple[list[dict[str, Any]], list[view.Column]]:
    tl = run.timelines.get(stage)
    if tl is None:
        return [], []
    figures = (("p50", tl.p50_ms), ("p99", tl.p99_ms), ("max", tl.max_ms))
    return ([view.series_of(f, FIGURE_COLORS[f], run, unit="ms") for f, _ in figures],
            [(tl.end_s, ys) for _, ys in figures])


def _merged_note(runs: list[Run], stage: str) -> str:
    merged = max((r.timelines[stage].merged for r in runs if stage in r.timelines), default=1)
    return (f" Each point adds {merged} consecutive intervals together (its figures are those of their sum, exact)."
            if merged > 1 else " One point per interval.")


def latency_over_time(page: Page, runs: list[Run]) -> str:
    out = ['<section id="over-time"><h2>Latency over time</h2><p class="caption">Each stage\'s p50, p99 and max per '
           "interval (ms), from its interval log: exact figures of each interval's histogram."
           f"{page.h(_merged_note(runs, 'end_to_end'))} Click a legend entry to hide a line; drag to zoom, "
           'double-click to zoom out.</p><div class="grid">']
    for stage in STAGES:
        if stage == "schedule_lag":
            continue
        series, columns = [], []
        for r in runs:
            s, c = _time_series(r, stage)
            series += s
            columns += c
        log = "latency.hlog" if stage == "end_to_end" else f"hlog/{stage}.hlog"
        empty = ("no values for this stage in the interval log" if any(stage in r.timelines for r in runs) else
                 f"no interval log for this stage ({log})")
        chart = view.chart(page, f"time-{stage}", x={"label": "time (s)", "unit": "s"}, y={"label": "ms"},
                           series=series, columns=columns, empty=empty, span_gaps=len(runs) > 1)
        out.append(f'<div class="panel"><h3>{page.h(stage)}</h3>{chart}</div>')
    return "".join(out) + "</div></section>"


def spectrum_section(page: Page, runs: list[Run]) -> str:
    series, columns = [], []
    for r in runs:
        for stage in STAGES:
            xs, ys = r.spectra.get(stage, ([], []))
            if xs:
                series.append(view.series_of(stage, STAGE_COLORS[stage], r, unit="ms"))
                columns.append((xs, [max(y, FLOOR_MS) for y in ys]))
    timeout = as_num(runs[0].summary.get("timeout_s"))
    chart = view.chart(page, "spectrum", x={"label": "percentile", "kind": "pct"},
                       y={"label": "latency (ms)", "log": True}, series=series, columns=columns, span_gaps=True,
                       empty="no stage recorded any value in this run")
    return ('<section id="spectrum"><h2>Percentile spectrum</h2><p class="caption">Every stage\'s latency at every '
            "percentile, from the run's whole histogram (summary.json), as HdrHistogram plots it: x is 1/(1-q) on a "
            "log axis, so 90%, 99%, 99.9%, ... are equally spaced and the tail gets the room; y is ms on a log axis "
            "(values under 1 &micro;s are drawn at 1 &micro;s). A line ends at its largest value. Values at or above "
            f"the timeout ({page.h('-' if timeout is None else f'{timeout:g} s')}) stand on timed-out requests and "
            f"are lower bounds.</p>{chart}</section>")


def _rate(tl: Timeline, counts: list[int]) -> view.Column:
    """Per-second rates of ``counts`` over ``tl``'s points, less those shorter than half the usual (a run's last,
    partial interval: a request or two over a few ms is no rate)."""
    usual = sorted(tl.span_s)[len(tl.span_s) // 2] if tl.span_s else 0.0
    kept = [(t, round(n / d, 3)) for t, n, d in zip(tl.end_s, counts, tl.span_s, strict=True) if d >= usual / 2]
    return [t for t, _ in kept], [v for _, v in kept]


def rates_section(page: Page, runs: list[Run]) -> str:
    series, columns = [], []
    for r in runs:
        t = r.timelines
        lag, e2e, replies = t.get("schedule_lag"), t.get("end_to_end"), t.get("queue_wait")
        if lag is not None:
            series.append(view.series_of("sent/s", "#1f77b4", r, unit="/s"))
            columns.append(_rate(lag, lag.count))
        if replies is not None:
            series.append(view.series_of("replied/s", "#2ca02c", r, unit="/s"))
            columns.append(_rate(replies, replies.count))
            if e2e is not None and e2e.end_s == replies.end_s:
                series.append(view.series_of("timeouts/s", "#d62728", r, unit="/s"))
                columns.append(_rate(e2e, [max(0, a - b) for a, b in zip(e2e.count, replies.count, strict=True)]))
    errors = ", ".join(f"{view.count_text(as_dict(r.summary['counts']).get('errors'))} ({r.label})" for r in runs)
    chart = view.chart(page, "rates", x={"label": "time (s)", "unit": "s"}, y={"label": "requests/s"},
                       series=series, columns=columns, empty="no interval logs to count requests from",
                       span_gaps=len(runs) > 1)
    return ('<section id="rates-panel"><h2>Requests per second</h2><p class="caption">Derived from the interval '
            "logs' counts: sent = schedule_lag values, replied = queue_wait values (replies without a worker error), "
            "timeouts = end_to_end values less replies. Worker errors are not in the interval logs: "
            f"{page.h(errors)} in the whole run ('qdeck load run --csv FILE' records them per second). The run's "
            "last interval is left out when it is shorter than half the others."
            f"{page.h(_merged_note(runs, 'schedule_lag'))}</p>{chart}</section>")


def lag_section(page: Page, runs: list[Run]) -> str:
    series, columns = [], []
    for r in runs:
        s, c = _time_series(r, "schedule_lag")
        series += s
        columns += c
    chart = view.chart(page, "lag", x={"label": "time (s)", "unit": "s"}, y={"label": "ms"}, series=series,
                       columns=columns, empty="no schedule-lag interval log (hlog/schedule_lag.hlog) in this run",
                       span_gaps=len(runs) > 1)
    return ('<section id="lag-panel"><h2>Schedule lag over time</h2><p class="caption">How late the generator sent '
            "each request after its intended time: p50, p99 and max per interval. A p99 over 10 ms means the generator "
            f"fell behind and its latencies include its own delay.{page.h(_merged_note(runs, 'schedule_lag'))}</p>"
            f"{chart}</section>")


def batch_section(page: Page, runs: list[Run]) -> str:
    by_run: list[dict[int, int]] = []
    for r in runs:
        sizes = {}
        for k, v in as_dict(r.summary.get("batch_sizes")).items():
            n = as_num(v)
            if str(k).isdigit() and n is not None and n > 0:
                sizes[int(k)] = int(n)
        by_run.append(sizes)
    cats = sorted({k for sizes in by_run for k in sizes})[: view.MAX_ROWS]
    series: list[dict[str, Any]] = []
    columns: list[view.Column] = []
    means: list[str] = []
    for r, sizes, align in zip(runs, by_run, (1, -1), strict=False):
        total = sum(sizes.values())
        if not total:
            continue
        series.append(view.series_of("share of replies", "#1f77b4" if r.label == "this run" else "#7f7f7f", r,
                                     unit="%", align=align if len(runs) > 1 else 0))
        columns.append((list(range(len(cats))), [round(100 * sizes.get(k, 0) / total, 4) for k in cats]))
        means.append(f"{sum(k * v for k, v in sizes.items()) / total:.2f} ({r.label})")
        service = {str(k): as_num(as_dict(v).get("mean_ms"))
                   for k, v in as_dict(r.summary.get("service_by_batch")).items()}
        if any(v is not None for v in service.values()):
            series.append(view.series_of("mean service (ms)", "#2ca02c", r, unit="ms", scale="y2", line=True))
            columns.append((list(range(len(cats))), [service.get(str(k)) for k in cats]))
    y2 = {"label": "service (ms)"} if any(s.get("scale") == "y2" for s in series) else None
    chart = view.chart(page, "batches", kind="bars", x={"label": "batch size", "kind": "cat",
                                                         "cats": [str(c) for c in cats]},
                       y={"label": "% of replies"}, y2=y2, series=series, columns=columns,
                       empty="no replies, so no batch sizes, in this run")
    mean = f" Mean batch size: {', '.join(means)}." if means else ""
    return ('<section id="batches-panel"><h2>Batch sizes</h2><p class="caption">The size of the worker batch each '
            f"reply came in, as a share of the replies (bars), and the mean service time of a batch of each size "
            f"(line, right axis; summary.json's service_by_batch).{page.h(mean)}</p>{chart}</section>")


def body(page: Page, run: Run, base: Run | None, max_points: int) -> str:
    runs = view.runs_of(run, base)
    parts = [view.header(page, run, base), view.alerts(page, run, base), view.slos(page, run, base)]
    if base is not None:
        parts.append(view.deltas(page, run, base))
    parts += [view.counts(page, run, base), view.stages(page, run, base), view.notes(page, run, base),
              view.params(page, run, base), llm_section(page, runs), spectrum_section(page, runs),
              latency_over_time(page, runs),
              rates_section(page, runs), lag_section(page, runs), batch_section(page, runs),
              view.broker_section(page, runs, max_points), gpu_section(page, runs, max_points)]
    sources = ", ".join(str(r.directory) for r in runs)
    parts.append(f"<footer>qdeck {page.h(run.summary.get('qdeck_version', 'unknown'), view.NAME_LIMIT)} load report "
                 f"of {page.h(sources)}. Charts: uPlot {UPLOT_VERSION} (MIT licence), inlined: the page needs no "
                 "network. Latencies in ms.</footer>")
    return "\n".join(parts)


def _asset(name: str, *, inlined: bool = True) -> str:
    """A file of report_assets/; one to be inlined in a <script> or <style> must not be able to end it."""
    text = resources.files("loadgen.results").joinpath(f"{ASSETS}/{name}").read_text(encoding="utf-8")
    lowered = text.lower()
    if not text.isascii() or (inlined and ("</script" in lowered or "<!--" in lowered or "</style" in lowered)):
        raise ReportError(f"the report asset {name} cannot be inlined safely (reinstall qdeck)")
    return text


def _script_json(san: Sanitiser, data: Any) -> str:
    text = san.json(data)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def build_report(run_dir: Path, compare: Path | None, sanitiser: Sanitiser, *, max_points: int = MAX_POINTS) -> str:
    """The report page of the run in ``run_dir`` (over the baseline run in ``compare``), as text; ``ReportError``
    (one line) for a directory that is not a run."""
    run = load_run(run_dir, "this run", max_points)
    base = load_run(compare, "base", max_points) if compare is not None else None
    page = Page(sanitiser.text)
    content = body(page, run, base, max_points)
    return render_page(page, content, run.summary.get("qdeck_version", "unknown"), sanitiser)


def render_page(page: Page, content: str, version: Any, sanitiser: Sanitiser) -> str:
    """The whole page around ``content`` (the body's HTML) and ``page.charts``: uPlot, the page's script and style
    inlined, the CSP, the data's JSON made safe inside its <script>; ASCII and at most MAX_BYTES or ``ReportError``.
    The run report and the search report (``search_report``) both end here."""
    licence = _asset("uPlot.LICENSE")
    if "*/" in licence:
        raise ReportError("the report asset uPlot.LICENSE cannot be inlined safely (reinstall qdeck)")
    uplot_js = f"/*! uPlot {UPLOT_VERSION}\n{licence}\n*/\n{_asset('uPlot.iife.min.js')}"
    report_js = _asset("report.js")
    csp = (f"default-src 'none'; script-src {_sha256(uplot_js)} {_sha256(report_js)}; style-src 'unsafe-inline'; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    doc = Template(_asset("report.html", inlined=False)).substitute(
        csp=csp, version=page.h(version, view.NAME_LIMIT), uplot_version=UPLOT_VERSION, title=page.title,
        uplot_css=_asset("uPlot.min.css"), report_css=_asset("report.css"), body=content,
        data=_script_json(sanitiser, {"charts": page.charts}), uplot_js=uplot_js, report_js=report_js)
    if not doc.isascii():  # every text was escaped to ASCII on the way in: anything else is a bug
        raise ReportError("the report is not ASCII: a text escaped the sanitiser")
    if len(doc) > MAX_BYTES:
        raise ReportError(f"the report would be {len(doc) / 2**20:.1f} MiB, over the {MAX_BYTES // 2**20} MiB limit")
    return doc
