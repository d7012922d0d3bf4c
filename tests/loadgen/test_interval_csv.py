"""Issue 19 item 6: ``qdeck load run --csv FILE`` writes one row per interval and stage (as Locust's stats
history), through a real broker to a real worker; the rows add up to the summary; a timeout enters end_to_end at no
less than the timeout; a file that cannot be written is refused before the run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadgen.results.interval_csv import COLUMNS
from loadgen.results.stages import STAGES
from tests.cli import qdeck
from tests.workers import worker

pytestmark = pytest.mark.redis


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_csv_rows_add_up_to_the_summary(redis_url: str, redis_queue: str, tmp_path: Path) -> None:
    out, table = tmp_path / "run", tmp_path / "intervals.csv"
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=1", "--max-wait-ms", "1", tmp_path=tmp_path):
        run = qdeck("load", "run", "-b", redis_url, "-q", redis_queue, "--rate", "200", "--duration", "3", "--warmup",
                    "0.5", "--out", str(out), "--csv", str(table), "--quiet", timeout=120)
    assert run.code == 0, run.all
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(table)
    intervals = sorted({(r["start_s"], r["end_s"]) for r in rows}, key=lambda i: float(i[0]))
    assert len(intervals) >= 3 and len(rows) == len(intervals) * len(STAGES)
    for start, end in intervals:  # every stage on every interval, in the registry's order
        assert [r["stage"] for r in rows if (r["start_s"], r["end_s"]) == (start, end)] == list(STAGES)
    for stage in STAGES:
        assert sum(int(r["count"]) for r in rows if r["stage"] == stage) == summary["stages"][stage]["count"], stage
    e2e = [r for r in rows if r["stage"] == "end_to_end"]
    assert sum(int(r["sent"]) for r in e2e) == summary["counts"]["sent"]
    assert sum(int(r["replied"]) for r in e2e) == summary["counts"]["replied"]
    for r in rows:
        if int(r["count"]):
            figures = [float(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")]
            assert figures == sorted(figures), r
        else:
            assert r["p50_ms"] == r["max_ms"] == "", r
    service = [float(r["p50_ms"]) for r in rows if r["stage"] == "service" and int(r["count"])]
    assert service and min(service) >= 1.0  # the synthetic model's 1 ms


def test_timeouts_are_in_end_to_end_at_no_less_than_the_timeout(redis_url: str, redis_queue: str,
                                                                 tmp_path: Path) -> None:
    table = tmp_path / "intervals.csv"  # nobody serves the queue: every request times out
    run = qdeck("load", "run", "-b", redis_url, "-q", redis_queue, "--rate", "50", "--duration",
                "1", "--timeout", "1s", "--csv", str(table), "--quiet", timeout=120)
    assert run.code == 0, run.all
    rows = [r for r in _rows(table) if r["stage"] == "end_to_end" and int(r["count"])]
    assert sum(int(r["timeouts"]) for r in rows) == sum(int(r["count"]) for r in rows) == 50
    assert all(float(r["p50_ms"]) >= 1000.0 for r in rows)


def test_a_file_that_cannot_be_written_is_refused_before_the_run(redis_url: str, tmp_path: Path) -> None:
    for target, why in ((tmp_path / "missing" / "x.csv", "no directory"), (tmp_path, "is a directory")):
        run = qdeck("load", "run", "-b", redis_url, "-q", "q", "--rate", "10", "-d", "1", "--csv", str(target))
        assert run.code == 2 and run.out == "" and run.err.count("\n") == 1 and why in run.err, run.all
    agents = qdeck("load", "run", "-b", redis_url, "-q", "q", "--rate", "10", "-d", "1", "--agents", "2", "--csv",
                   str(tmp_path / "x.csv"))
    assert agents.code == 2 and "--csv" in agents.err and agents.err.count("\n") == 1, agents.all
