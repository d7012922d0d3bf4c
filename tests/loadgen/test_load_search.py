"""Issue 19 item 3: ``qdeck load search`` finds the highest open-loop rate λ* at which every SLO holds.

The backlog rule (a slope whose 95 % CI lies above 0, and material) is checked on fixed series and its t quantile
against the distribution itself; the rate search (double, halve, bisect) on a fake threshold. End to end: the
in-process memory broker (one FIFO server, 20 ms each: 50/s) and a real synthetic worker on Redis (50 ms a request,
one at a time: 20/s) whose capacity follows from their parameters, a worker that stalls halfway through a probe
(the search says the backlog grew), and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from loadgen.errors import PlanError
from loadgen.results.slo import parse_slo
from loadgen.run.schedules import Constant
from loadgen.run.search import (
    MIN_GROWTH,
    RateSearch,
    SearchSpec,
    backlog_grows,
    fit_trend,
    t975,
)
from loadgen.run.spec import RunSpec
from tests.cli import qdeck
from tests.workers import worker

# -- the rule ------------------------------------------------------------------------------------------------------


def _t_cdf(x: float, df: int, panels: int = 20_000) -> float:
    """P(T <= x) for Student's t, by Simpson's rule on its density (the reference, from the formula itself)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def pdf(t: float) -> float:
        return float(c * (1 + t * t / df) ** (-(df + 1) / 2))

    h = x / panels
    total = pdf(0) + pdf(x) + sum((4 if i % 2 else 2) * pdf(i * h) for i in range(1, panels))
    return 0.5 + total * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 7, 18, 30, 31, 45, 120, 1000])
def test_t975_is_the_975th_percentile_of_students_t(df: int) -> None:
    assert _t_cdf(t975(df), df) == pytest.approx(0.975, abs=2e-5)


def test_a_flat_noisy_backlog_is_not_growing_and_a_rising_one_is() -> None:
    rng = random.Random(7)
    times = [0.15 * (i + 1) for i in range(20)]
    flat = [(t, 4 + rng.gauss(0, 1.5)) for t in times]
    trend = fit_trend(flat)
    assert trend.low < 0 < trend.high and not backlog_grows(trend, 3.0, 60)
    rising = [(t, 4 + 6.0 * t + rng.gauss(0, 1.5)) for t in times]  # +6 requests/s: a worker 6/s short
    trend = fit_trend(rising)
    assert trend.low > 0 and trend.low < 6.0 < trend.high and backlog_grows(trend, 3.0, 60)
    draining = [(t, 40 - 8.0 * t + rng.gauss(0, 1.5)) for t in times]  # shrinking is not growing
    assert not backlog_grows(fit_trend(draining), 3.0, 60)
    exact = fit_trend([(t, 2.0 * t) for t in times])
    assert exact.slope == pytest.approx(2.0) and exact.half_width == pytest.approx(0.0, abs=1e-9)
    assert math.isinf(fit_trend([(0.1, 1.0), (0.2, 5.0)]).half_width)  # two points: no interval


def test_growth_must_be_material() -> None:
    """A constant-rate sampler beating against the arrivals steps the in-flight count from 0 to 1 once: a
    'significant' slope of one request, which is not a backlog; nor is growth under 2 % of the requests sent."""
    step = [(0.15 * (i + 1), 0.0 if i < 12 else 1.0) for i in range(20)]
    trend = fit_trend(step)
    assert trend.low > 0 and trend.slope * 3.0 < MIN_GROWTH and not backlog_grows(trend, 3.0, 20)
    slow = fit_trend([(0.5 * (i + 1), 0.5 * (i + 1) * 1.5) for i in range(20)])  # +1.5/s over 10 s = 15
    assert backlog_grows(slow, 10.0, 500) and not backlog_grows(slow, 10.0, 1000)  # 15 < 2 % of 1000


# -- the search ----------------------------------------------------------------------------------------------------


def _search(limit: float, start: float, ceiling: float = 200_000, precision: float = 0.05,
            floor: float | None = None) -> tuple[RateSearch, list[float]]:
    rates = RateSearch(start, ceiling, precision, floor if floor is not None else start / 8)
    tried = []
    while (rate := rates.next_rate()) is not None:
        tried.append(rate)
        rates.record(rate, rate <= limit)
    return rates, tried


