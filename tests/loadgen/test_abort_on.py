"""Issue 19 item 5: ``--abort-on 'p99<250ms for 10s'`` stops a run once the breach has lasted that long and exits
99 with the reason (k6's abortOnFail). The rule is judged per interval; a real worker that is too slow for the rate
breaches it; bad rules are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.errors import SloError
from loadgen.results.abort_rule import AbortWatch, parse_abort_rule
from loadgen.results.stages import STAGES, new_histogram
from tests.cli import qdeck
from tests.workers import worker


def _hists(e2e_ms: float | None) -> dict[str, object]:
    hists = {stage: new_histogram() for stage in STAGES}
    if e2e_ms is not None:
        hists["end_to_end"].record_value(int(e2e_ms * 1000))
    return hists


def test_the_breach_clock_starts_resets_and_waits_out_gaps() -> None:
    watch = AbortWatch([parse_abort_rule("p99<100ms for 3s")])
    t = 0.0

    def second(e2e_ms: float | None, sent: int = 10) -> str | None:
        nonlocal t
        t += 1
        return watch.check(t - 1, t, _hists(e2e_ms), sent, 0, 0)  # type: ignore[arg-type]

    assert second(500) is None and second(500) is None  # 2 s of breach
    assert second(50) is None  # holds: the clock resets
    assert second(500) is None and second(None, sent=0) is None  # a second with nothing to judge: time goes on
    reason = second(500)
    assert reason is not None and "p99<100ms for 3s" in reason and "breached for 3 s from 3 s" in reason
    errors = AbortWatch([parse_abort_rule("errors<10% for 1s")])
    assert errors.check(0, 1, _hists(None), 100, 5, 4) is None  # type: ignore[arg-type]
    assert "10% (10 of 100)" in str(errors.check(1, 2, _hists(None), 100, 6, 4))  # type: ignore[arg-type]


@pytest.mark.parametrize(("rule", "why"), [
    ("p99<250ms", "is not 'SLO for DURATION'"),
    ("p99<250ms for", "is not 'SLO for DURATION'"),
    ("p99<250ms for soon", "soon"),
    ("p99<250ms for 0s", "above zero"),
    ("achieved_rate>=99% for 5s", "achieved_rate cannot stop a run"),
    ("p99<250 for 5s", "needs a unit"),
])
def test_bad_rules(rule: str, why: str) -> None:
    with pytest.raises(SloError, match=why):
        parse_abort_rule(rule)
    run = qdeck("load", "run", "-b", "redis://127.0.0.1:1/0", "-q", "q", "-r", "10", "-d", "1", "--abort-on", rule)
    assert run.code == 2 and run.out == "" and run.err.count("\n") == 1 and why in run.err, run.all


@pytest.mark.redis
def test_a_worker_too_slow_for_the_rate_stops_the_run(redis_url: str, redis_queue: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 20 ms a request, one at a time: 50/s at most, asked for 150/s: the queue and its wait grow every second
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=20", "--max-batch", "1", tmp_path=tmp_path):
        run = qdeck("load", "run", "-b", redis_url, "-q", redis_queue, "-r", "150", "-d", "30", "--timeout", "3s",
                    "--abort-on", "p99<100ms for 2s", "--abort-on", "errors<50% for 20s", "--out", str(out),
                    "--quiet", timeout=120)
        held = qdeck("load", "run", "-b", redis_url, "-q", redis_queue, "-r", "20", "-d", "2", "--abort-on",
                     "p99<2s for 1s", "--quiet", timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    import redis

    with redis.Redis.from_url(redis_url) as client:  # the worker answered its last batches after the run had gone
        client.delete(f"qdeck:reply:{summary['run_id']}")
    assert run.code == 99, run.all
    assert run.err.startswith("qdeck: run stopped: --abort-on p99<100ms for 2s: breached for ") and \
        run.err.count("\n") == 1, run.err
    assert summary["aborted"].startswith("--abort-on p99<100ms for 2s")
    counts = summary["counts"]
    assert counts["unsent"] > 150 * 15  # stopped within seconds, not after 30
    assert counts["sent"] == counts["replied"] + counts["errors"] + counts["timeouts"]
    assert held.code == 0, held.all
