"""Issue 21 item 3: ``qdeck load run`` publishes its live intervals as JSON lines (``live.jsonl``; the record shape
is in ``loadgen/run/live_feed.py``) as each interval closes, through a real broker to a real worker: the lines add
up to the summary, the SLOs are judged on the run so far, the last line says how the run ended (pass, fail,
interrupted by SIGINT — which now writes the run's files —, error); every byte is ASCII with no control character;
a run without ``--out`` writes its feed to the runs directory, where the console finds the newest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loadgen.results.stages import STAGES
from loadgen.run.engine import Engine, RunSpec
from loadgen.run.live_feed import FEED_NAME, KEEP_RUNS, LiveFeed, latest_feed, prune, runs_dir
from loadgen.run.schedules import Constant
from loadgen.transports import open_transport
from probes.urls import parse_broker_url
from tests.cli import qdeck
from tests.workers import worker


def lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    assert all(32 <= b < 127 or b == 10 for b in raw), "a feed byte that is not printable ASCII"
    return [json.loads(line) for line in raw.splitlines()]


def check_stage_figures(stages: dict[str, Any]) -> None:
    assert set(stages) == set(STAGES)
    for stage, fig in stages.items():
        if fig["count"]:
            assert fig["p50_ms"] <= fig["p90_ms"] <= fig["p99_ms"] <= fig["max_ms"], (stage, fig)


@pytest.mark.redis
def test_the_feed_adds_up_to_the_summary(redis_url: str, redis_queue: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=1", "--max-wait-ms", "1", tmp_path=tmp_path):
        run = qdeck("load", "run", "-b", redis_url, "-q", redis_queue, "--rate", "100", "--duration", "3",
                    "--warmup", "1", "--slo", "p99<1s", "--slo", "errors<1%", "--out", str(out), "--quiet",
                    env={"QDECK_RUNS_DIR": str(tmp_path / "runs")}, timeout=120)
    assert run.code == 0, run.all
    summary = json.loads((out / "summary.json").read_text())
    feed = lines(out / FEED_NAME)
    start, intervals, end = feed[0], feed[1:-1], feed[-1]
    assert [r["t"] for r in feed] == ["start"] + ["interval"] * len(intervals) + ["end"]
    assert all(r["v"] == 1 for r in feed)
    assert start["run_id"] == summary["run_id"] and start["queue"] == redis_queue
    assert start["broker"] == summary["broker"] and start["broker_kind"] == "redis"
    assert start["slo"] == ["p99<1s", "errors<1%"] and start["out"] == str(out)
    assert len(intervals) >= 4  # a second of warm-up, three measured, the drain
    for key in ("sent", "replied", "errors", "timeouts", "duplicates", "late", "intended"):
        assert sum(r[key] for r in intervals) == summary["counts"][key], key
    assert sum(r["warmup_sent"] for r in intervals) == summary["counts"]["warmup_sent"]
    assert intervals[-1]["totals"]["sent"] == summary["counts"]["sent"]
    assert intervals[0]["warmup"] is True and intervals[0]["slo"] is None  # nothing measured in the warm-up yet
    for r in intervals:
        check_stage_figures(r["stages"])
        assert r["end_s"] > r["start_s"]
    measured = [r for r in intervals if not r["warmup"] and r["sent"]]
    assert measured and all(r["consumers"] == 1 for r in measured)  # the worker, sampled at the broker
    assert all(r["depth"] is not None for r in measured)
    assert sum(r["stages"]["end_to_end"]["count"] for r in intervals) == summary["stages"]["end_to_end"]["count"]
    so_far = [r["slo"] for r in measured]
    assert all([v["slo"] for v in s] == ["p99<1s", "errors<1%"] and all(v["ok"] for v in s) for s in so_far)
    assert so_far[-1][1]["actual"].endswith(f"of {intervals[-1]['totals']['sent']})")  # judged on the totals
    assert end["verdict"] == "pass" and end["exit_code"] == 0 and end["reason"] is None
    assert end["slo"] == summary["slo"] and end["counts"] == summary["counts"]
    assert end["summary"] == str(out / "summary.json")
    assert end["stages"]["end_to_end"]["p99_ms"] == summary["stages"]["end_to_end"]["p99_ms"]
    check_stage_figures(end["stages"])
    assert latest_feed(tmp_path / "runs") == (tmp_path / "runs" / summary["run_id"] / FEED_NAME)  # the link


@pytest.mark.redis
def test_sigint_stops_the_run_and_writes_its_files(redis_url: str, redis_queue: str, tmp_path: Path) -> None:
    """The console stops a run it started as Ctrl-C does: the first SIGINT ends the sending, the replies in flight
    are awaited, summary.json and the feed's last line are written, exit 130."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")}
    env.update(QDECK_CONFIG="/nonexistent/qdeck-brokers.toml", QDECK_RUNS_DIR=str(tmp_path / "runs"))
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=1", tmp_path=tmp_path):
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "load", "run", "-b", redis_url, "-q",
                                 redis_queue, "--rate", "50", "--duration", "60", "--out", str(out), "--quiet",
                                 "--slo", "p99<1s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.monotonic() + 60
            while not (out / FEED_NAME).exists() or (out / FEED_NAME).read_text().count('"t":"interval"') < 2:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.decode()
    summary = json.loads((out / "summary.json").read_text())
    import redis

    with redis.Redis.from_url(redis_url) as client:  # the worker may answer the last requests after the run
        client.delete(f"qdeck:reply:{summary['run_id']}")
    counts = summary["counts"]
    assert summary["aborted"] == "interrupted (Ctrl-C)" and counts["unsent"] > 0
    assert counts["sent"] == counts["replied"] + counts["errors"] + counts["timeouts"] and counts["sent"] >= 50
    end = lines(out / FEED_NAME)[-1]
    assert end["t"] == "end" and end["verdict"] == "interrupted" and end["exit_code"] == 130
    assert end["counts"] == counts and b"interrupted" in stdout


