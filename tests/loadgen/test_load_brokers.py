"""``qdeck load run`` through real brokers to real workers: counts, stages, files, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadgen.results.stages import HIGHEST_US, LOWEST_US, SIGFIGS, STAGES
from tests.cli import qdeck
from tests.loadgen.conftest import Case
from tests.workers import worker

pytestmark = pytest.mark.slow

WORKERS = {"echo": ["--model", "echo", "--max-wait-ms", "2"],
           "synthetic": ["--model", "synthetic:base_ms=2,per_item_ms=0.2,jitter=exp,jitter_ms=1", "--max-wait-ms", "2"]}


@pytest.mark.parametrize("model", ["echo", "synthetic"])
def test_run_counts_stages_files_and_exit_codes(case: Case, model: str, tmp_path) -> None:
    out = tmp_path / "run"
    with worker(case.url, case.queue, *WORKERS[model], tmp_path=tmp_path):
        passed = qdeck("load", "run", "--broker", case.url, "--queue", case.queue, "--rate", "150", "--duration",
                       "2", "--warmup", "0.5", "--schedule", "poisson", "--coalesce", "2ms", "--out", str(out),
                       "--junit", str(tmp_path / "slo.xml"), "--slo", "p99<5s", "--slo", "errors<1%", "--quiet",
                       timeout=120)
        missed = qdeck("load", "run", "--broker", case.url, "--queue", case.queue, "--rate", "100", "--duration",
                       "1", "--slo", "p50<1us", "--quiet", timeout=120)
    assert passed.code == 0, passed.all
    assert missed.code == 99, missed.all
    assert "FAIL" in missed.out

    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["sent"] == c["replied"] + c["errors"] + c["timeouts"]
    assert c["sent"] >= 200 and c["errors"] == 0 and c["timeouts"] == 0
    assert c["warmup_sent"] > 0
    assert summary["coalesce_s"] == 0.002
    for stage in STAGES:
        expected = c["sent"] if stage == "schedule_lag" else c["replied"]
        assert summary["stages"][stage]["count"] == expected, stage
    if model == "synthetic":
        assert summary["stages"]["service"]["p50_ms"] >= 2.0
    assert sum(summary["batch_sizes"].values()) == c["replied"]
    assert summary["devices"] == {"cpu": c["replied"]}

    # The interval log reads back with hdrh's own reader and adds up to the run's end-to-end histogram.
    reader = HistogramLogReader(str(out / "latency.hlog"), HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS))
    total = 0
    while (hist := reader.get_next_interval_histogram()) is not None:
        total += hist.get_total_count()
    assert total == c["replied"]
    hgrm = (out / "end_to_end.hgrm").read_text()
    assert "Value     Percentile TotalCount 1/(1-Percentile)" in hgrm and "#[Mean" in hgrm
    suite = ET.parse(tmp_path / "slo.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "0"

    gate = qdeck("load", "gate", str(out / "summary.json"), "--slo", "queue_wait.p99<1us", "--json")
    assert gate.code == 99 and gate.json()[0]["ok"] is False


@pytest.mark.parametrize("kind", ["redis", "rabbitmq", "kafka"])
def test_unreachable_or_refused_broker_is_one_line_exit_2(kind: str, rabbitmq_url: str) -> None:
    from console.embedded_redis import free_port

    port = free_port()
    url = {"redis": f"redis://:hunter2pw@127.0.0.1:{port}/0",
           "rabbitmq": f"amqp://guest:hunter2pw@127.0.0.1:{port}/",
           "kafka": f"kafka://127.0.0.1:{port}?sasl_password=hunter2pw"}[kind]
    for args in (["load", "run", "-b", url, "-q", "q", "--rate", "10", "-d", "1", "--quiet"],
                 ["worker", "-b", url, "-q", "q"]):
        run = qdeck(*args, timeout=60)
        assert run.code == 2, run.all
        lines = [line for line in run.err.splitlines() if line.startswith("qdeck:")]
        assert len(lines) == 1 and "broker unreachable" in lines[0], run.err
        assert "Traceback" not in run.all and "hunter2pw" not in run.all


def test_rabbitmq_wrong_password_is_auth_failed(rabbitmq_url: str) -> None:
    from probes import parse_broker_url

    t = parse_broker_url(rabbitmq_url)
    url = f"amqp://{t.username}:not-the-password@{t.host}:{t.port}/"
    run = qdeck("load", "run", "-b", url, "-q", "q", "--rate", "10", "-d", "1", "--quiet", timeout=60)
    assert run.code == 2 and "authentication failed" in run.err and "not-the-password" not in run.all
