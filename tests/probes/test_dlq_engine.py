"""The dead-letter action loop on the in-process store: counts add up, the dry run changes nothing, the loop guard
parks, a refused destination keeps its messages, a journal resumes without sending twice, writes need allow_write."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.dlq.engine import Action, run_action
from probes.dlq.journal import Journal
from probes.dlq.memory_store import CONSUMERS, MEMORY, REFUSE, MemoryStore
from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID
from probes.dlq.selection import Selection
from probes.dlq.writes import ReadOnly
from probes.urls import parse_broker_url

HOST = "engine-test"


def rec(i: int, origin: str | None = "work", reason: str = "rejected", **kw: object) -> Record:
    return Record(id=f"m-{i}", body=f'{{"n": {i}}}'.encode(), headers=(("tenant", "acme"),), reason=reason,
                  origin=Place("queue", origin) if origin else None, **kw)  # type: ignore[arg-type]


@pytest.fixture
def broker() -> Iterator[dict[str, list[Record]]]:
    MEMORY[HOST] = {"work": [], "work.dlq": [rec(i) for i in range(10)] + [rec(10, origin=None)]}
    CONSUMERS[HOST] = {"work"}
    yield MEMORY[HOST]
    MEMORY.pop(HOST, None)
    CONSUMERS.pop(HOST, None)
    REFUSE.pop(HOST, None)


def store(writable: bool = True) -> MemoryStore:
    target = dataclasses.replace(parse_broker_url(f"memory://{HOST}"), allow_write=writable, name="t")
    return MemoryStore(target, "work.dlq")


def encode(doc: object) -> str:
    return json.dumps(doc, ensure_ascii=True)


async def test_dry_run_plans_and_changes_nothing(broker: dict[str, list[Record]]) -> None:
    async with store(writable=False) as s:
        report = await run_action(s, Action("redrive"), Selection())
    ledger = report.ledger
    assert (ledger.selected, ledger.moved, ledger.skipped, ledger.failed) == (11, 10, 1, 0) and ledger.adds_up()
    assert ledger.destinations == {"work": 10} and ledger.skip_reasons and len(report.samples) == 5
    assert len(broker["work.dlq"]) == 11 and broker["work"] == []


async def test_redrive_moves_confirmed_keeps_provenance_and_counts(broker: dict[str, list[Record]]) -> None:
    async with store() as s:
        report = await run_action(s, Action("redrive", dry_run=False), Selection.parse(max_n=4))
    assert (report.ledger.selected, report.ledger.moved) == (4, 4) and report.ledger.adds_up()
    assert [r.id for r in broker["work"]] == ["m-0", "m-1", "m-2", "m-3"]
    moved = broker["work"][0]
    assert moved.header("tenant") == "acme" and moved.header(REDRIVE_ID) == "m-0" and moved.header(REDRIVE_COUNT) == 1
    assert len(broker["work.dlq"]) == 7


async def test_read_only_refuses_every_write(broker: dict[str, list[Record]]) -> None:
    async with store(writable=False) as s:
        with pytest.raises(ReadOnly, match="allow_write = true"):
            await run_action(s, Action("redrive", dry_run=False), Selection())
        with pytest.raises(ReadOnly):
            await run_action(s, Action("purge", dry_run=False), Selection())
    assert len(broker["work.dlq"]) == 11


async def test_loop_guard_parks_after_max_redrives(broker: dict[str, list[Record]]) -> None:
    broker["work.dlq"] = [rec(1, redrives=3, original_id="first-id"), rec(2, redrives=2)]
    async with store() as s:
        report = await run_action(s, Action("redrive", dry_run=False, max_redrives=3), Selection())
    assert report.ledger.parked == 1 and report.ledger.moved == 2
    assert [r.id for r in broker["work.dlq.parked"]] == ["m-1"] and [r.id for r in broker["work"]] == ["m-2"]
    assert broker["work.dlq.parked"][0].header(REDRIVE_ID) == "first-id"


async def test_unroutable_destination_keeps_the_message_and_fails(broker: dict[str, list[Record]]) -> None:
    REFUSE[HOST] = {"work"}
    async with store() as s:
        report = await run_action(s, Action("redrive", dry_run=False), Selection.parse(max_n=3))
    assert (report.ledger.failed, report.ledger.moved) == (3, 0) and report.ledger.adds_up()
    assert len(broker["work.dlq"]) == 11


async def test_preflight_refuses_a_destination_without_consumers_unless_forced(
        broker: dict[str, list[Record]]) -> None:
    CONSUMERS[HOST] = set()
    async with store() as s:
        report = await run_action(s, Action("redrive", dry_run=False), Selection.parse(max_n=2))
        assert report.ledger.skipped == 2 and "nobody consumes it" in next(iter(report.ledger.skip_reasons))
        forced = await run_action(s, Action("redrive", dry_run=False, force=True), Selection.parse(max_n=2))
    assert forced.ledger.moved == 2 and len(broker["work"]) == 2


async def test_a_journal_resumes_without_sending_again(broker: dict[str, list[Record]], tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    # an interrupted run: m-0 and m-1 confirmed at the destination, never removed; m-2 in flight
    j = Journal(path, encode, {"op": "redrive"})
    j.intent(["m-0", "m-1", "m-2"])
    j.published(["m-0", "m-1"])
    j.close()
    broker["work"] = [rec(0), rec(1)]  # they did arrive
    journal = Journal(path, encode, {"op": "redrive"})
    assert journal.resuming
    async with store() as s:
        report = await run_action(s, Action("redrive", dry_run=False), Selection.parse(max_n=3), journal=journal)
    journal.close()
    assert (report.ledger.resumed, report.ledger.possible_duplicates, report.ledger.moved) == (2, 1, 3)
    assert [r.id for r in broker["work"]] == ["m-0", "m-1", "m-2"]  # not twice
    assert not Journal(path, encode, {"op": "redrive"}).resuming  # finished: the next run starts afresh


def test_selection_parses_and_refuses_bad_words() -> None:
    sel = Selection.parse(reasons=["expired"], headers=["tenant=acme"], match=r'"n": [12]\b')
    assert sel.selects(rec(1, reason="expired")) and not sel.selects(rec(3, reason="expired"))
    assert not sel.selects(rec(1, reason="rejected"))
    for bad in ({"older_than": "soon"}, {"headers": ["novalue"]}, {"match": "("}, {"max_n": 0},
                {"older_than": "2h", "newer_than": "1h"}):
        with pytest.raises(Exception) as info:
            Selection.parse(**bad)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)


def test_every_store_takes_the_options_the_cli_passes() -> None:
    """``open_store(..., force=..., delete_records=...)``: each store ignores what is not its own."""
    from probes.dlq.store import open_store

    for url in ("memory://opts", "redis://127.0.0.1:1/0", "amqp://guest:guest@127.0.0.1:1/%2F",
                "kafka://127.0.0.1:1"):
        target = parse_broker_url(url)
        store = open_store(target, "q", force=True, delete_records=True)
        assert store.source == "q"