def test_verdicts_and_errors_end_the_feed(tmp_path: Path) -> None:
    runs = {"QDECK_RUNS_DIR": str(tmp_path / "runs")}
    failed = qdeck("load", "run", "-b", "memory://feed-fail?service_ms=2", "-q", "q", "--rate", "50", "--duration",
                   "1", "--slo", "p99<1us", "--out", str(tmp_path / "fail"), "--quiet", env=runs, timeout=60)
    assert failed.code == 99, failed.all
    end = lines(tmp_path / "fail" / FEED_NAME)[-1]
    assert end["verdict"] == "fail" and end["exit_code"] == 99 and end["slo"][0]["ok"] is False
    # an unreachable broker: the one error line, and the feed says why, its password masked
    down = qdeck("load", "run", "-b", "redis://:s3cret@127.0.0.1:1/0", "-q", "q", "--rate", "10", "--duration", "1",
                 "--out", str(tmp_path / "down"), env=runs, timeout=60)
    assert down.code == 2 and down.err.count("\n") == 1, down.all
    feed = lines(tmp_path / "down" / FEED_NAME)
    assert [r["t"] for r in feed] == ["start", "end"]
    assert feed[1]["verdict"] == "error" and feed[1]["exit_code"] == 2 and feed[1]["reason"]
    assert "s3cret" not in (tmp_path / "down" / FEED_NAME).read_text()
    assert feed[0]["broker"] == "redis://:***@127.0.0.1:1/0"


def test_a_run_without_out_feeds_the_runs_directory_and_hostile_names_stay_escaped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    queue = "q\x1b]0;pwned\x07\u202e\x7f"
    run = qdeck("load", "run", "-b", "memory://feed-plain", "-q", queue, "--rate", "20", "--duration", "1",
                "--timeout", "1s", env={"QDECK_RUNS_DIR": str(runs)}, timeout=60)
    assert run.code == 0, run.all
    feed = latest_feed(runs)
    assert feed is not None and feed.parent.parent == runs and feed.name == FEED_NAME
    assert (runs.stat().st_mode & 0o777) == 0o700
    records = lines(feed)  # printable ASCII only: the escapes stay text
    assert records[0]["queue"] == queue and records[-1]["verdict"] == "done"
    assert "live feed " + str(feed) in run.err  # the run's header line names it


async def test_timeouts_show_as_lower_bounds_and_a_failed_write_stops_only_the_feed(tmp_path: Path) -> None:
    """In-process, through the memory transport that drops every 5th request: the intervals' end-to-end figures
    that stand on timed-out requests are marked ``at_least``; and a feed that cannot be written (a full disk:
    /dev/full) says why and ends, while the run goes on."""
    spec = RunSpec(queue="q", schedule=Constant(100), duration_s=1.5, timeout_s=0.2)
    path = tmp_path / FEED_NAME
    feed = LiveFeed(path, spec, broker="memory://drops", broker_kind="memory")
    transport = open_transport(parse_broker_url("memory://drops?service_ms=1&drop_every=5"), "q", spec.run_id)
    result = await Engine(transport, spec, live=feed).run()
    feed.finish("done", 0)
    intervals = [r for r in lines(path) if r["t"] == "interval"]
    assert sum(r["timeouts"] for r in intervals) == result.recorder.timeouts > 0
    marked = [r for r in intervals if "max" in r["stages"]["end_to_end"].get("at_least", [])]
    assert marked and all(r["timeouts"] for r in marked)
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    full = LiveFeed(Path("/dev/full"), RunSpec(queue="q", schedule=Constant(50), duration_s=0.5),
                    broker="memory://full", broker_kind="memory")
    assert full.error is not None and "/dev/full" in full.error
    spec2 = RunSpec(queue="q", schedule=Constant(50), duration_s=0.5)
    result2 = await Engine(open_transport(parse_broker_url("memory://full"), "q", spec2.run_id), spec2,
                           live=full).run()
    assert result2.sent == 25 and result2.recorder.replied == 25


def test_prune_keeps_the_newest_and_never_an_out_directory(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    outs = []
    for i in range(KEEP_RUNS + 5):
        if i % 2:
            out = tmp_path / f"out-{i}"
            out.mkdir()
            (out / "summary.json").write_text("{}")
            (out / FEED_NAME).write_text("")
            (runs / f"run-{i}").symlink_to(out)
            outs.append(out)
        else:
            (runs / f"run-{i}").mkdir()
            (runs / f"run-{i}" / FEED_NAME).write_text("")
        os.utime(runs / f"run-{i}" / FEED_NAME, (1_000_000 + i, 1_000_000 + i))
    prune(runs)
    kept = sorted(p.name for p in runs.iterdir())
    assert len(kept) == KEEP_RUNS and "run-0" not in kept and f"run-{KEEP_RUNS + 4}" in kept
    assert all(out.is_dir() and (out / "summary.json").exists() for out in outs)  # links go, never their target
    assert latest_feed(runs) == runs / f"run-{KEEP_RUNS + 4}" / FEED_NAME


def test_the_runs_directory_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QDECK_RUNS_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert runs_dir() == tmp_path / "qdeck" / "runs"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runs_dir().name == "runs" and runs_dir().parent.name == f"qdeck-{os.getuid()}"
