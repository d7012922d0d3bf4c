"""``qdeck load run`` through real brokers to real workers: counts, stages, files, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from loadgen.recorder import HIGHEST_US, LOWEST_US, SIGFIGS, STAGES
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
                       "2", "--warmup", "0.5", "--schedule", "poisson", "--out", str(out), "--junit",
                       str(tmp_path / "slo.xml"), "--slo", "p99<5s", "--slo", "errors<1%", "--quiet", timeout=120)
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
    for stage in STAGES:
        assert summary["stages"][stage]["count"] == c["replied"] if stage != "schedule_lag" else c["sent"], stage
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
