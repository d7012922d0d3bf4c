"""``qdeck load report SEARCH_DIR``: what ``qdeck load search --out DIR`` found, as one self-contained HTML page.

Reads ``search.json`` (schema ``qdeck.search/1``) as data, never ``loadgen.run`` (results never import the run), and
draws from its ``probes`` (a superset of its ``curve``: the slopes' confidence intervals are there), in rate order:
latency against rate (end-to-end p50 and p99, log axis, the end-to-end latency SLOs as lines, λ* and the lowest
failing rate marked), queue-wait p99 against rate (the queue_wait SLOs as lines), achieved against offered rate, and
both backlog slopes (requests in flight, median queue wait) with their 95 % confidence intervals, passing and failing
probes apart; then the verdict (λ*, the bracket, ``limited_by``), a table of every probe and the search's parameters.

The page is made by the run report's machinery (``html_report.render_page``): the CLI's one sanitiser handed in,
every text escaped, uPlot inlined, a CSP that forbids every fetch, at most 5 MB. Where a rate was probed twice (the
generator's retry: the second verdict stands) the lines go through the later probe; the points show both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.errors import ReportError, SloError
from loadgen.results import html_report_view as view
from loadgen.results.html_report import Sanitiser, check_run_dir, render_page
from loadgen.results.html_report_view import FLOOR_MS, NAME_LIMIT, Page, as_dict, as_list, as_num, plain, table
from loadgen.results.latency import fmt_figure
from loadgen.results.slo import parse_slo
from loadgen.results.summary import read_json

__all__ = ["SCHEMA", "build_search_report", "load_search", "report_kind"]

SCHEMA = "qdeck.search/1"
MAX_DRAWN = 1000  # probes drawn and listed (a search runs at most 60; a hand-made file may hold more: counted)
PASS, FAIL, GUIDE = "#2ca02c", "#d62728", "#7f7f7f"
LAMBDA = "\u03bb*"


def report_kind(directory: Path) -> str:
    """``"run"`` (a summary.json: the run report) or ``"search"`` (a search.json and no summary.json); otherwise
    ``ReportError``, one line, naming both files."""
    if directory.is_dir() and not (directory / "summary.json").is_file() and (directory / "search.json").is_file():
        return "search"
    check_run_dir(directory)
    return "run"


def load_search(directory: Path) -> dict[str, Any]:
    """``directory``'s search.json; ``ReportError`` (one line) when it is not one this qdeck reads."""
    path = directory / "search.json"
    doc = read_json(path, "search.json")
    if not isinstance(doc, dict) or "schema" not in doc:
        raise ReportError(f"{path} is not a qdeck search.json (no schema)")
    if doc["schema"] != SCHEMA:
        raise ReportError(f"{path}: search schema {str(doc['schema'])[:40]!r} is not supported (this qdeck reads "
                          f"{SCHEMA})")
    if not isinstance(doc.get("probes"), list):
        raise ReportError(f"{path} is not a complete qdeck search.json (no 'probes' list)")
    return doc


