"""``qdeck load report``: the HTML page of a run, in a real browser, over real runs, with hostile and bad input."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import redis
from hdrh.histogram import HdrHistogram

from console.cmd_load_report import write_report
from loadgen.errors import ReportError
from loadgen.results.html_report import MAX_BYTES, MAX_POINTS, UPLOT_VERSION, read_timeline, spectrum
from loadgen.results.merge import read_intervals
from loadgen.results.stages import STAGES, log_path, new_histogram, open_log
from loadgen.results.summary import RunRecord, build_summary, write_summary
from tests.browser import Browser, Opened, browser_fixture  # noqa: F401 (the browser fixture)
from tests.cli import Run, qdeck
from tests.workers import unique, worker

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "</script><script>window.pwned=1;alert(1)</script>\x1b[31mred\x1b[0m\u2028\u2029\u202eevil\x07"
WORKER = ["--model", "synthetic:base_ms=2,per_item_ms=0.2", "--max-wait-ms", "2"]


# --- synthetic runs (the summary builder and the log header are the real ones) --------------------------------------

def _histograms(rng: random.Random, n: int, scale_us: int) -> list[HdrHistogram]:
    out = []
    for _ in range(n):
        hist = new_histogram()
        for _ in range(rng.randint(20, 60)):
            hist.record_value(max(1, int(rng.expovariate(1 / scale_us))))
        out.append(hist)
    return out


def synthetic_run(out: Path, *, intervals: int = 6, queue: str = "synthetic-q", stages: tuple[str, ...] = STAGES,
                  extra: dict[str, Any] | None = None, seed: int = 1) -> dict[str, Any]:
    """A run directory as ``qdeck load run --out`` writes it, from made-up histograms cycled over ``intervals``
    one-second intervals (the logs of ``stages`` only)."""
    rng = random.Random(seed)
    variants = {stage: _histograms(rng, min(12, intervals), 200 if stage == "schedule_lag" else 3000)
                for stage in STAGES}
    totals = {stage: new_histogram() for stage in STAGES}
    for stage in STAGES:  # the summary's histograms: each variant once (no test here adds the logs up)
        for hist in variants[stage][:intervals]:
            totals[stage].add(hist)
    sent = int(totals["schedule_lag"].get_total_count())
    facts = {"run_id": f"synthetic-{seed}", "queue": queue, "workload": "default",
             "schedule": {"kind": "constant", "description": "constant 50/s", "params": {"rate": 50}},
             "payload": {"size": 64}, "warmup_s": 0.0, "timeout_s": 10.0, "coalesce_s": 0.001, "closed_loop": False}
    record = RunRecord(facts=facts, broker="redis://127.0.0.1:6379/0", broker_kind="redis",
                       started_epoch_s=1_700_000_000.0, measured_s=float(intervals),
                       counts={"intended": sent, "sent": sent, "replied": sent}, errors_by_kind={}, stages=totals,
                       batch_sizes={1: sent // 2, 4: sent - sent // 2}, devices={"cpu": sent})
    summary = build_summary(record)
    summary.update(extra or {})
    out.mkdir(parents=True, exist_ok=True)
    write_summary(summary, out / "summary.json")
    for stage in stages:
        payloads = [(h.get_max_value() / 1000, h.encode().decode()) for h in variants[stage]]
        _writer, fh = open_log(log_path(out, stage), stage, 1_700_000_000.0)
        with fh:
            for i in range(intervals):
                top, payload = payloads[i % len(payloads)]
                fh.write(f"{i:.6f},1.000000,{top:.6f},{payload}\n")
    return summary


def build(run_dir: Path, compare: Path | None = None) -> str:
    out = run_dir.parent / f"{run_dir.name}.html"
    return write_report(run_dir, out, compare).read_text(encoding="ascii")


def page_data(doc: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="qdeck-data">(.*?)</script>', doc, re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


# --- the figures are the histograms' -------------------------------------------------------------------------------

def test_spectrum_and_timeline_figures_are_the_histograms_own(tmp_path: Path) -> None:
    summary = synthetic_run(tmp_path / "run", intervals=7)
    hist = HdrHistogram.decode(summary["stages"]["service"]["histogram"].encode())
    xs, ys = spectrum(hist)
    n = hist.get_total_count()
    assert xs[0] == 1 and xs[-1] == n and ys[-1] == hist.get_max_value() / 1000
    for x, y in zip(xs[:-1], ys[:-1], strict=True):
        assert y == hist.get_value_at_percentile(100 * (1 - 1 / x)) / 1000
    # Every interval as it was logged, then three at a time added together: exact either way.
    text = log_path(tmp_path / "run", "service").read_text()
    logged = read_intervals(text)
    one = read_timeline(log_path(tmp_path / "run", "service"))
    assert one is not None and one.merged == 1 and one.count == [h.get_total_count() for _, _, h in logged]
    assert one.p99_ms == [h.get_value_at_percentile(99) / 1000 for _, _, h in logged]
    three = read_timeline(log_path(tmp_path / "run", "service"), max_points=3)
    assert three is not None and three.merged == 3 and three.end_s == [3.0, 6.0, 7.0]
    first = new_histogram()
    for _, _, h in logged[:3]:
        first.add(h)
    assert (three.p50_ms[0], three.p99_ms[0], three.max_ms[0]) == (
        first.get_value_at_percentile(50) / 1000, first.get_value_at_percentile(99) / 1000,
        first.get_max_value() / 1000)


def test_a_truncated_log_line_is_left_out_and_said(tmp_path: Path) -> None:
    synthetic_run(tmp_path / "run", intervals=4)
    path = log_path(tmp_path / "run", "end_to_end")
    path.write_text(path.read_text() + "4.000000,1.000000,3.0,HISTFAAAA")  # a run killed mid-line
    doc = build(tmp_path / "run")
    assert "1 lines of the end_to_end interval log could not be read" in doc


# --- hostile input ---------------------------------------------------------------------------------------------------

def hostile_run(out: Path) -> None:
    synthetic_run(out, queue=HOSTILE, extra={
        "notes": [HOSTILE, "fine"], "aborted": HOSTILE, "errors_by_kind": {HOSTILE: 3},
        "gaps": [{"from_s": 1.0, "to_s": 2.0, "unsent": 5, "reason": HOSTILE}],
        "slo": [{"slo": HOSTILE, "ok": False, "actual": HOSTILE, "detail": HOSTILE}],
        "workers": {HOSTILE: 1}, "run_id": HOSTILE,
        "broker_samples": {"queue": HOSTILE, "interval_s": 1.0, "error": HOSTILE,
                           "samples": [{"t_s": t, "depth": t, "in_flight": 1, "consumers": 2, "lag": None}
                                       for t in range(5)]},
        "littles_law": {"mean_depth": 2.0, "arrival_rate": 50.0, "mean_queue_wait_ms": 40.0,
                        "predicted_depth": 2.0, "ratio": 1.0},
        # a streamed run's texts: the objectives, the lengths asked for, the dataset's name and format
        "llm": {"ttft": {"count": 1, "p50_ms": 1.0}, "objectives": [HOSTILE], "input_lengths": HOSTILE,
                "output_lengths": HOSTILE, "max_tokens": HOSTILE,
                "dataset": {"file": HOSTILE, "format": HOSTILE, "rows_used": HOSTILE, "sha256": HOSTILE},
                "attainment": {"value": 50.0, "met": HOSTILE, "judged": 2}, "goodput": {"value": HOSTILE}}})


def test_hostile_texts_come_out_inert(tmp_path: Path) -> None:
    hostile_run(tmp_path / "run")
    doc = build(tmp_path / "run")
    assert doc.isascii()  # so no raw U+2028/2029, bidi override, C1 control
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", doc)  # ESC, BEL: none raw
    assert doc.lower().count("<script") == 3  # the data, uPlot, the page's script: nothing injected
    assert "<script>window.pwned" not in doc and "&lt;/script&gt;&lt;script&gt;window.pwned=1" in doc
    assert "\\x1b[31mred" in doc  # the sanitiser's visible escape
    assert 'id="llm-panel"' in doc  # the LLM panel's texts were on the page, and inert too
    script = doc.split('id="qdeck-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in script and ">" not in script and "&" not in script  # the JSON cannot end its script
    page_data(doc)  # and still parses
    title = re.search("<title>(.*?)</title>", doc, re.S)
    assert title is not None and "&lt;/script&gt;" in title.group(1)


# --- size -------------------------------------------------------------------------------------------------------------

def test_a_long_run_stays_under_the_size_limit(tmp_path: Path) -> None:
    """An hour of one-second intervals, thousands of broker samples, long notes, thousands of batch sizes and error
    kinds: the page holds at most MAX_POINTS points a series and stays under 5 MiB."""
    intervals = 3600
    samples = [{"t_s": t * 0.5, "depth": t % 97, "in_flight": 3, "consumers": 4, "lag": t % 13}
               for t in range(2 * intervals)]
    synthetic_run(tmp_path / "run", intervals=intervals, stages=("end_to_end", "schedule_lag", "queue_wait"), extra={
        "notes": ["x" * 100_000] * 1000, "broker_samples": {"queue": "q", "interval_s": 0.5, "samples": samples,
                                                          "error": None},
        "batch_sizes": {str(k): 1 for k in range(1, 5000)}, "errors_by_kind": {f"kind{k}": k for k in range(5000)}})
    doc = build(tmp_path / "run")
    assert len(doc.encode()) <= MAX_BYTES
    for chart in page_data(doc)["charts"]:
        assert len(chart["data"][0]) <= MAX_POINTS + 1, chart["id"]
    assert "Each point adds 4 consecutive intervals together" in doc


# --- bad input: one line, exit 2 ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic run directory, made once: tests copy it before they change it."""
    out = tmp_path_factory.mktemp("small") / "run"
    synthetic_run(out, intervals=2)
    return out


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, small_run: Path) -> None:
    """Through the real command: each bad input is one line on stderr, exit 2, no traceback, no file written."""
    good = small_run

    def run_dir(name: str, summary: bytes | None) -> str:
        d = tmp_path / name
        d.mkdir()
        if summary is not None:
            (d / "summary.json").write_bytes(summary)
        return str(d)

    cases = {
        "missing dir": ([str(tmp_path / "nope")], "no run directory"),
        "not a run dir": ([run_dir("empty", None)], "no summary.json"),
        "invalid summary": ([run_dir("badjson", b"{not json")], "is not JSON"),
        "unreadable summary": ([run_dir("binary", b"\xff\xfe\x00")], "not UTF-8"),
        "unknown schema": ([run_dir("future", b'{"schema_version": 99}')], "schema_version 99 is not supported"),
        "-o missing dir": ([str(good), "-o", str(tmp_path / "missing" / "r.html")], "no directory"),
    }
    with ThreadPoolExecutor(3) as pool:
        runs = dict(zip(cases, pool.map(lambda case: qdeck("load", "report", *case[0]), cases.values()),
                        strict=True))
    for name, run in runs.items():
        lines = run.err.splitlines()
        assert run.code == 2 and len(lines) == 1 and lines[0].startswith("qdeck: "), (name, run.all)
        assert cases[name][1] in lines[0], (name, lines)
        assert run.out == "" and "Traceback" not in run.all, name
    assert not (tmp_path / "missing").exists() and not list(tmp_path.rglob("*.html"))