def test_doubling_then_bisection_converges_to_the_precision() -> None:
    rates, tried = _search(137.3, 10)
    assert tried == [10, 20, 40, 80, 160, 120, 140, 130, 135]  # 140 / 135 < 1.05: done
    assert rates.passed == 135 and rates.failed == 140 and rates.probes == 9
    for limit in (1.7, 23.0, 999.0, 12_345.6):
        for precision in (0.01, 0.05, 0.2):
            r, tried = _search(limit, 10, precision=precision, floor=0.1)
            assert r.passed is not None and r.failed is not None
            assert r.passed <= limit < r.failed <= r.passed * (1 + precision) + 1e-9
            assert len(tried) <= 2 + abs(math.log2(limit / 10)) + math.log2(1 / precision) + 1


def test_a_failing_start_halves_down_to_the_floor() -> None:
    rates, tried = _search(3.0, 10)  # floor 1.25
    assert tried[:3] == [10, 5, 2.5] and rates.passed is not None and rates.failed is not None
    assert rates.passed <= 3.0 < rates.failed <= rates.passed * 1.05
    rates, tried = _search(0.5, 10)
    assert tried == [10, 5, 2.5, 1.25] and rates.passed is None and rates.failed == 1.25
    rates, tried = _search(math.inf, 10, ceiling=50)
    assert tried == [10, 20, 40, 50] and rates.passed == 50 and rates.failed is None


def test_the_spec_refuses_what_cannot_be_searched() -> None:
    run = RunSpec(queue="q", schedule=Constant(10))
    slo = (parse_slo("p99<1s"),)
    for kwargs, why in (({"slos": ()}, "no SLO"), ({"start": 0.0}, "--start must be above 0"),
                        ({"start": 20.0, "ceiling": 10.0}, "--max-rate must be at least --start"),
                        ({"floor": 20.0}, "--min-rate must be above 0 and at most --start"),
                        ({"precision": 0.0}, "--precision must be above 0"),
                        ({"probe_s": 0.5}, "--probe must be between")):
        with pytest.raises(PlanError, match=why):
            SearchSpec(run=run, **{"slos": slo, **kwargs})  # type: ignore[arg-type]
    assert SearchSpec(run=run, slos=slo, probe_s=3).interval_s == pytest.approx(0.15)


# -- end to end ----------------------------------------------------------------------------------------------------


def test_search_on_the_memory_broker_finds_its_capacity(tmp_path: Path) -> None:
    """One FIFO server, 20 ms a request: 50/s. Every probe's run is written as ``load run`` writes one."""
    out = tmp_path / "search"
    hostile = "q\x1b[2J\u202e"  # a queue name is untrusted text: shown escaped, never interpreted
    done = qdeck("load", "search", "-b", "memory://t?service_ms=20", "-q", hostile, "--slo", "p99<1s", "--start",
                 "25", "--probe", "1s", "--warmup", "0.2s", "--out", str(out), timeout=90)
    assert done.code == 0, done.all
    assert "\x1b" not in done.all and "\u202e" not in done.all and "q\\x1b[2J" in done.all
    doc = json.loads((out / "search.json").read_text())
    assert 45 <= doc["max_rate"] <= 55, doc["curve"]
    assert doc["failed_rate"] <= doc["max_rate"] * 1.05 + 1e-9
    assert "max rate (λ*): " in done.out and "latency against rate" in done.out
    lines = [line for line in done.err.splitlines() if line.startswith("probe ")]
    assert len(lines) == len(doc["probes"]) >= 5
    for p in doc["probes"]:
        summary = json.loads((out / p["dir"] / "summary.json").read_text())
        assert summary["run_id"] == p["run_id"] and (out / p["dir"] / "latency.hlog").exists()
        assert summary["slo"] == p["slo"]
        if p["rate"] >= 75:  # half again the capacity: the backlog grows and the probe stops early
            assert not p["ok"] and "backlog" in p["failures"] and p["stopped_early"], p["why"]
            assert summary["counts"]["unsent"] > 0
    assert len({p["run_id"] for p in doc["probes"]}) == len(doc["probes"])