@dataclass(frozen=True, slots=True)
class Slope:
    slope: float | None
    low: float | None  # the 95 % CI (None: fewer than 3 intervals)
    high: float | None

    @classmethod
    def of(cls, entry: Any) -> Slope:
        e = as_dict(entry)
        ci = as_list(e.get("ci95"))
        lo, hi = (as_num(ci[0]), as_num(ci[1])) if len(ci) == 2 else (None, None)
        return cls(as_num(e.get("slope_per_s")), lo, hi)

    def text(self) -> str:
        ci = f" ({self.low:+.2f} to {self.high:+.2f})" if self.low is not None and self.high is not None else ""
        return "-" if self.slope is None else f"{self.slope:+.2f}{ci}"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of search.json, as plain checked values."""

    index: Any
    rate: float | None
    ok: bool
    achieved: float | None
    e2e: dict[str, Any]
    queue_wait: dict[str, Any]
    lag_p99: float | None
    backlog: Slope
    wait: Slope
    failures: list[str]
    why: list[Any]
    stopped_early: Any
    directory: Any
    timeout_s: float

    @classmethod
    def of(cls, raw: Any, timeout_s: float) -> Probe:
        p = as_dict(raw)
        rate = as_num(p.get("rate"))
        return cls(index=p.get("index"), rate=rate if rate is not None and rate > 0 else None, ok=p.get("ok") is True,
                   achieved=as_num(p.get("achieved")), e2e=as_dict(p.get("end_to_end")),
                   queue_wait=as_dict(p.get("queue_wait")),
                   lag_p99=as_num(as_dict(p.get("generator")).get("schedule_lag_p99_ms")),
                   backlog=Slope.of(p.get("backlog")), wait=Slope.of(p.get("queue_wait_trend_ms_per_s")),
                   failures=[str(f) for f in as_list(p.get("failures"))], why=as_list(p.get("why")),
                   stopped_early=p.get("stopped_early"), directory=p.get("dir"),
                   timeout_s=as_num(as_dict(p.get("summary")).get("timeout_s")) or timeout_s)

    def ms(self, entry: dict[str, Any], key: str) -> float | None:
        return as_num(entry.get(f"{key}_ms"))

    def shown(self, entry: dict[str, Any], key: str) -> str:
        value = self.ms(entry, key)
        return "-" if value is None else fmt_figure(value, key in as_list(entry.get("at_least")), self.timeout_s, key)


Getter = Callable[[Probe], float | None]


def _rate(value: Any) -> str:
    n = as_num(value)
    return "-" if n is None else f"{n:,.2f}/s"


def _standing(probes: Sequence[Probe]) -> list[Probe]:
    """One probe per rate, the last one run there (its verdict stands), in rate order."""
    at = {p.rate: p for p in probes if p.rate is not None}
    return [at[r] for r in sorted(at)]


def _column(probes: Sequence[Probe], get: Getter, floor: float | None = None) -> view.Column:
    xs, ys = [], []
    for p in sorted((p for p in probes if p.rate is not None), key=lambda q: q.rate or 0.0):
        y = get(p)
        xs.append(p.rate or 0.0)
        ys.append(None if y is None else max(y, floor) if floor is not None else y)
    return xs, ys


def _marks(page: Page, doc: dict[str, Any]) -> list[dict[str, Any]]:
    marks = []
    lam, failed = as_num(doc.get("max_rate")), as_num(doc.get("failed_rate"))
    if lam is not None:
        marks.append({"x": lam, "label": page.text(f"{LAMBDA} {lam:,.6g}/s"), "color": PASS, "side": "left"})
    if failed is not None:
        marks.append({"x": failed, "label": page.text(f"failed {failed:,.6g}/s"), "color": FAIL, "side": "right"})
    return marks


def _latency_slos(doc: dict[str, Any], stage: str) -> list[tuple[str, float]]:
    """The SLOs on ``stage``'s latency, as (text, threshold ms); texts that do not parse are left out."""
    out = []
    for text in as_list(doc.get("slo"))[: view.MAX_ROWS]:
        try:
            slo = parse_slo(str(text)[:200])  # a real SLO is short
        except SloError:
            continue
        if slo.metric == "latency" and slo.stage == stage:
            out.append((slo.text, slo.threshold * 1000))
    return out


def _verdict_points(probes: Sequence[Probe], get: Getter, floor: float | None = None, *,
                    extra: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[view.Column]]:
    series, columns = [], []
    for ok, label, color in ((True, "passing probes", PASS), (False, "failing probes", FAIL)):
        col = _column([p for p in probes if p.ok is ok], get, floor)
        if any(v is not None for v in col[1]):
            series.append({"label": label, "color": color, "points": True, **(extra or {})})
            columns.append(col)
    return series, columns


