"""Issue 21 item 3: the console shows a load run beside its request queue (``L``, ``qdeck console --run DIR``).

A real ``qdeck load run`` through the shared Redis to a real worker writes its live feed; the console follows it
(the intervals update as the run goes, the queue's depth and consumers come from the console's own polls) to its
end. A run is started from a plan file in the console (``n``) and stopped there (``S``: SIGINT, it writes its
files). Snapshots of the view come from a recorded feed (``loadrun_feed.jsonl``: a real run through the memory
transport, its broker and paths normalised), finished and still running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from console.tui.app import QdeckApp
from console.tui.run_dialog import RunDialog
from loadgen.run.live_feed import FEED_NAME
from probes import parse_broker_url
from tests.console.test_tui_brokers import until
from tests.console.tui_fixtures import demo_app, screen_text
from tests.workers import worker

FEED = Path(__file__).with_name("loadrun_feed.jsonl")
SIZE = (160, 45)




def drop_replies(redis_url: str, run_id: str) -> None:
    """The run's reply stream, should the worker have answered after the run had gone."""
    import redis

    with redis.Redis.from_url(redis_url) as client:
        client.delete(f"qdeck:reply:{run_id}")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")}
    env.update(QDECK_CONFIG="/nonexistent/qdeck-brokers.toml", QDECK_RUNS_DIR=str(tmp_path / "runs"))
    return env


def shown_depth(app: QdeckApp) -> int | None:
    """The depth the view's queue box shows."""
    m = re.search(r"depth ([\d,]+) · in flight", screen_text(app))
    return int(m.group(1).replace(",", "")) if m else None


@pytest.mark.redis
async def test_the_console_follows_a_live_run_beside_its_queue(redis_url: str, redis_queue: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=2", tmp_path=tmp_path):
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "load", "run", "-b", redis_url, "-q",
                                 redis_queue, "--rate", "40", "--duration", "15", "--slo", "p99<1s", "--out", str(out),
                                 "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(tmp_path))
        try:  # the console opens the run's directory before the run has made it: it waits for the feed
            app = QdeckApp([parse_broker_url(redis_url)], interval=0.5, run=out)
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: app.screen.name == "loadrun", what="the load-run view")
                runs = app.runs
                await until(pilot, lambda: runs.run is not None and len(runs.run.series("rate")) >= 2
                            and runs.state() == "running" and "SLOs — the run so far" in screen_text(app),
                            timeout=60, what="two measured intervals on screen")
                assert runs.run is not None
                seen = len(runs.run.intervals)
                text = screen_text(app)
                assert f"run {runs.run.run_id}" in text and "running" in text
                assert "stages (ms) — interval" in text and "SLOs — the run so far" in text and "p99<1s" in text
                e2e = next(line for line in text.splitlines() if line.strip().startswith("end_to_end "))
                assert re.search(r"\d+\.\d\d", e2e), e2e  # the interval's figures, not dashes
                # the request queue from the console's own polls: its depth as the overview has it, and the worker
                label = next(iter(app.states))
                await until(pilot, lambda: any(q.name == redis_queue for q in app.states[label].queues()),
                            timeout=30, what="the request stream in the console's snapshot")
                assert f"request queue {redis_queue}" in screen_text(app)

                def same_depth() -> bool:
                    row = next((q for q in app.states[label].queues() if q.name == redis_queue), None)
                    return row is not None and row.consumers == 1 and shown_depth(app) == row.depth

                await until(pilot, same_depth, timeout=30, what="the queue's depth and consumer beside the run")
                assert "consumers 1 ·" in screen_text(app)
                await until(pilot, lambda: len(runs.run.intervals) > seen, timeout=30, what="a new interval")
                hist = app.states[label].history[redis_queue]
                await until(pilot, lambda: hist.depth[-1] > hist.depth[0], timeout=30,
                            what="the stream's depth growing over the console's polls")
                await until(pilot, lambda: "ended: pass (exit 0)" in screen_text(app), timeout=60,
                            what="the run's last line on screen")
                text = screen_text(app)
                assert "ended: pass (exit 0)" in text and "stages (ms) — whole run" in text
                assert "SLOs — as the run judged them" in text, text
        finally:
            code = proc.wait(60)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    summary = json.loads((out / "summary.json").read_text())
    drop_replies(redis_url, summary["run_id"])
    assert app.runs.run is not None and app.runs.run.end is not None
    assert app.runs.run.end["counts"] == summary["counts"]


