"""``qdeck load run --agents N`` with real ``qdeck load agent`` processes (Locust's master/worker mode) on Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from console.demo import remove_queues
from console.embedded_redis import free_port
from loadgen.results.stages import HIGHEST_US, LOWEST_US, SIGFIGS, STAGES
from probes.urls import parse_broker_url
from tests.cli import qdeck
from tests.workers import worker

pytestmark = pytest.mark.slow


def _agent(port: int, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    return subprocess.Popen([sys.executable, "-m", "console.cli", "load", "agent", "--master", f"127.0.0.1:{port}",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -9, out
    return proc.returncode, out


def test_two_agents_share_a_run_and_the_master_merges_it(redis_url: str, tmp_path) -> None:
    queue = f"qdeck-dist-{uuid.uuid4().hex[:6]}"
    port = free_port()
    out = tmp_path / "run"
    # One agent is told its own broker (the password stays off the control link), one takes the master's.
    agents = [_agent(port, "--broker", redis_url), _agent(port)]
    try:
        # The worker's GPUs are NVML stand-ins (tests.nvml_stand_in: two GPUs at fixed readings): the agents'
        # GPU sections are merged into the master's summary.
        with worker(redis_url, queue, "--model", "echo", "--max-wait-ms", "1", "--nvml-module", "tests.nvml_stand_in",
                    "--gpu-interval", "0.1", tmp_path=tmp_path):
            run = qdeck("load", "run", "-b", redis_url, "-q", queue, "--rate", "300", "--duration", "2", "--warmup",
                        "0.5", "--schedule", "poisson", "--agents", "2", "--bind", f"127.0.0.1:{port}",
                        "--out", str(out), "--slo", "p99<5s", "--slo", "errors<1%", "--json", timeout=120)
    finally:
        finished = [_finish(agent) for agent in agents]
        remove_queues(parse_broker_url(redis_url), [queue, f"{queue}:dlq"])
    assert run.code == 0, run.all
    for code, log in finished:  # the agents leave when the master's run ends
        assert code == 0, log
        assert "Traceback" not in log
    assert "2 agents" in run.err

    summary = run.json()
    assert json.loads((out / "summary.json").read_text())["counts"] == summary["counts"]
    c = summary["counts"]
    assert c["sent"] == c["replied"] + c["errors"] + c["timeouts"]
    assert c["timeouts"] == 0 and 400 <= c["sent"] <= 800  # Poisson, 300/s for 2 s over two agents
    assert c["warmup_sent"] > 0
    parts = summary["agents"]
    assert [a["index"] for a in parts] == [0, 1]
    assert len({a["run_id"] for a in parts}) == 2
    assert all(a["counts"]["sent"] > 0 for a in parts)
    assert sum(a["counts"]["sent"] for a in parts) == c["sent"]
    for stage in STAGES:
        assert summary["stages"][stage]["count"] == (c["sent"] if stage == "schedule_lag" else c["replied"]), stage
    assert all(v["ok"] for v in summary["slo"])
    for index, part in enumerate(parts):
        assert json.loads((out / "agents" / str(index) / "summary.json").read_text())["run_id"] == part["run_id"]

    reader = HistogramLogReader(str(out / "latency.hlog"), HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS))
    total = 0
    while (hist := reader.get_next_interval_histogram()) is not None:
        total += hist.get_total_count()
    assert total == c["replied"]
    assert "Value     Percentile TotalCount 1/(1-Percentile)" in (out / "end_to_end.hgrm").read_text()

    gpu = summary["gpu"]
    agents_gpu = [json.loads((out / "agents" / str(i) / "summary.json").read_text())["gpu"] for i in (0, 1)]
    assert gpu["samples"] == sum(g["samples"] for g in agents_gpu) > 0
    first, second = gpu["devices"]
    assert first["worker"] == second["worker"] and (first["index"], second["index"]) == (0, 1)
    assert {(r["util_pct"], r["mem_used_mib"], r["power_w"], r["sm_clock_mhz"]) for r in first["intervals"]} == {
        (87.0, 30720, 312.4, 1980)}
    assert {(r["util_pct"], r["mem_used_mib"], r["power_w"], r["sm_clock_mhz"]) for r in second["intervals"]} == {
        (12.0, 2560, 75.0, 1410)}
    assert sum(r["samples"] for r in first["intervals"]) == sum(
        r["samples"] for g in agents_gpu for r in g["devices"][0]["intervals"])
    measured = [r for r in gpu["intervals"] if r["util_pct"] is not None]
    assert measured and all(r["util_pct"] == 49.5 and r["queue_wait_p50_ms"] is not None for r in measured)


def test_missing_agents_and_unsplittable_plans_are_one_line_errors(redis_url: str) -> None:
    port = free_port()
    lonely = qdeck("load", "run", "-b", redis_url, "-q", "q", "--rate", "10", "-d", "1", "--agents", "2", "--bind",
                   f"127.0.0.1:{port}", "--agents-wait", "1s", "--quiet", timeout=60)
    assert lonely.code == 2, lonely.all
    assert "only 0 of 2 agents connected within 1 s" in lonely.err
    closed = qdeck("load", "run", "-b", redis_url, "-q", "q", "--schedule", "closed", "--concurrency", "1", "-d", "1",
                   "--agents", "2", "--bind", f"127.0.0.1:{port}", timeout=60)
    assert closed.code == 2 and "less than the 2 agents" in closed.err, closed.all
    bad_master = qdeck("load", "agent", "--master", "127.0.0.1:http", timeout=60)
    assert bad_master.code == 2 and "'127.0.0.1:http' is not HOST:PORT" in bad_master.err, bad_master.all
    for run in (lonely, closed, bad_master):
        assert "Traceback" not in run.all
        assert len([line for line in run.err.splitlines() if line.startswith("qdeck:")]) == 1, run.err


def test_an_llm_shaped_run_over_two_agents_merges_its_llm_figures(redis_url: str, tmp_path) -> None:
    """LLM-shaped load over agents: each agent streams its share (the dataset's rows travel with it, drawn from the
    share's own seed); the master adds the agents' TTFT/TPOT/ITL/token histograms and their stream and token
    counts, judges the objectives over every request, and merges the LLM metrics' interval logs."""
    queue = f"qdeck-dist-llm-{uuid.uuid4().hex[:6]}"
    port = free_port()
    out = tmp_path / "run"
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps({"input_tokens": 10 + i, "output_tokens": 3 + i % 4}) + "\n"
                               for i in range(12)))
    agents = [_agent(port, "--broker", redis_url), _agent(port)]
    try:
        with worker(redis_url, queue, "--model", "llm-synthetic:step_ms=2,per_seq_ms=0,prefill_ms=0,chunk=1",
                    tmp_path=tmp_path):
            run = qdeck("load", "run", "-b", redis_url, "-q", queue, "--rate", "40", "--duration", "2", "--agents",
                        "2", "--bind", f"127.0.0.1:{port}", "--dataset", str(dataset), "--objective", "ttft<5s",
                        "--slo", "attainment>=90%", "--out", str(out), "--html", str(tmp_path / "report.html"),
                        "--json", timeout=120)
    finally:
        finished = [_finish(agent) for agent in agents]
        remove_queues(parse_broker_url(redis_url), [queue, f"{queue}:dlq"])
    assert run.code == 0, run.all
    for code, log in finished:
        assert code == 0 and "Traceback" not in log, log
    summary = run.json()
    c, llm = summary["counts"], summary["llm"]
    parts = [json.loads((out / "agents" / str(i) / "summary.json").read_text())["llm"] for i in (0, 1)]
    assert c["timeouts"] == 0 and c["errors"] == 0 and 60 <= c["sent"] <= 100
    assert llm["streams"] == c["replied"] == sum(p["streams"] for p in parts)
    for metric in ("ttft", "tpot", "itl", "input_tokens", "output_tokens"):
        assert llm[metric]["count"] == sum(p[metric]["count"] for p in parts) > 0, metric
    assert llm["ttft"]["count"] == c["replied"]
    assert llm["output_tokens_total"] == sum(p["output_tokens_total"] for p in parts) > 0
    assert llm["output_tokens"]["min"] >= 3 and llm["output_tokens"]["max"] <= 6
    assert llm["input_tokens"]["min"] >= 10 and llm["input_tokens"]["max"] <= 21
    assert llm["attainment"]["judged"] == c["sent"] and llm["attainment"]["met"] == sum(
        p["attainment"]["met"] for p in parts) and llm["attainment"]["value"] >= 90
    assert llm["objectives"] == ["ttft<5s"] and llm["dataset"]["file"] == "rows.jsonl"
    assert llm["dataset"]["rows_used"] == 12 and all(p["dataset"]["sha256"] == llm["dataset"]["sha256"]
                                                     for p in parts)
    assert all(v["ok"] for v in summary["slo"])
    reader = HistogramLogReader(str(out / "hlog" / "ttft.hlog"), HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS))
    total = 0
    while (hist := reader.get_next_interval_histogram()) is not None:
        total += hist.get_total_count()
    assert total == llm["ttft"]["count"]
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and summary["run_id"] in page