def latency_chart(page: Page, doc: dict[str, Any], probes: list[Probe], marks: list[dict[str, Any]], *, cid: str,
                  stage: str, lines: list[tuple[str, Getter, str]], points: Getter) -> tuple[str, list[str]]:
    """Latency (log axis) against the offered rate: ``lines`` through the standing probes, ``points`` of every probe
    by verdict, the latency SLOs on ``stage`` as dashed levels; also the SLO texts drawn."""
    standing = _standing(probes)
    series: list[dict[str, Any]] = []
    columns: list[view.Column] = []
    for label, get, color in lines:
        series.append({"label": label, "color": color, "unit": "ms"})
        columns.append(_column(standing, get, FLOOR_MS))
    s, c = _verdict_points(probes, points, FLOOR_MS, extra={"unit": "ms"})
    series += s
    columns += c
    slos = _latency_slos(doc, stage)
    xs = [p.rate or 0.0 for p in standing]
    for text, ms in slos:
        level = max(ms, FLOOR_MS)
        series.append({"label": f"SLO {text}", "color": "#9467bd", "dash": True, "level": level, "unit": "ms"})
        columns.append((xs, [level] * len(xs)))
    drawn = view.chart(page, cid, x={"label": "offered rate (req/s)", "unit": "/s"},
                       y={"label": "latency (ms)", "log": True}, series=series, columns=columns, span_gaps=True,
                       empty=f"no probe recorded any {stage} value", extra={"marks": marks})
    return drawn, [t for t, _ in slos]


def slope_chart(page: Page, probes: list[Probe], marks: list[dict[str, Any]], *, cid: str,
                which: Callable[[Probe], Slope], unit: str, ylabel: str, guide: tuple[str, float] | None) -> str:
    """One slope per probe with its 95 % CI as a whisker, passing and failing apart, over a dashed 0 (and the
    growth threshold, where there is one)."""
    series, columns = _verdict_points(probes, lambda p: which(p).slope, extra={"unit": unit})
    xs = [p.rate or 0.0 for p in _standing(probes)]
    values = [v for p in probes if p.rate is not None for v in (which(p).low, which(p).slope, which(p).high)
              if v is not None]
    if series:
        for label, level in (("0: no growth", 0.0), *((guide,) if guide else ())):
            series.append({"label": label, "color": GUIDE, "dash": True, "level": level, "unit": unit})
            columns.append((xs, [level] * len(xs)))
            values.append(level)
    union = sorted({x for col, _ in columns for x in col})
    whiskers = []
    for i, s in enumerate(series):
        if s.get("points"):
            at = {p.rate: which(p) for p in probes if p.ok is (s["color"] == PASS) and p.rate is not None}
            whiskers.append({"series": i + 1, "low": [at[x].low if x in at else None for x in union],
                             "high": [at[x].high if x in at else None for x in union]})
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or 1.0
    return view.chart(page, cid, x={"label": "offered rate (req/s)", "unit": "/s"},
                      y={"label": ylabel, "min": lo - pad, "max": hi + pad}, series=series, columns=columns,
                      span_gaps=True, empty="no probe has a slope (each needs at least 3 intervals)",
                      extra={"marks": marks, "whiskers": whiskers})


def achieved_chart(page: Page, probes: list[Probe], marks: list[dict[str, Any]]) -> str:
    standing = _standing(probes)
    xs = [p.rate or 0.0 for p in standing]
    series: list[dict[str, Any]] = [{"label": "achieved", "color": "#1f77b4", "unit": "/s"}]
    columns: list[view.Column] = [_column(standing, lambda p: p.achieved)]
    s, c = _verdict_points(probes, lambda p: p.achieved, extra={"unit": "/s"})
    series += [*s, {"label": "achieved = offered", "color": GUIDE, "dash": True, "guide": True, "unit": "/s"}]
    columns += [*c, (xs, list(xs))]
    return view.chart(page, "search-achieved", x={"label": "offered rate (req/s)", "unit": "/s"},
                      y={"label": "achieved (req/s)"}, series=series, columns=columns, span_gaps=True,
                      empty="no probe has an achieved rate", extra={"marks": marks})