def test_a_plan_gives_the_queue_the_start_rate_and_the_slos(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text('queue = "q"\ntimeout = "2s"\n[schedule]\nkind = "ramp"\nrate = 30\n[slo]\np99 = "<1s"\n')
    done = qdeck("load", "search", "-b", "memory://t?service_ms=1", "--plan", str(plan), "--max-rate", "30",
                 "--probe", "1s", "--warmup", "0s", "--json", "--quiet", timeout=60)
    assert done.code == 0 and done.err == "", done.all
    doc = done.json()
    assert doc["slo"] == ["p99<1s"] and doc["search"]["start"] == 30 and doc["search"]["timeout_s"] == 2
    assert doc["max_rate"] == 30 and doc["ceiling_held"] and [p["rate"] for p in doc["probes"]] == [30]
    assert doc["probes"][0]["summary"]["schedule"]["kind"] == "constant"


def _drop_replies(redis_url: str, doc: dict[str, Any]) -> None:
    """The reply streams a worker re-made by answering after a probe had gone (requests that timed out)."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        for p in doc["probes"]:
            client.delete(f"qdeck:reply:{p['run_id']}")


@pytest.mark.redis
@pytest.mark.slow
def test_search_finds_a_synthetic_workers_capacity(redis_url: str, redis_queue: str, tmp_path: Path) -> None:
    """50 ms a request, one at a time: 20/s; λ* within 10 % of it, with a generous SLO (the backlog decides)."""
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=50", "--max-batch", "1", "--max-wait-ms", "0",
                tmp_path=tmp_path):
        done = qdeck("load", "search", "-b", redis_url, "-q", redis_queue, "--slo", "p99<2s", "--start", "10",
                     "--probe", "3s", "--warmup", "0.5s", "--timeout", "5s", "--json", timeout=120)
    assert done.code == 0, done.all
    doc = done.json()
    _drop_replies(redis_url, doc)
    seen = "\n".join(f"{p['rate']:g}/s {'ok' if p['ok'] else 'FAIL'} {p['why']}" for p in doc["probes"])
    assert 18 <= doc["max_rate"] <= 22, seen
    failing = [p for p in doc["probes"] if not p["ok"]]
    assert failing and all("backlog" in p["failures"] for p in failing if p["rate"] >= 30), failing


@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_that_stalls_halfway_makes_the_backlog_grow(redis_url: str, redis_queue: str,
                                                            tmp_path: Path) -> None:
    """20 ms a request (50/s) probed at 20/s for 3 s; 2 s after its first request (half-way through the measured
    time, after a 0.5 s warm-up) the worker stalls for 4 s. The one probe fails: the backlog grew."""
    model = "synthetic:base_ms=20,stall_ms=4000,stall_after_s=2"
    with worker(redis_url, redis_queue, "--model", model, "--max-batch", "1", "--max-wait-ms", "0",
                tmp_path=tmp_path):
        done = qdeck("load", "search", "-b", redis_url, "-q", redis_queue, "--slo", "p99<10s", "--start", "20",
                     "--max-rate", "20", "--min-rate", "20", "--probe", "3s", "--warmup", "0.5s", "--timeout", "2s",
                     "--json", timeout=60)
    doc = done.json()
    _drop_replies(redis_url, doc)
    assert done.code == 99, done.all
    assert done.err.strip().endswith("no rate held its SLOs: not even the lowest probe passed"), done.err
    (probe,) = doc["probes"]
    assert not probe["ok"] and probe["failures"] == ["backlog"], probe["why"]
    assert probe["backlog"]["growing"] and probe["backlog"]["ci95"][0] > 0
    assert any(why.startswith("backlog grew") for why in probe["why"]), probe["why"]
    assert probe["stopped_early"] and "probe stopped early" in probe["stopped_early"]
    assert doc["max_rate"] is None and doc["failed_rate"] == 20


@pytest.mark.parametrize(("args", "why"), [
    (["-b", "memory://t", "-q", "q"], "no SLO to search by"),
    (["-b", "memory://t", "-q", "q", "--slo", "p99<1s", "--start", "0"], "--start must be above 0"),
    (["-b", "memory://t", "-q", "q", "--slo", "p99<1s", "--precision", "0"], "--precision must be above 0"),
    (["-b", "memory://t", "-q", "q", "--slo", "p99<1s", "--start", "50", "--max-rate", "20"],
     "--max-rate must be at least --start (50/s)"),
    (["-b", "nosuch://host", "-q", "q", "--slo", "p99<1s"], "nosuch"),
    (["-b", "redis://127.0.0.1:1/0", "-q", "q", "--slo", "p99<1s", "--probe", "1s"], "127.0.0.1:1"),
    (["-b", "memory://t", "-q", "q", "--slo", "p99<1", "--probe", "1s"], "needs a unit"),
    (["-b", "memory://t", "-q", "q", "--slo", "p99<1s", "--probe", "soon"], "--probe"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], why: str) -> None:
    done = qdeck("load", "search", *args, timeout=60)
    assert done.code == 2 and done.out == "" and done.err.count("\n") == 1, done.all
    assert done.err.startswith("qdeck: ") and why in done.err and "Traceback" not in done.err, done.err
