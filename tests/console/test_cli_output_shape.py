"""CLI output for scripts: piped tables never wrap or cut a cell, ``-f`` filters the JSON too, ``-b`` twice takes
both brokers, ``--watch`` off a terminal writes each frame as it is made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from console.cli import app
from probes.fake import FAKE_BROKERS, FakeBroker
from probes.models import QueueStats

runner = CliRunner()
LONG = "inference.requests.embeddings-multilingual-e5-large.tenant-0042.priority-high.retry"


def _q(label: str, name: str, depth: int, **kw: object) -> QueueStats:
    return QueueStats(f"memory://{label}", name, "queue", depth, 0, 1, 1.0, 1.0, kw.pop("dlt", None),  # type: ignore[arg-type]
                      bool(kw.pop("dlq", False)), **kw)  # type: ignore[arg-type]


@pytest.fixture
def two() -> Iterator[None]:
    FAKE_BROKERS["one"] = FakeBroker(queues=[
        _q("one", LONG, 5, dlt=LONG + ".dead-letter-exchange", dead_letter_queues=(LONG + ".dlq",)),
        _q("one", LONG + ".dlq", 1, dlq=True), _q("one", "other", 2)])
    FAKE_BROKERS["two"] = FakeBroker(queues=[_q("two", "emb.two", 7)])
    yield
    FAKE_BROKERS.pop("one", None)
    FAKE_BROKERS.pop("two", None)


@pytest.mark.parametrize("args", [["queues"], ["dlq", "list"]])
def test_piped_tables_never_wrap_or_cut_a_cell(two: None, args: list[str]) -> None:
    r = runner.invoke(app, [*args, "-b", "memory://one"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(LONG + ".dlq" in line for line in lines), r.output  # whole, on one line
    header = next(line for line in lines if "CONSUMERS" in line)
    if args == ["queues"]:
        assert "DEAD-LETTERS TO" in header and any(LONG + ".dead-letter-exchange" in line for line in lines)
    assert not any(line.strip().startswith(("RS TO", "ange", "lq")) for line in lines), r.output


def test_filter_applies_to_the_json_snapshot(two: None) -> None:
    r = runner.invoke(app, ["queues", "-b", "memory://one", "-f", "other", "--json"])
    data = json.loads(r.output)
    assert [q["name"] for q in data["queues"]] == ["other"]
    assert LONG not in r.output, "the unfiltered snapshot is embedded"


def test_broker_given_twice_takes_both(two: None) -> None:
    r = runner.invoke(app, ["queues", "-b", "memory://one", "-b", "memory://two", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["queues"]
    assert {(q["broker"], q["name"]) for q in rows} >= {("memory://one", "other"), ("memory://two", "emb.two")}
    table = runner.invoke(app, ["queues", "-b", "memory://one", "-b", "memory://two"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if "emb.two" in line)
    assert "memory://two" in row
    lag = runner.invoke(app, ["lag", "-b", "memory://one", "-b", "memory://two", "--json", "-i", "0"])
    assert {r["broker"] for r in json.loads(lag.output)["lag"]} == {"memory://one", "memory://two"}
    dlq = runner.invoke(app, ["dlq", "list", "-b", "memory://one", "-b", "memory://two", "--json"])
    assert dlq.exit_code == 0, dlq.output
    peek = runner.invoke(app, ["dlq", "peek", "x", "-b", "memory://one", "-b", "memory://two"])
    assert peek.exit_code == 2 and "one broker" in peek.output


def test_watch_piped_writes_each_frame(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "queues", "--watch", "0.5", "-b",
                                 "memory://watched"], stdout=sink, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and out.read_bytes().count(b"queues shown") < 2:
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(10)
    assert out.read_bytes().count(b"queues shown") >= 2, out.read_bytes()