def verdict(page: Page, doc: dict[str, Any], probes: list[Probe], total: int, directory: Path) -> str:
    lam, failed = as_num(doc.get("max_rate")), as_num(doc.get("failed_rate"))
    precision = as_num(as_dict(doc.get("search")).get("precision"))
    limited = [str(x) for x in as_list(doc.get("limited_by"))]
    above = next((p for p in reversed(probes) if failed is not None and p.rate == failed), None)
    why = "; ".join(str(w) for w in above.why) if above is not None else ""
    out = ['<section id="verdict"><h2>Verdict</h2>']
    if doc.get("error"):
        out.append(f'<div class="alert" id="search-error">the search ended before its end: {page.h(doc["error"])}'
                   "</div>")
    if lam is None:
        head = f"{LAMBDA}: none"
        said = (f"no rate held: not even the lowest probe, {_rate(failed)}, passed" if failed is not None else
                "no probe finished") + (f" ({why})" if why else "")
    elif failed is None:
        head = f"{LAMBDA} \u2265 {_rate(lam)}"
        said = (f"{_rate(lam)} is the ceiling (--max-rate) and it held every SLO with the generator on time and no "
                "backlog growing: the limit is above it (raise --max-rate to search higher)")
    else:
        head = f"{LAMBDA} = {_rate(lam)}"
        said = (f"the highest rate that held every SLO with the generator on time and no backlog growing; "
                f"{_rate(failed)} failed ({', '.join(limited) or 'why unknown'}{': ' + why if why else ''}). The "
                f"limit lies in [{_rate(lam)}, {_rate(failed)})"
                + (f", searched to \u00b1{precision * 100:g} %" if precision is not None else "") + ".")
        if limited == ["generator"]:
            said += (" The probe above failed only because the load generator fell behind: this is the generator's "
                     "limit, not the system's (spread the load over agents to search higher).")
    out.append(f'<p class="lambda" id="lambda">{page.h(head)}</p><p class="caption">{page.h(said)}</p>')
    rows = [[f"max rate ({LAMBDA}, max_rate)", _rate(lam)], ["lowest failing rate (failed_rate)", _rate(failed)],
            ["bracket", f"[{_rate(lam)}, {_rate(failed)})" if lam is not None and failed is not None else "-"],
            ["limited_by", ", ".join(limited) or "-"], ["ceiling held", plain(doc.get("ceiling_held"))],
            ["probes run", f"{total:,}"], ["SLOs", plain(doc.get("slo"))],
            ["search directory", str(directory)]]
    out.append(table(page, ["figure", "value"], rows, numeric_to=0))
    return "".join(out) + "</section>"


PROBE_HEAD = ["#", "rate", "achieved", "p50 (ms)", "p99 (ms)", "queue wait p99 (ms)", "lag p99 (ms)",
              "in flight /s (95% CI)", "queue wait ms/s (95% CI)", "verdict", "why", "run directory"]