@pytest.mark.redis
async def test_a_run_started_and_stopped_from_the_console(redis_url: str, redis_queue: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``n``: a plan file (it names no broker: the run goes to the console's), ``S``: SIGINT, and the run ends as
    interrupted with its files written. A plan with a typo is refused in the dialog, in one line."""
    monkeypatch.setenv("QDECK_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("QDECK_CONFIG", "/nonexistent/qdeck-brokers.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'queue = "{redis_queue}"\nrate = 20\ndurations = "5s"\n')
    plan = tmp_path / "plan.toml"
    plan.write_text(f'queue = "{redis_queue}"\nduration = "120s"\n[schedule]\nkind = "constant"\nrate = 30\n'
                    '[slo]\np99 = "<1s"\n')
    out = tmp_path / "started"
    with worker(redis_url, redis_queue, "--model", "synthetic:base_ms=2", tmp_path=tmp_path):
        app = QdeckApp([parse_broker_url(redis_url)], interval=1.0)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("L")
            await until(pilot, lambda: app.screen.name == "loadrun", what="the load-run view")
            assert "no load run open" in screen_text(app)
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, RunDialog), what="the plan dialog")
            app.screen.query_one("#run-plan").value = str(bad)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await pilot.pause(0.1)
            error = str(app.screen.query_one("#run-dialog-error").render())
            assert "unknown key 'durations' (did you mean 'duration'?)" in error and "\n" not in error
            app.screen.query_one("#run-plan").value = str(plan)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert "qdeck-run-plan-" in app.screen.query_one("#run-out").value  # type: ignore[attr-defined]
            app.screen.query_one("#run-out").value = str(out)  # type: ignore[attr-defined]
            await pilot.press("enter")
            runs = app.runs
            await until(pilot, lambda: runs.launched is not None, what="the run's process")
            assert runs.launched is not None
            await until(pilot, lambda: runs.run is not None and len(runs.run.series("rate")) >= 2
                        and "started here (S stops it)" in screen_text(app), timeout=60,
                        what="the started run's intervals on screen")
            assert runs.run is not None and runs.run.queue == redis_queue
            assert runs.run.broker == parse_broker_url(redis_url).display  # the console's broker
            await pilot.press("S")
            await until(pilot, lambda: "ended: interrupted (exit 130)" in screen_text(app), timeout=60,
                        what="the interrupted run's end on screen")
            assert runs.launched.proc.wait(30) == 130
            text = screen_text(app)
            assert "ended: interrupted (exit 130)" in text and "interrupted (Ctrl-C)" in text
    summary = json.loads((out / "summary.json").read_text())
    drop_replies(redis_url, summary["run_id"])
    assert summary["aborted"] == "interrupted (Ctrl-C)" and summary["counts"]["unsent"] > 0
    assert "run.log" in {p.name for p in out.iterdir()}


@pytest.mark.redis
async def test_quitting_the_console_stops_the_run_it_started(redis_url: str, redis_queue: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDECK_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("QDECK_CONFIG", "/nonexistent/qdeck-brokers.toml")
    plan = tmp_path / "plan.toml"
    plan.write_text(f'broker = "{redis_url}"\nqueue = "{redis_queue}"\nduration = "120s"\nrate = 20\n')
    out = tmp_path / "quit"
    with worker(redis_url, redis_queue, "--model", "echo", tmp_path=tmp_path):
        app = QdeckApp([parse_broker_url(redis_url)], interval=1.0)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("L", "n")
            await until(pilot, lambda: isinstance(app.screen, RunDialog), what="the plan dialog")
            app.screen.query_one("#run-plan").value = str(plan)  # type: ignore[attr-defined]
            await pilot.press("enter")
            app.screen.query_one("#run-out").value = str(out)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: app.runs.run is not None and len(app.runs.run.series("rate")) >= 1,
                        timeout=60, what="the run going")
            launched = app.runs.launched
            assert launched is not None
            await pilot.press("q", "q")  # back to the overview, then quit
        assert launched.proc.wait(60) == 130
    summary = json.loads((out / "summary.json").read_text())
    drop_replies(redis_url, summary["run_id"])
    assert summary["aborted"] == "interrupted (Ctrl-C)"


def _feed(tmp_path: Path, lines: int | None = None) -> Path:
    """The recorded feed, whole or its first ``lines`` (a run still going: its pid made this test's own)."""
    directory = tmp_path / "run"
    directory.mkdir()
    records = FEED.read_text().splitlines()
    if lines is not None:
        start = json.loads(records[0])
        start["pid"] = os.getpid()
        records = [json.dumps(start), *records[1:lines]]
    (directory / FEED_NAME).write_text("\n".join(records) + "\n")
    return directory


@pytest.mark.parametrize(("lines", "size"), [(None, (160, 45)), (None, (80, 24)), (9, (160, 45))],
                         ids=["finished", "finished-80x24", "running"])
def test_snapshots(snap_compare, lines: int | None, size: tuple[int, int], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the view names the feed: "run/live.jsonl", the same on every machine
    app, _broker = demo_app("snap-loadrun")
    app.run_path = _feed(tmp_path, lines).relative_to(tmp_path)

    async def settle(pilot) -> None:
        await until(pilot, lambda: app.runs.run is not None and app.runs.run.start != {}
                    and bool(app.states["memory://snap-loadrun"].queues()), what="the feed and the first poll")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=settle)


async def test_a_feed_is_read_never_trusted(tmp_path: Path) -> None:
    """Lines that are not the feed's are counted and skipped, hostile text stays escaped, and a run whose process
    is gone without its last line says so."""
    directory = _feed(tmp_path, 6)
    feed = directory / FEED_NAME
    start = json.loads(feed.read_text().splitlines()[0])
    start.update(pid=2**22 + 12345, queue="evil\x1b]0;pwned\x07", schedule="\u202econstant")
    body = feed.read_text().splitlines()
    feed.write_text("\n".join([json.dumps(start), *body[1:], "not json", '{"v": 9, "t": "interval"}', "[1, 2]",
                               '{"v": 1, "t": "interval", "end_s": "soon", "stages": {"end_to_end": 5}}']) + "\n")
    app, _broker = demo_app("feed-untrusted")
    app.run_path = directory
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.runs.run is not None and app.runs.run.bad_lines == 3, what="the feed")
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "\x1b" not in text and "\u202e" not in text
        assert "evil\\x1b]0;pwned\\x07" in text and "\\u202econstant" in text
        assert "3 lines of the feed were not qdeck feed lines" in text
        assert "gone after" in text  # no end line, and no such process
