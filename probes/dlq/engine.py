"""The one loop of every dead-letter action, broker-free: read, select, decide, publish confirmed, journal, remove.

``run_action`` never removes a message before its destination confirmed it (house rule 15), counts every selected
message once (``selected = moved + skipped + failed``, or ``deleted`` / ``exported``), and stops cleanly between
batches when ``stop`` is set (Ctrl-C): what it holds is released, the ledger says it was interrupted, and the
journal lets the same command resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from probes.dlq.journal import Journal
from probes.dlq.model import Ledger, Place, Record
from probes.dlq.provenance import DEFAULT_MAX_REDRIVES, is_looping, redrive_headers
from probes.dlq.rate import TokenBucket
from probes.dlq.selection import Selection
from probes.dlq.store import DeadLetterStore
from probes.dlq.writes import require_write

ActionKind = Literal["redrive", "move", "purge", "delete", "export"]
WRITES: dict[str, str] = {"redrive": "redrive messages", "move": "move messages", "purge": "purge messages",
                          "delete": "delete messages"}


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    to: Place | None = None  # move: the destination; redrive: overrides each message's origin
    max_redrives: int = DEFAULT_MAX_REDRIVES
    dry_run: bool = True  # redrive, move, purge, delete: print what would happen, change nothing
    force: bool = False  # write although the pre-flight found a problem at the destination
    rate: float | None = None  # messages per second (token bucket); None: as fast as the broker confirms
    batch: int = 500
    samples: int = 5  # the first few selected messages, shown by the dry run and the ledger


@dataclass(frozen=True)
class Planned:
    record: Record
    place: Place | None  # None: skipped (``why``)
    why: str | None = None
    parked: bool = False


@dataclass
class Report:
    action: Action
    source: str
    selection: Selection
    ledger: Ledger = field(default_factory=Ledger)
    samples: list[Planned] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # str(place) -> pre-flight problems
    total: int | None = None  # messages in the source when it started, where the broker says
    unsettled: int = 0  # confirmed at the destination, not yet out of the source: the next run removes them

    @property
    def expected(self) -> int | None:
        """How many messages this run will go through (the progress bar's total): the source's count, capped by
        --max; None when neither is known."""
        cap = self.selection.max
        if cap is None:
            return self.total
        return cap if self.total is None else min(self.total, cap)

    @property
    def progressed(self) -> int:
        """How far it is towards ``expected``: messages selected under --max, else messages read."""
        return self.ledger.selected if self.selection.max is not None else self.ledger.examined


Progress = Callable[[Report], None]


async def run_action(store: DeadLetterStore, action: Action, selection: Selection, *,
                     journal: Journal | None = None, stop: asyncio.Event | None = None,
                     progress: Progress | None = None,
                     on_export: Callable[[Record], None] | None = None) -> Report:
    """Run ``action`` on ``store``'s source (connected). The dry run reads, selects and plans, and releases every
    message as it was."""
    report = Report(action, store.source, selection)
    ledger = report.ledger
    if not action.dry_run and action.kind in WRITES:
        require_write(store.target, f"{WRITES[action.kind]} in {store.source}")
    report.total = await store.count()
    bucket = TokenBucket(action.rate, burst=max(action.rate / 10, 1.0)) if action.rate else None
    checked: dict[Place, list[str]] = {}
    ensured: set[Place] = set()
    stop = stop or asyncio.Event()
    taken = 0

    async def problems_at(place: Place) -> list[str]:
        if place not in checked:
            checked[place] = await store.preflight(place)
            if checked[place]:
                report.problems[str(place)] = checked[place]
        return checked[place]

    reader = store.read(action.batch)
    try:
        async for batch in reader:
            keep: list[Record] = []  # released at the end of the batch (not selected, skipped, failed, dry run)
            chosen: list[Record] = []
            for r in batch:
                ledger.examined += 1
                if (selection.max is not None and taken >= selection.max) or not selection.selects(r):
                    keep.append(r)
                    continue
                taken += 1
                ledger.selected += 1
                ledger.reasons[r.reason or "unknown"] += 1
                chosen.append(r)
            if action.kind in ("redrive", "move"):
                await _move(store, action, report, chosen, keep, journal, problems_at, ensured, bucket)
            elif action.kind in ("purge", "delete"):
                for r in chosen[:max(action.samples - len(report.samples), 0)]:
                    report.samples.append(Planned(r, None, "deleted"))
                if action.dry_run:
                    ledger.deleted += len(chosen)
                    keep.extend(chosen)
                elif chosen:
                    if bucket is not None:
                        await bucket.take(len(chosen))
                    await store.delete(chosen)
                    ledger.deleted += len(chosen)
            else:  # export
                for r in chosen:
                    if on_export is not None:
                        on_export(r)
                    ledger.exported += 1
                keep.extend(chosen)
            if keep:
                await store.release(keep)
            if progress is not None:
                progress(report)
            if stop.is_set():
                ledger.interrupted = True
                break
            if selection.max is not None and taken >= selection.max:
                break
    finally:
        aclose = getattr(reader, "aclose", None)
        if aclose is not None:
            await aclose()
    if journal is not None and not action.dry_run and not ledger.interrupted and not report.unsettled:
        journal.finish({"moved": ledger.moved, "skipped": ledger.skipped, "failed": ledger.failed})
    return report


async def _move(store: DeadLetterStore, action: Action, report: Report, chosen: Sequence[Record],
                keep: list[Record], journal: Journal | None, problems_at: Callable[[Place], Any],
                ensured: set[Place], bucket: TokenBucket | None) -> None:
    ledger = report.ledger
    send: list[tuple[Record, Place, dict[str, Any]]] = []
    parked_sent: list[bool] = []  # per ``send``: sent to the parked place
    again: list[Record] = []  # confirmed by an interrupted run: remove, do not send again
    planned: dict[Place, int] = {}  # moved without a publish now (a dry run, a resume), per destination
    found: dict[Place, list[str]] = {}  # this batch's pre-flight answers (``problems_at`` asks once per place)
    counts = action.kind == "redrive"
    for r in chosen:
        place, why, parked = _decide(store, action, r)
        if place is not None and not parked:
            problems = found.get(place)
            if problems is None:
                problems = found[place] = await problems_at(place)
            if problems and not action.force:
                place, why = None, f"{place}: {problems[0]} (--force sends anyway)"
        if len(report.samples) < action.samples:
            report.samples.append(Planned(r, place, why, parked))
        if place is None:
            ledger.skip(why or "skipped")
            keep.append(r)
            continue
        if action.dry_run:
            planned[place] = planned.get(place, 0) + 1
            ledger.parked += parked
            keep.append(r)
            continue
        if journal is not None and journal.take_pending(r.identity):
            again.append(r)
            ledger.resumed += 1
            planned[place] = planned.get(place, 0) + 1
            continue
        if parked and place not in ensured:
            await store.ensure(place)
            ensured.add(place)
        if journal is not None and journal.take_in_flight(r.identity):
            ledger.possible_duplicates += 1
        send.append((r, place, redrive_headers(r, count=counts)))
        parked_sent.append(parked)
    _count_moved(ledger, planned)
    if action.dry_run or not (send or again):
        return
    if bucket is not None and send:
        await bucket.take(len(send))
    done: list[Record] = []
    # An atomic store's publish is its remove (one transaction): no message can be confirmed and still in the
    # source, or sent twice by a resumed run, so its moves are not journaled (3 fsyncs a batch saved).
    steps = journal if journal is not None and not store.atomic else None
    if send:
        if steps is not None:
            steps.intent(r.identity for r, _p, _h in send)
        results = await store.publish(send)
        moved: dict[Place, int] = {}
        for (r, place, _h), parked, why in zip(send, parked_sent, results, strict=True):
            if why is None:
                done.append(r)
                ledger.parked += parked
                moved[place] = moved.get(place, 0) + 1
            else:
                ledger.fail(why)
                keep.append(r)
        _count_moved(ledger, moved)
        if steps is not None and done:
            steps.published(r.identity for r in done)
    to_remove = again + ([] if store.atomic else done)
    gone = list(await store.remove(to_remove)) if to_remove else []
    if store.atomic:
        gone += done
    if steps is not None and gone:
        steps.removed(r.identity for r in gone)
    report.unsettled += len(done) + len(again) - len(gone)


def _count_moved(ledger: Ledger, per_place: dict[Place, int]) -> None:
    for place, n in per_place.items():
        ledger.moved += n
        ledger.destinations[str(place)] += n


def _decide(store: DeadLetterStore, action: Action, r: Record) -> tuple[Place | None, str | None, bool]:
    """Where ``r`` goes: (place, None, parked), or (None, why it is skipped, False)."""
    if action.kind == "move":
        return action.to, None, False
    place = action.to or r.origin
    if place is None:
        return None, "origin unknown (--to QUEUE sends them somewhere)", False
    if is_looping(r, action.max_redrives):
        parked = store.parked()
        if parked is None:
            return None, (f"redriven {r.redrives} times already (--max-redrives {action.max_redrives}); "
                          "left where it is"), False
        return parked, f"redriven {r.redrives} times already", True
    return place, None, False