def probes_table(page: Page, probes: list[Probe], total: int, directory: Path) -> str:
    shown = sorted(probes, key=lambda p: (p.rate is None, p.rate or 0.0))[: view.MAX_ROWS]
    rows: list[list[Any]] = []
    marks: dict[tuple[int, int], str] = {}
    for r, p in enumerate(shown):
        why = [str(w) for w in p.why[:20]]
        if p.stopped_early and not any("stopped early" in w for w in why):
            why.append(str(p.stopped_early))
        lag = "-" if p.lag_p99 is None else f"{p.lag_p99:.2f}"
        rows.append([plain(p.index), _rate(p.rate), _rate(p.achieved), p.shown(p.e2e, "p50"), p.shown(p.e2e, "p99"),
                     p.shown(p.queue_wait, "p99"), lag, p.backlog.text(), p.wait.text(),
                     "ok" if p.ok else "FAIL: " + (", ".join(p.failures) or "?"), "; ".join(why) or "-",
                     plain(p.directory)])
        marks.update({(r, 7): "ci", (r, 8): "ci", (r, 9): "ok" if p.ok else "bad", (r, 10): "why"})
    more = (f'<p class="caption">... and {total - len(shown):,} more probes</p>'
            if total > len(shown) else "")
    where = page.h(str(directory / "probe-NN-RATE"))
    return ('<section id="probes"><h2>Probes</h2><p class="caption">Every probe in rate order (# is the order they '
            "ran in; a rate probed twice is the generator's retry, and the later verdict stands). A figure shown with "
            "&#8805; stands on timed-out requests: a lower bound. Each probe is a run directory of its own (the last "
            f"column, in this search's directory); its full report (spectrum, latency over time, queue depth) is "
            f"<code>qdeck load report {where}</code>. Nothing on this page links out: it needs no network.</p>"
            f'<div class="wide">{table(page, PROBE_HEAD, rows, numeric_to=8, cell_classes=marks)}</div>{more}'
            "</section>")


# (label, key): keys of search.json itself, then ("search", key) of its search parameters
PARAMS = (("broker", "broker"), ("broker kind", "broker_kind"), ("queue", "queue"), ("workload", "workload"),
          ("started", "started_at"), ("SLOs", "slo"), ("schedule", ("search", "schedule")),
          ("start rate (req/s)", ("search", "start")), ("--max-rate (req/s)", ("search", "max_rate")),
          ("--min-rate (req/s)", ("search", "min_rate")), ("precision", ("search", "precision")),
          ("probe, measured (s)", ("search", "probe_s")), ("interval (s)", ("search", "interval_s")),
          ("warm-up (s)", ("search", "warmup_s")), ("timeout (s)", ("search", "timeout_s")),
          ("backlog rule", ("search", "rule")), ("schema", "schema"))


def params(page: Page, doc: dict[str, Any]) -> str:
    rows = [[name, plain(as_dict(doc.get(key[0])).get(key[1]) if isinstance(key, tuple) else doc.get(key))]
            for name, key in PARAMS]
    return f'<section id="params"><h2>Parameters</h2>{table(page, ["parameter", "value"], rows, numeric_to=0)}' \
        "</section>"