@pytest.mark.parametrize(("case", "expected"), [
    ("a file", "is not a directory"), ("too deep", "nested too deeply"), ("not a summary", "no schema_version"),
    ("-o a directory", "is a directory"), ("bad --compare", "no run directory"),
    ("corrupt histogram", "corrupt histogram")])
def test_more_bad_input_is_one_report_error(tmp_path: Path, small_run: Path, case: str, expected: str) -> None:
    good = shutil.copytree(small_run, tmp_path / "good")
    run, out, compare = good, tmp_path / "r.html", None
    if case == "a file":
        run = tmp_path / "a-file"
        run.write_text("x")
    elif case in ("too deep", "not a summary"):
        run = tmp_path / "bad"
        run.mkdir()
        (run / "summary.json").write_text("[" * 200_000 if case == "too deep" else '{"a": 1}')
    elif case == "-o a directory":
        out = tmp_path
    elif case == "bad --compare":
        compare = tmp_path / "nope"
    else:
        summary = json.loads((good / "summary.json").read_text())
        summary["stages"]["service"]["histogram"] = "HISTFAAAnot-a-histogram"
        write_summary(summary, good / "summary.json")
    with pytest.raises(ReportError) as err:
        write_report(run, out, compare)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.html")) and not list(tmp_path.rglob(".*.tmp"))


