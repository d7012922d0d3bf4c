"""``qdeck load report SEARCH_DIR``: the page of a ``qdeck load search --out DIR`` — latency against rate, achieved
rate, backlog slopes with their CIs, every probe — over a search.json written by the search's own writer from made-up
probes, and over one real search through the CLI; in a real browser, with hostile and bad input."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from console.cmd_load_report import write_report
from loadgen.errors import ReportError
from loadgen.results.html_report import MAX_BYTES
from loadgen.results.slo import judge_all, parse_slo
from loadgen.results.stages import STAGES, new_histogram
from loadgen.results.summary import RunRecord, build_summary
from loadgen.run.schedules import Constant
from loadgen.run.search import ProbeOutcome, RateSearch, SearchOutcome, SearchSpec, Trend, write_document
from loadgen.run.spec import RunSpec
from tests.browser import Browser, Opened, browser_fixture  # noqa: F401 (the browser fixture)
from tests.cli import qdeck
from tests.loadgen.test_html_report import HOSTILE, drawn, page_data, synthetic_run
from tests.workers import unique, worker

CAPACITY = 44.0  # the made-up worker's rate: probes at or under it pass
SLOS = ("p99<250ms", "errors<1%", "queue_wait.p99<100ms")
CHARTS = {"search-latency", "search-queue-wait", "search-achieved", "search-backlog", "search-wait-slope"}


# --- a search.json from the search's own writer ----------------------------------------------------------------------

def _summary(rng: random.Random, rate: float, queue: str, *, behind: bool = False) -> dict[str, Any]:
    """A probe's summary (the real builder) from made-up histograms: 20 ms of service, and an exponential queue wait
    whose mean grows gently up to the capacity and steeply past it."""
    rho = rate / CAPACITY
    wait_ms = 2 + 5 * rho if rho <= 1 else 60 + 2000 * (rho - 1)
    n = int(rate * 3)
    stages = {stage: new_histogram() for stage in STAGES}
    for _ in range(n):
        wait = rng.expovariate(1 / wait_ms) * 1000
        for stage, us in (("queue_wait", wait), ("service", 20_000), ("end_to_end", wait + 21_000),
                          ("end_to_end_uncorrected", wait + 21_000), ("schedule_lag", 300 + (40_000 if behind else 0)),
                          ("batch_wait", 10), ("reply_transit", 400)):
            stages[stage].record_value(max(1, int(us)))
    facts = {"run_id": f"probe-{rate:g}-{rng.random():.6f}", "queue": queue, "workload": "default",
             "schedule": {"kind": "constant", "description": f"constant {rate:g}/s", "params": {"rate": rate}},
             "payload": {"size": 64}, "warmup_s": 0.5, "timeout_s": 5.0, "coalesce_s": 0.001, "closed_loop": False}
    record = RunRecord(facts=facts, broker="redis://127.0.0.1:6379/0", broker_kind="redis",
                       started_epoch_s=1_700_000_000.0, measured_s=3.0, planned_s=3.0,
                       counts={"intended": n, "sent": n, "replied": n}, errors_by_kind={}, stages=stages,
                       batch_sizes={1: n}, devices={"cpu": n}, behind=behind)
    return build_summary(record)


def synthetic_search(out: Path, *, queue: str = "search-q", limit: float = CAPACITY, start: float = 10.0,
                     ceiling: float = 200_000.0, floor: float | None = None) -> dict[str, Any]:
    """``out/search.json`` as ``qdeck load search --out`` writes it (``write_document`` on ``SearchOutcome``s), for a
    made-up worker of ``limit``/s, with the rates ``RateSearch`` picks; the first probe at 42.5/s fails on the
    generator alone and is run again, as the search does; a probe at 80/s stopped with only 2 intervals (no CI)."""
    rng = random.Random(3)
    slos = tuple(parse_slo(s) for s in SLOS)
    spec = SearchSpec(run=RunSpec(queue=queue, schedule=Constant(start), warmup_s=0.5, timeout_s=5.0), slos=slos,
                      start=start, ceiling=ceiling, floor=floor, precision=0.05, probe_s=3.0)
    outcome = SearchOutcome(spec=spec, broker="redis://127.0.0.1:6379/0", broker_kind="redis",
                            started_epoch_s=1_700_000_000.0)
    rates = RateSearch(spec.start, spec.ceiling, spec.precision, spec.lowest)
    while (rate := rates.next_rate()) is not None:
        first_at_rate = not any(p.rate == rate for p in outcome.probes)
        behind = rate == 42.5 and first_at_rate
        summary = _summary(rng, rate, queue, behind=behind)
        verdicts = judge_all(summary, slos)
        over = rate > limit
        growth = (rate - limit) * 0.8 if over else 0.02 * (rng.random() - 0.5)
        backlog = Trend(growth, math.inf, 2) if rate == 80 else Trend(growth, 0.3 + 0.05 * rate / 10, 18)
        wait = Trend(growth * 20, 4.0, 18)
        why = [f"{v.slo.text} failed: {v.actual}" for v in verdicts if not v.ok]
        if behind:
            why.append("the generator fell behind (schedule-lag p99 40.3 ms, 0 unsent)")
        if over:
            why.append(f"backlog grew {growth:+.2f}/s: stopped early")
        probe = ProbeOutcome(index=len(outcome.probes) + 1, rate=rate, ok=not why, why=why, verdicts=verdicts,
                             backlog=backlog, backlog_grew=over, queue_wait=wait, wait_grew=over,
                             stopped_early="backlog grew: probe stopped early" if over else None, summary=summary,
                             series=[{"t_s": 0.15 * i, "in_flight": 1, "queue_wait_ms": 2.0} for i in range(1, 4)],
                             directory=f"probe-{len(outcome.probes) + 1:02d}-{rate:g}")
        outcome.probes.append(probe)
        if probe.failures == ["generator"] and first_at_rate:
            continue
        rates.record(rate, probe.ok)
        outcome.max_rate, outcome.failed_rate = rates.passed, rates.failed
    write_document(outcome, out)
    doc: dict[str, Any] = json.loads((out / "search.json").read_text())
    return doc


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("search") / "search"
    return out, synthetic_search(out)


def build(directory: Path, name: str = "report.html") -> str:
    return write_report(directory, directory.parent / name).read_text(encoding="ascii")


def charts_of(doc: str) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in page_data(doc)["charts"]}


def column(chart: dict[str, Any], label: str) -> dict[float, Any]:
    """A series of a chart as {x: y}, nulls left out."""
    k = [s["label"] for s in chart["series"]].index(label)
    return {x: y for x, y in zip(chart["data"][0], chart["data"][k + 1], strict=True) if y is not None}


# --- the figures are search.json's --------------------------------------------------------------------------------

def test_the_page_draws_search_json_figures(search_dir: tuple[Path, dict[str, Any]]) -> None:
    directory, doc = search_dir
    assert doc["max_rate"] == 43.75 and doc["failed_rate"] == 45 and doc["limited_by"] == ["slo", "backlog"]
    page = build(directory)
    charts = charts_of(page)
    assert set(charts) == CHARTS
    probes = doc["probes"]
    standing = {p["rate"]: p for p in probes}  # the later probe at a rate: its verdict stands
    latency = charts["search-latency"]
    assert [s["label"] for s in latency["series"]] == ["p50", "p99", "passing probes", "failing probes",
                                                       "SLO p99<250ms"]
    assert latency["y"]["log"] is True and latency["data"][0] == sorted(standing)
    assert column(latency, "p99") == {r: p["end_to_end"]["p99_ms"] for r, p in standing.items()}
    assert column(latency, "p50") == {r: p["end_to_end"]["p50_ms"] for r, p in standing.items()}
    assert column(latency, "SLO p99<250ms") == dict.fromkeys(standing, 250.0)
    failing = {p["rate"]: p["end_to_end"]["p99_ms"] for p in probes if not p["ok"]}
    assert column(latency, "failing probes") == failing and 42.5 in failing  # the generator's failed first try
    assert [(m["x"], m["label"]) for m in latency["marks"]] == [(43.75, "\u03bb* 43.75/s"), (45, "failed 45/s")]
    queue_wait = charts["search-queue-wait"]
    assert column(queue_wait, "SLO queue_wait.p99<100ms") == dict.fromkeys(standing, 100.0)
    assert column(charts["search-achieved"], "achieved") == {r: p["achieved"] for r, p in standing.items()}
    backlog = charts["search-backlog"]
    xs = backlog["data"][0]
    for whisker in backlog["whiskers"]:
        label = backlog["series"][whisker["series"] - 1]["label"]
        chosen = {p["rate"]: p["backlog"]["ci95"] for p in probes if p["ok"] is (label == "passing probes")}
        for x, lo, hi in zip(xs, whisker["low"], whisker["high"], strict=True):
            assert [lo, hi] == (chosen.get(x) or [None, None]), (label, x)
    assert backlog["y"]["min"] < min(p["backlog"]["ci95"][0] for p in probes if p["backlog"]["ci95"])
    assert column(charts["search-wait-slope"], "growth threshold 20 ms/s") == dict.fromkeys(standing, 20.0)
    # The verdict, the table, the way to a probe's own report; nothing that points outside the page.
    assert re.search(r'id="lambda">&#955;\* = 43\.75/s<', page)
    table = re.search('<section id="probes">(.*?)</section>', page, re.S)
    assert table is not None and table.group(1).count("<tr>") == len(probes) + 1  # and the head
    assert [m.group(1) for m in re.finditer(r"<td>(probe-\d\d-[0-9.]+)</td>", table.group(1))] == [
        p["dir"] for p in sorted(probes, key=lambda p: p["rate"])]
    assert f"qdeck load report {directory}/probe-NN-RATE" in page
    html = page.split("<body>", 1)[1].split('<script type="application/json"', 1)[0]
    assert not re.search(r"\b(href|src)=", html) and "http://" not in html and "https://" not in html


@pytest.mark.browser
def test_a_search_where_nothing_held_and_a_single_probe(tmp_path: Path, browser: Browser) -> None:
    """One probe at the floor, which failed: no λ*, one x value, a slope with no CI; the page says so and draws."""
    doc = synthetic_search(tmp_path / "s", limit=1.0, start=20.0, ceiling=20.0, floor=20.0)
    assert doc["max_rate"] is None and len(doc["probes"]) == 1
    out = write_report(tmp_path / "s", tmp_path / "one.html")
    page = out.read_text(encoding="ascii")
    assert "&#955;*: none" in page and "no rate held: not even the lowest probe, 20.00/s, passed" in page
    opened = browser.open(out)
    assert_clean(opened)
    assert opened.page.get_attribute("#chart-search-latency", "data-marks") == "1"  # the failing rate only


def test_a_directory_with_a_summary_is_a_run_whatever_else_it_holds(tmp_path: Path,
                                                                   search_dir: tuple[Path, dict[str, Any]]) -> None:
    synthetic_run(tmp_path / "both", intervals=2)
    (tmp_path / "both" / "search.json").write_bytes((search_dir[0] / "search.json").read_bytes())
    page = build(tmp_path / "both")
    assert "<title>qdeck load report: synthetic-q</title>" in page and "search-latency" not in page


# --- in a browser ---------------------------------------------------------------------------------------------------

def assert_clean(opened: Opened) -> None:
    assert opened.console_errors == [] and opened.page_errors == [], (opened.console_errors, opened.page_errors)
    assert opened.requests == [] and opened.dialogs == []
    state = opened.page.evaluate("window.qdeckReport")
    charts = drawn(opened)
    assert state["failed"] == [] and state["drawn"] == state["charts"] == len(charts) == len(CHARTS), state
    assert {c["id"] for c in charts} == {f"chart-{c}" for c in CHARTS}
    assert all(c["w"] > 0 and c["h"] > 0 for c in charts), charts


@pytest.mark.browser
def test_synthetic_search_report_in_the_browser(search_dir: tuple[Path, dict[str, Any]], browser: Browser) -> None:
    directory, _doc = search_dir
    out = write_report(directory, directory.parent / "browser.html")
    opened = browser.open(out)
    assert_clean(opened)
    assert opened.page.title() == "qdeck search report: search-q"
    assert opened.page.inner_text("#lambda") == "\u03bb* = 43.75/s"
    for cid in ("search-latency", "search-backlog", "search-achieved"):
        assert opened.page.get_attribute(f"#chart-{cid}", "data-marks") == "2", cid
    legend = opened.page.evaluate(
        "Array.from(document.querySelectorAll('#chart-search-latency .u-legend .u-label')).map(e => e.textContent)")
    assert legend[1:] == ["p50", "p99", "passing probes", "failing probes", "SLO p99<250ms"], legend


@pytest.mark.browser
def test_hostile_search_texts_are_inert(tmp_path: Path, browser: Browser) -> None:
    directory = tmp_path / "s"
    doc = synthetic_search(directory, queue=HOSTILE)
    doc.update(error=HOSTILE, broker=HOSTILE, slo=[*doc["slo"], HOSTILE], limited_by=[HOSTILE])
    doc["probes"][0].update(why=[HOSTILE], dir=HOSTILE, stopped_early=HOSTILE, index=HOSTILE)
    (directory / "search.json").write_text(json.dumps(doc))
    out = write_report(directory, tmp_path / "hostile.html")
    page = out.read_text(encoding="ascii")
    assert page.lower().count("<script") == 3 and "<script>window.pwned" not in page
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", page)
    script = page.split('id="qdeck-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in script and ">" not in script and "&" not in script
    opened = browser.open(out)
    assert_clean(opened)
    assert opened.page.evaluate("window.pwned") is None
    assert "</script><script>window.pwned=1" in opened.page.title()
    assert "\\x1b[31mred" in opened.page.inner_text("#search-error")
    assert "\\x1b[31mred" in opened.page.inner_text("#probes")


def test_a_search_json_with_thousands_of_long_probes_stays_under_the_limit(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    doc = synthetic_search(directory)
    probe = {k: v for k, v in doc["probes"][0].items() if k not in ("summary", "series")}
    doc["probes"] = [{**probe, "rate": 1 + i, "why": ["x" * 4000] * 5} for i in range(1500)]
    (directory / "search.json").write_text(json.dumps(doc))
    page = build(directory)
    assert len(page) <= MAX_BYTES and "... and 1,300 more probes" in page
    assert all(len(c["data"][0]) <= 1000 for c in page_data(page)["charts"])


# --- bad input: one line, exit 2 ----------------------------------------------------------------------------------

def test_bad_search_input_is_one_line_and_exit_2(tmp_path: Path, search_dir: tuple[Path, dict[str, Any]]) -> None:
    good, _doc = search_dir
    run = tmp_path / "run"
    synthetic_run(run, intervals=2)

    def search(name: str, text: bytes | None) -> str:
        d = tmp_path / name
        d.mkdir()
        if text is not None:
            (d / "search.json").write_bytes(text)
        return str(d)

    cases = {
        "neither file": ([search("empty", None)], "no summary.json) nor a search directory (no search.json)"),
        "not JSON": ([search("badjson", b"{not json")], "is not JSON"),
        "not UTF-8": ([search("binary", b"\xff\xfe\x00")], "not UTF-8"),
        "no schema": ([search("noschema", b'{"probes": []}')], "is not a qdeck search.json (no schema)"),
        "unknown schema": ([search("future", b'{"schema": "qdeck.search/9"}')],
                           "search schema 'qdeck.search/9' is not supported"),
        "no probes": ([search("noprobes", b'{"schema": "qdeck.search/1", "probes": 3}')], "no 'probes' list"),
        "too deep": ([search("deep", b'{"schema": ' + b"[" * 200_000)], "nested too deeply"),
        "compare a search": ([str(good), "--compare", str(run), "-o", str(tmp_path / "x.html")],
                             "is a search directory and a search report stands alone"),
        "compare with a search": ([str(run), "--compare", str(good), "-o", str(tmp_path / "y.html")],
                                  "is a search directory, not a run"),
    }
    with ThreadPoolExecutor(4) as pool:
        runs = dict(zip(cases, pool.map(lambda case: qdeck("load", "report", *case[0]), cases.values()),
                        strict=True))
    for name, done in runs.items():
        lines = done.err.splitlines()
        assert done.code == 2 and len(lines) == 1 and lines[0].startswith("qdeck: "), (name, done.all)
        assert cases[name][1] in lines[0], (name, lines)
        assert done.out == "" and "Traceback" not in done.all, name
    assert not list(tmp_path.rglob("*.html"))
    with pytest.raises(ReportError, match="search directory"):  # the library call refuses it too
        write_report(run, tmp_path / "z.html", good)


# --- a real search through the CLI --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_search(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A quick real search on the shared Redis against one synthetic worker (20 ms a request, one at a time)."""
    tmp = tmp_path_factory.mktemp("real-search")
    queue = unique("qdeck-test-search-report")
    out = tmp / "search"
    try:
        with worker(redis_url, queue, "--model", "synthetic:base_ms=20", "--max-batch", "1", "--max-wait-ms", "0",
                    tmp_path=tmp):
            done = qdeck("load", "search", "-b", redis_url, "-q", queue, "--slo", "p99<500ms", "--start", "20",
                         "--probe", "2s", "--warmup", "0.5s", "--timeout", "3s", "--precision", "20%",
                         "--out", str(out), "--quiet", timeout=120)
        assert done.code in (0, 99), done.all
        yield out, queue
    finally:
        with redis.Redis.from_url(redis_url) as client:
            client.delete(queue, f"{queue}:dlq")
            if (out / "search.json").exists():
                for p in json.loads((out / "search.json").read_text())["probes"]:
                    client.delete(f"qdeck:reply:{p['run_id']}")


@pytest.mark.browser
@pytest.mark.redis
@pytest.mark.slow
def test_real_search_report_draws_latency_against_rate(real_search: tuple[Path, str], browser: Browser) -> None:
    out, queue = real_search
    doc = json.loads((out / "search.json").read_text())
    done = qdeck("load", "report", str(out))
    assert done.code == 0 and done.err == "" and done.out.strip() == str(out / "report.html"), done.all
    opened = browser.open(out / "report.html")
    assert_clean(opened)
    assert queue in opened.page.title()
    lam = doc["max_rate"]
    assert opened.page.inner_text("#lambda") == ("\u03bb*: none" if lam is None else f"\u03bb* = {lam:,.2f}/s")
    assert opened.page.locator("#probes tbody tr").count() == len(doc["probes"]) >= 2
    # What the page says: a probe's own report, from its run directory.
    probe = out / doc["probes"][0]["dir"]
    own = qdeck("load", "report", str(probe))
    assert own.code == 0 and (probe / "report.html").exists(), own.all