def body(page: Page, doc: dict[str, Any], directory: Path) -> str:
    timeout_s = as_num(as_dict(doc.get("search")).get("timeout_s")) or 0.0
    total = len(as_list(doc.get("probes")))
    probes = [Probe.of(p, timeout_s) for p in as_list(doc.get("probes"))[:MAX_DRAWN]]
    marks = _marks(page, doc)
    queue = page.h(doc.get("queue", "?"), NAME_LIMIT)
    page.title = f"qdeck search report: {queue}"
    sub = (f"search on {page.h(doc.get('broker', '?'), NAME_LIMIT)}, started {page.h(doc.get('started_at', '?'))}; "
           f"SLOs {page.h(plain(doc.get('slo')))}")
    e2e, e2e_slos = latency_chart(page, doc, probes, marks, cid="search-latency", stage="end_to_end", lines=[
        ("p50", lambda p: p.ms(p.e2e, "p50"), "#1f77b4"), ("p99", lambda p: p.ms(p.e2e, "p99"), "#ff7f0e")],
        points=lambda p: p.ms(p.e2e, "p99"))
    qw, qw_slos = latency_chart(page, doc, probes, marks, cid="search-queue-wait", stage="queue_wait", lines=[
        ("queue_wait p99", lambda p: p.ms(p.queue_wait, "p99"), "#ff7f0e")],
        points=lambda p: p.ms(p.queue_wait, "p99"))
    rule = as_dict(as_dict(doc.get("search")).get("rule"))
    wait_min = as_num(rule.get("min_wait_growth_ms_per_s"))
    backlog = slope_chart(page, probes, marks, cid="search-backlog", which=lambda p: p.backlog, unit="/s",
                          ylabel="slope (/s)", guide=None)
    wait = slope_chart(page, probes, marks, cid="search-wait-slope", which=lambda p: p.wait, unit="ms/s",
                       ylabel="slope (ms/s)",
                       guide=(f"growth threshold {wait_min:g} ms/s", wait_min) if wait_min is not None else None)
    lines = ", ".join(e2e_slos) or "no end-to-end latency SLO"
    charts = (
        '<section id="latency-rate"><h2>Latency against rate</h2><p class="caption">End-to-end p50 and p99 of each '
        f"probe (ms, log axis) against the rate it offered; passing probes green, failing red (their p99); dashed: "
        f"the latency SLOs ({page.h(lines)}); the vertical lines mark &#955;* (the highest rate that passed) and "
        "the lowest rate that failed. Drag to zoom, double-click to zoom out, click a legend entry to hide a line."
        f"</p>{e2e}</section>"
        '<section id="queue-wait-rate"><h2>Queue wait against rate</h2><p class="caption">Each probe\'s queue-wait '
        f"p99 (ms, log axis): the time requests sat in the queue before a worker took them"
        f"{page.h('; dashed: ' + ', '.join(qw_slos) if qw_slos else '')}.</p>{qw}</section>"
        '<section id="achieved-rate"><h2>Achieved against offered rate</h2><p class="caption">The rate each probe '
        "sent at, measured, against the rate it was asked for; dashed: achieved = offered.</p>"
        f"{achieved_chart(page, probes, marks)}</section>"
        '<section id="slopes"><h2>Backlog slopes</h2><p class="caption">Each probe\'s least-squares slope of the '
        "requests in flight (per second) and of the median queue wait (ms per second) over its measured time, with "
        "its 95 % confidence interval (Student's t) as a whisker. A backlog grows when the whole interval lies above "
        f"0 and the growth is material ({page.h(_rule_text(rule))}).</p>"
        f'<div class="grid"><div class="panel"><h3>requests in flight</h3>{backlog}</div>'
        f'<div class="panel"><h3>median queue wait</h3>{wait}</div></div></section>')
    head = f'<header id="search"><h1>qdeck search report: {queue}</h1><p class="sub">{sub}</p></header>'
    foot = (f"<footer>qdeck {page.h(_version(doc), NAME_LIMIT)} search report of {page.h(str(directory))}. Charts: "
            "uPlot (MIT licence), inlined: the page needs no network. Latencies in ms.</footer>")
    return "\n".join([head, verdict(page, doc, probes, total, directory), charts,
                      probes_table(page, probes, total, directory), params(page, doc), foot])


def _rule_text(rule: dict[str, Any]) -> str:
    growth, share, wait = (as_num(rule.get(k)) for k in ("min_growth", "min_growth_share", "min_wait_growth_ms_per_s"))
    parts = [*([f"in flight: at least {growth:g} requests and {share * 100:g} % of those sent over the probe"]
               if growth is not None and share is not None else []),
             *([f"queue wait: at least {wait:g} ms a second"] if wait is not None else [])]
    return "; ".join(parts) or "the rule is not in this search.json"


def _version(doc: dict[str, Any]) -> Any:
    found = (as_dict(as_dict(p).get("summary")).get("qdeck_version") for p in as_list(doc.get("probes")))
    return next((v for v in found if v is not None), "unknown")


def build_search_report(directory: Path, sanitiser: Sanitiser) -> str:
    """The report page of the search in ``directory`` (its search.json), as text; ``ReportError`` (one line)."""
    doc = load_search(directory)
    page = Page(sanitiser.text)
    return render_page(page, body(page, doc, directory), _version(doc), sanitiser)