# --- packaging --------------------------------------------------------------------------------------------------------

def test_assets_are_package_data_and_uplot_is_the_pinned_version() -> None:
    assets = ROOT / "loadgen" / "results" / "report_assets"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = data["loadgen.results"]
    names = sorted(p.name for p in assets.iterdir())
    assert {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE", "report.js", "report.css", "report.html"} <= set(
        names)
    assert all(any(fnmatch(f"report_assets/{n}", g) for g in globs) for n in names)
    header = f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION})"
    assert (assets / "uPlot.iife.min.js").read_text().startswith(header)


def test_broker_panel_says_when_the_run_has_no_samples(tmp_path: Path) -> None:
    synthetic_run(tmp_path / "old")
    doc = build(tmp_path / "old")
    assert 'id="empty-broker"' in doc and "no broker samples in this run" in doc
    assert "broker" not in [c["id"] for c in page_data(doc)["charts"]]


def test_batch_chart_shares_and_service_by_batch(tmp_path: Path) -> None:
    synthetic_run(tmp_path / "run", extra={"batch_sizes": {"1": 30, "4": 10},
                                           "service_by_batch": {"1": {"n": 30, "mean_ms": 2.5},
                                                                "4": {"n": 10, "mean_ms": 3.25}}})
    charts = {c["id"]: c for c in page_data(build(tmp_path / "run"))["charts"]}
    batches = charts["batches"]
    assert batches["x"]["cats"] == ["1", "4"] and [s["label"] for s in batches["series"]] == [
        "share of replies", "mean service (ms)"]
    assert batches["data"] == [[0, 1], [75.0, 25.0], [2.5, 3.25]]


