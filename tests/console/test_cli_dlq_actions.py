"""``qdeck dlq redrive | move | purge | delete | export | import`` on the in-process store: the dry run is the
default and changes nothing, writes need a profile with allow_write, the ledger adds up and sets the exit code, an
export imports back exactly, and bad input is one line with exit 2. (Each broker's store is tested on the real
broker in tests/probes/test_dlq_*.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from console.cli import app
from probes.dlq.memory_store import CONSUMERS, MEMORY, REFUSE
from probes.dlq.model import Place, Record

runner = CliRunner()
HOST = "cli-dlq"
NOW = datetime.now(UTC)


def rec(i: int, reason: str = "rejected", origin: str | None = "work", age_s: float = 60.0) -> Record:
    return Record(id=f"m-{i}", body=f'{{"n": {i}, "esc": "\\u001b"}}'.encode() + b"\x1b[2J",
                  headers=(("tenant", "acme"), ("attempt", i), ("raw", b"\x00\xff")),
                  properties={"content_type": "application/json", "delivery_mode": 2, "priority": None},
                  reason=reason, origin=Place("queue", origin) if origin else None,
                  died_at=NOW - timedelta(seconds=age_s), timestamp=NOW - timedelta(seconds=age_s + 5))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    config = tmp_path / "brokers.toml"
    config.write_text(f'[brokers.rw]\nurl = "memory://{HOST}"\nallow_write = true\n'
                      f'[brokers.ro]\nurl = "memory://{HOST}"\n')
    MEMORY[HOST] = {"work": [], "other": [], "work.dlq": [
        *(rec(i) for i in range(6)), rec(6, "expired", age_s=7200), rec(7, origin=None)]}
    CONSUMERS[HOST] = {"work", "other"}
    yield {"QDECK_CONFIG": str(config), "QDECK_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    MEMORY.pop(HOST, None)
    CONSUMERS.pop(HOST, None)
    REFUSE.pop(HOST, None)


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdeck: ") and "Traceback" not in err, err
    return lines[0]


def test_redrive_is_a_dry_run_by_default_and_says_what_would_happen(env: dict[str, str]) -> None:
    code, out, _err = invoke(env, "dlq", "redrive", "work.dlq", "-b", "rw")
    assert code == 0, out
    assert "dry run: 8 of 8 messages in work.dlq would be redriven" in out
    assert "rejected" in out and "expired" in out and "would go there" in out
    assert "selected 8 = moved 7 + skipped 1 + failed 0" in out and "origin unknown" in out
    assert "nothing was changed: add --yes" in out and "\x1b" not in out
    assert len(MEMORY[HOST]["work.dlq"]) == 8 and MEMORY[HOST]["work"] == []


def test_redrive_with_yes_moves_selected_messages_and_journals(env: dict[str, str]) -> None:
    code, out, err = invoke(env, "dlq", "redrive", "work.dlq", "-b", "rw", "--reason", "rejected", "--max", "4",
                            "--yes")
    assert code == 0, out + err
    assert "selected 4 = moved 4 + skipped 0 + failed 0" in out
    assert "journal: " in err and env["QDECK_STATE_DIR"] in err
    assert [r.id for r in MEMORY[HOST]["work"]] == ["m-0", "m-1", "m-2", "m-3"]
    assert len(MEMORY[HOST]["work.dlq"]) == 4


def test_selection_by_age_header_and_body(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "dlq", "redrive", "work.dlq", "-b", "rw", "--older-than", "1h", "--json")
    assert code == 0 and json.loads(out)["selected"] == 1 and json.loads(out)["by_reason"] == {"expired": 1}
    code, out, _ = invoke(env, "dlq", "move", "work.dlq", "other", "-b", "rw", "--match", r'"n": [23],', "--header",
                          "tenant=acme", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["selected"] == 2 and doc["by_destination"] == {"other": 2} and doc["dry_run"]


def test_every_write_is_refused_without_allow_write_or_with_read_only(env: dict[str, str]) -> None:
    for args in (["dlq", "redrive", "work.dlq", "-b", "ro", "--yes"],
                 ["dlq", "purge", "work.dlq", "-b", "ro", "--yes"],
                 ["dlq", "delete", "work.dlq", "--id", "m-1", "-b", "ro", "--yes"],
                 ["dlq", "move", "work.dlq", "other", "-b", "rw", "--read-only", "--yes"],
                 ["dlq", "redrive", "work.dlq", "-b", f"memory://{HOST}", "--yes"]):
        code, out, err = invoke(env, *args)
        assert code == 2, (args, out, err)
        assert "read-only" in one_line(err)
    assert len(MEMORY[HOST]["work.dlq"]) == 8 and MEMORY[HOST]["work"] == [] and MEMORY[HOST]["other"] == []


def test_an_unroutable_destination_keeps_messages_and_exits_1(env: dict[str, str]) -> None:
    REFUSE[HOST] = {"work"}
    code, out, _ = invoke(env, "dlq", "redrive", "work.dlq", "-b", "rw", "--yes", "--reason", "rejected")
    assert code == 1 and "selected 7 = moved 0 + skipped 1 + failed 6" in out and "work: unroutable" in out
    assert len(MEMORY[HOST]["work.dlq"]) == 8


def test_purge_and_delete(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "dlq", "delete", "work.dlq", "--id", "m-1", "--id", "m-2", "--id", "nope", "-b", "rw",
                          "--yes")
    assert code == 0 and "deleted 2" in out
    assert [r.id for r in MEMORY[HOST]["work.dlq"]] == ["m-0", "m-3", "m-4", "m-5", "m-6", "m-7"]
    code, out, _ = invoke(env, "dlq", "purge", "work.dlq", "-b", "rw", "--reason", "expired", "--yes")
    assert code == 0 and "deleted 1" in out and len(MEMORY[HOST]["work.dlq"]) == 5


def test_export_then_import_round_trips_exactly(env: dict[str, str], tmp_path: Path) -> None:
    out_file = tmp_path / "dlq.jsonl"
    code, _out, err = invoke(env, "dlq", "export", "work.dlq", "-b", "rw", "-o", str(out_file))
    assert code == 0 and "exported 8 messages" in err
    text = out_file.read_text()
    assert text.isascii() and "\x1b" not in text and len(text.splitlines()) == 9
    MEMORY[HOST]["restored"] = []
    code, out, _ = invoke(env, "dlq", "import", str(out_file), "--to", "restored", "-b", "rw")
    assert code == 0 and "8 = written 8 + failed 0" in out
    assert [(r.body, r.headers, dict(r.properties)) for r in MEMORY[HOST]["restored"]] == [
        (r.body, r.headers, dict(r.properties)) for r in MEMORY[HOST]["work.dlq"]]
    again = tmp_path / "again.jsonl"
    invoke(env, "dlq", "export", "restored", "-b", "rw", "-o", str(again))
    assert again.read_text().splitlines()[1:] == text.splitlines()[1:]


def test_a_bad_export_is_refused_whole_with_its_line_number(env: dict[str, str], tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    invoke(env, "dlq", "export", "work.dlq", "-b", "rw", "-o", str(good))
    lines = good.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:3], lines[3].replace('"body":', '"bdy":'), *lines[4:]]) + "\n")
    MEMORY[HOST]["restored"] = []
    code, _out, err = invoke(env, "dlq", "import", str(bad), "--to", "restored", "-b", "rw")
    assert code == 2 and f"{bad}:4" in one_line(err) and MEMORY[HOST]["restored"] == []


@pytest.mark.parametrize(("args", "says"), [
    (["--older-than", "soon"], "--older-than takes a duration"),
    (["--rate", "0"], "--rate must be a positive number"),
    (["--match", "("], "--match is not a valid regular expression"),
    (["--header", "novalue"], "--header takes NAME=VALUE"),
    (["--older-than", "2h", "--newer-than", "1h"], "select nothing"),
])
def test_bad_words_are_one_line_and_exit_2(env: dict[str, str], args: list[str], says: str) -> None:
    code, _out, err = invoke(env, "dlq", "redrive", "work.dlq", "-b", "rw", "--yes", *args)
    assert code == 2 and says in one_line(err)
    assert len(MEMORY[HOST]["work.dlq"]) == 8
