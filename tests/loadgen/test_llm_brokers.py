"""LLM-shaped load through each real broker: a Poisson run against an ``llm-synthetic`` worker reports TTFT, TPOT,
ITL, tokens/s, goodput and attainment, in summary.json and in the printed table; the LLM SLOs judge them."""

from __future__ import annotations

import json

import pytest

from loadgen.results.stages import LLM_METRICS
from tests.cli import qdeck
from tests.loadgen.conftest import Case
from tests.workers import worker

pytestmark = pytest.mark.slow

MODEL = "llm-synthetic:step_ms=5,per_seq_ms=0.2,prefill_ms=0.01,chunk=2"


def test_streamed_run_reports_llm_metrics(case: Case, tmp_path) -> None:
    out = tmp_path / "run"
    with worker(case.url, case.queue, "--model", MODEL, "--metrics-format", "json", "--metrics-interval", "1",
                tmp_path=tmp_path) as w:
        run = qdeck("load", "run", "--broker", case.url, "--queue", case.queue, "--schedule", "poisson", "--rate",
                    "20", "--duration", "3s", "--warmup", "1s", "--seed", "3", "--input-tokens", "normal:256,64",
                    "--output-tokens", "uniform:4,12", "--objective", "ttft<2s", "--objective", "tpot<1s",
                    "--slo", "ttft.p99<5s", "--slo", "tpot.p90<1s", "--slo", "attainment>=90%",
                    "--slo", "goodput>=1/s", "--out", str(out), timeout=120)
        metric_lines = w.events("llm_metrics")
    assert run.code == 0, run.all
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["sent"] == c["replied"] + c["errors"] + c["timeouts"] and c["sent"] >= 30
    assert c["errors"] == 0 and c["timeouts"] == 0 and c["malformed_replies"] == 0 and c["duplicates"] == 0
    llm = summary["llm"]
    assert llm["streams"] == c["replied"]
    for name, (_unit, formula) in LLM_METRICS.items():
        assert llm[name]["formula"] == formula
        if name != "itl":  # one value per request (every request has more than one token)
            assert llm[name]["count"] == c["replied"], name
    assert llm["output_tokens"]["min"] >= 4 and llm["output_tokens"]["max"] <= 12
    # every request's tokens came in chunks of at most 2 after the first: more gaps than requests
    assert llm["itl"]["count"] >= 2 * c["replied"]
    assert llm["tpot"]["p50_ms"] >= 5.0  # at least the decode step
    assert llm["ttft"]["p50_ms"] >= 5.0  # at least the first step
    assert llm["output_tokens_per_s"]["value"] > 0 and llm["requests_per_s"]["value"] > 0
    assert llm["attainment"]["value"] >= 90 and llm["goodput"]["value"] > 0
    assert llm["input_lengths"] == "normal:256,64" and llm["output_lengths"] == "uniform:4,12"
    assert all(v["ok"] for v in summary["slo"]), summary["slo"]
    assert (out / "hlog" / "ttft.hlog").read_text().count("\n") > 5
    # the printed table: every metric, tokens/s, goodput and attainment
    for text in ("ttft (ms)", "tpot (ms)", "itl (ms)", "e2e (ms)", "output_tokens (tokens)", "tokens/s", "goodput",
                 "attainment"):
        assert text in run.out, text
    # the worker's metric lines: active sequences, step batch sizes, tokens/s
    assert metric_lines and any(line["tokens_per_s"] > 0 and line["mean_step_batch"] >= 1 for line in metric_lines)
    assert all("active_sequences" in line for line in metric_lines)


def test_missed_llm_slo_exits_99_and_bad_options_exit_2(redis_url: str, tmp_path) -> None:
    from tests.workers import unique

    queue = unique("qdeck-test-llm-slo")
    try:
        with worker(redis_url, queue, "--model", "llm-synthetic:step_ms=2,output_tokens=4", tmp_path=tmp_path):
            missed = qdeck("load", "run", "--broker", redis_url, "--queue", queue, "--rate", "10", "--duration",
                           "1s", "--objective", "ttft<1us", "--slo", "attainment>=50%", "--quiet", timeout=60)
        assert missed.code == 99, missed.all
        assert "FAIL" in missed.out
        for bad in (["--input-tokens", "gamma:1,2"], ["--objective", "ttft>5ms"], ["--slo", "goodput>=5ms"],
                    ["--abort-on", "attainment>=9% for 2s"]):
            run = qdeck("load", "run", "--broker", redis_url, "--queue", queue, "--rate", "10", "--duration", "1s",
                        *bad, timeout=60)
            assert run.code == 2, (bad, run.all)
            assert len(run.err.strip().splitlines()) == 1 and "Traceback" not in run.err, run.err
    finally:
        import redis

        with redis.Redis.from_url(redis_url) as r:
            r.delete(queue, f"{queue}:dlq")