# --- in a real browser, over real runs -----------------------------------------------------------------------------

@dataclass
class TwoRuns:
    queue: str
    base: Path
    new: Path


@pytest.fixture(scope="module")
def two_runs(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoRuns]:
    """Two real 3 s runs at 200 req/s through the shared Redis to one real worker."""
    tmp = tmp_path_factory.mktemp("report-runs")
    queue = unique("qdeck-test-report")
    try:
        with worker(redis_url, queue, *WORKER, tmp_path=tmp):
            for name in ("base", "new"):
                run = qdeck("load", "run", "-b", redis_url, "-q", queue, "--rate", "200", "--duration", "3s",
                            "--out", str(tmp / name), "--slo", "p99<5s", "--quiet", timeout=120)
                assert run.code == 0, run.all
        yield TwoRuns(queue, tmp / "base", tmp / "new")
    finally:
        with redis.Redis.from_url(redis_url) as client:
            client.delete(queue, f"{queue}:dlq")


def report_cli(*args: str) -> Run:
    run = qdeck("load", "report", *args)
    assert run.code == 0 and run.err == "", run.all
    return run


def drawn(opened: Opened) -> list[dict[str, Any]]:
    """Each chart container: its id and its canvas's size."""
    found: list[dict[str, Any]] = opened.page.evaluate(
        "Array.from(document.querySelectorAll('.qchart')).map(e => { const c = e.querySelector('canvas');"
        " return {id: e.id, w: c ? c.width : 0, h: c ? c.height : 0}; })")
    return found


def assert_clean(opened: Opened) -> None:
    assert opened.console_errors == [] and opened.page_errors == [], (opened.console_errors, opened.page_errors)
    assert opened.requests == []  # nothing fetched: the page is whole
    state = opened.page.evaluate("window.qdeckReport")
    charts = drawn(opened)
    assert state["failed"] == [] and state["drawn"] == state["charts"] == len(charts) >= 9, state
    assert all(c["w"] > 0 and c["h"] > 0 for c in charts), charts


@pytest.mark.browser
@pytest.mark.slow
def test_real_run_report_draws_every_chart(two_runs: TwoRuns, browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    run = report_cli(str(two_runs.new), "-o", str(out))
    assert run.out.strip() == str(out)
    opened = browser.open(out)
    assert_clean(opened)
    assert two_runs.queue in opened.page.title()
    ids = {c["id"] for c in drawn(opened)}
    assert {"chart-spectrum", "chart-time-end_to_end", "chart-rates", "chart-lag", "chart-batches"} <= ids
    broker = opened.page.inner_text("#broker-panel")
    assert "chart-broker" in ids or "no broker samples in this run" in broker
    assert opened.page.inner_text("#slo").count("PASS") == 1
    shot = tmp_path / "report.png"
    opened.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("QDECK_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "report.png")


@pytest.mark.browser
@pytest.mark.slow
def test_compare_report_overlays_both_runs(two_runs: TwoRuns, browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "compare.html"
    report_cli(str(two_runs.new), "--compare", str(two_runs.base), "-o", str(out))
    opened = browser.open(out)
    assert_clean(opened)
    legend = opened.page.evaluate(
        "Array.from(document.querySelectorAll('#chart-spectrum .u-legend .u-label')).map(e => e.textContent)")
    assert {"end_to_end", "base end_to_end", "service", "base service"} <= set(legend), legend
    over_time = opened.page.evaluate(
        "Array.from(document.querySelectorAll('#chart-time-end_to_end .u-legend .u-label')).map(e => e.textContent)")
    assert {"p99", "base p99"} <= set(over_time)
    rows = opened.page.locator("#deltas tbody tr")
    assert rows.count() >= 10
    assert "end_to_end p99 (ms)" in opened.page.inner_text("#deltas")


@pytest.mark.browser
def test_hostile_report_runs_nothing_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    hostile_run(tmp_path / "run")
    out = tmp_path / "hostile.html"
    write_report(tmp_path / "run", out)
    page = browser.open(out)
    assert_clean(page)
    assert page.dialogs == [] and page.page.evaluate("window.pwned") is None
    assert "</script><script>window.pwned=1" in page.page.title()  # shown as text, inert
    assert "\\x1b[31mred" in page.page.inner_text("#notes")



@pytest.mark.browser
@pytest.mark.slow
def test_load_run_html_writes_the_report_without_out(redis_url: str, browser: Browser, tmp_path: Path) -> None:
    """`qdeck load run --html FILE`: the report of the run just made, also with no --out (the run's files then live
    in a temporary directory, gone afterwards); a --html into a missing directory is refused before the run."""
    bad = qdeck("load", "run", "-b", redis_url, "-q", "never-run", "--rate", "10", "--duration", "1s",
                "--html", str(tmp_path / "missing" / "r.html"))
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1 and "--html: no directory" in bad.err
    queue = unique("qdeck-test-report-html")
    out = tmp_path / "run.html"
    try:
        with worker(redis_url, queue, *WORKER, tmp_path=tmp_path):
            run = qdeck("load", "run", "-b", redis_url, "-q", queue, "--rate", "100", "--duration", "2s",
                        "--html", str(out), "--quiet", timeout=120)
        assert run.code == 0 and f"report in {out}" in run.err, run.all
    finally:
        with redis.Redis.from_url(redis_url) as client:
            client.delete(queue, f"{queue}:dlq")
    opened = browser.open(out)
    assert_clean(opened)
    assert queue in opened.page.title()


@pytest.mark.browser
@pytest.mark.slow
def test_a_streamed_run_has_its_llm_panel(redis_url: str, browser: Browser, tmp_path: Path) -> None:
    """A run with streamed replies (a real llm-synthetic worker): the page's LLM panel has the summary's TTFT/TPOT/
    ITL/e2e figures, tokens/s, goodput and attainment with the objective, the lengths, and TTFT and ITL over time
    drawn from their interval logs; a plain run's page has no such panel."""
    queue = unique("qdeck-test-report-llm")
    out, page_path = tmp_path / "run", tmp_path / "llm.html"
    try:
        with worker(redis_url, queue, "--model", "llm-synthetic:step_ms=2,per_seq_ms=0,prefill_ms=0,chunk=1",
                    tmp_path=tmp_path):
            run = qdeck("load", "run", "-b", redis_url, "-q", queue, "--rate", "30", "--duration", "3s",
                        "--input-tokens", "64", "--output-tokens", "uniform:4,8", "--objective", "ttft<2s",
                        "--out", str(out), "--html", str(page_path), "--quiet", timeout=120)
        assert run.code == 0, run.all
    finally:
        with redis.Redis.from_url(redis_url) as client:
            client.delete(queue, f"{queue}:dlq")
    llm = json.loads((out / "summary.json").read_text())["llm"]
    opened = browser.open(page_path)
    assert_clean(opened)
    ids = {c["id"] for c in drawn(opened)}
    assert {"chart-llm-ttft", "chart-llm-itl"} <= ids
    panel = opened.page.inner_text("#llm-panel")
    assert f"{llm['ttft']['p99_ms']:,.3f}" in panel and f"{llm['itl']['p50_ms']:,.3f}" in panel
    assert f"{llm['output_tokens_per_s']['value']:,.2f}/s" in panel and "ttft<2s" in panel
    assert f"({llm['attainment']['met']:,} of {llm['attainment']['judged']:,})" in panel
    assert "input fixed:64, output uniform:4,8" in panel
    plain = tmp_path / "plain.html"
    report_cli(str(plain_run_dir(tmp_path)), "-o", str(plain))
    assert 'id="llm-panel"' not in plain.read_text()


def plain_run_dir(tmp_path: Path) -> Path:
    """A plain run's directory, made by the memory broker (no worker, no streamed replies)."""
    out = tmp_path / "plain"
    run = qdeck("load", "run", "-b", "memory://plain-report", "-q", "q", "--rate", "50", "--duration", "1s", "--out",
                str(out), "--quiet", timeout=60)
    assert run.code == 0, run.all
    return out
