"""What ``qdeck dlq`` and the console's action dialog share: how a dry run and a ledger read (one renderable), and
where an action's journal lives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.safe_text import json_text, preview_bytes, safe
from probes.dlq.codec import header_line, record_to_json
from probes.dlq.engine import Action, Report
from probes.dlq.journal import Journal, journal_path
from probes.dlq.model import Record
from probes.dlq.selection import Selection
from probes.urls import BrokerTarget

VERBS = {"redrive": "redriven", "move": "moved", "purge": "purged", "delete": "deleted", "export": "exported"}


def report_view(report: Report) -> Group:
    """A dry run's plan or an action's ledger, as the CLI prints it and the console's dialog shows it."""
    out: list[RenderableType] = []
    ledger, action = report.ledger, report.action
    would = action.dry_run and action.kind != "export"
    head = (f"dry run: {ledger.selected:,} of {ledger.examined:,} messages in {safe(report.source, 120)} would be "
            f"{VERBS[action.kind]}" if would else f"{action.kind} {safe(report.source, 120)}: {ledger.selected:,} "
            f"of {ledger.examined:,} messages selected ({safe(report.selection.describe(), 200)})")
    out.append(Text(head, style="bold"))
    if ledger.reasons:
        out.append(_counts("reason", "messages", ledger.reasons))
    if ledger.destinations:
        out.append(_counts("destination", "would go there" if would else "moved", ledger.destinations))
    if report.samples:
        t = Table(box=None, header_style="bold", pad_edge=False, title="first messages", title_justify="left")
        for col in ("id", "reason", "to", "body"):
            t.add_column(col, overflow="fold")
        for p in report.samples:
            to = (str(p.place) + (" (parked)" if p.parked else "")) if p.place else f"skipped: {p.why}"
            t.add_row(safe(p.record.id, 60), safe(p.record.reason or "-", 60), safe(to, 160),
                      preview_bytes(p.record.body, 80))
        out.append(t)
    for place, problems in report.problems.items():
        for problem in problems:
            out.append(Text(f"! {safe(place, 120)}: {safe(problem, 300)}", style="yellow"))
    out.append(Text(ledger_line(report), style="bold" if ledger.adds_up() else "bold red"))
    for why, n in ledger.skip_reasons.most_common():
        out.append(Text(f"  skipped {n:,}: {safe(why, 300)}", style="yellow"))
    for why, n in ledger.fail_reasons.most_common():
        out.append(Text(f"  failed {n:,}: {safe(why, 300)}", style="red"))
    if ledger.resumed or ledger.possible_duplicates:
        out.append(Text(f"  resumed: {ledger.resumed:,} confirmed by the interrupted run were removed without "
                        f"sending them again; {ledger.possible_duplicates:,} were in flight then and may have "
                        "arrived twice (qdeck-redrive-id tells them apart)", style="yellow"))
    if report.unsettled:
        out.append(Text(f"  {report.unsettled:,} confirmed at their destination are still in the source: the same "
                        "command removes them without sending them again", style="yellow"))
    if would:
        out.append(Text("nothing was changed: add --yes to do it", style="dim"))
    if ledger.interrupted:
        out.append(Text("interrupted: run the same command again to go on (the journal knows what was done)",
                        style="yellow"))
    return Group(*out)


def ledger_line(report: Report) -> str:
    """``selected N = moved M + skipped S + failed F``: the count identity every action ends with."""
    ledger, kind = report.ledger, report.action.kind
    if kind in ("purge", "delete"):
        done = f"deleted {ledger.deleted:,}"
    elif kind == "export":
        done = f"exported {ledger.exported:,}"
    else:
        done = f"moved {ledger.moved:,}" + (f" (parked {ledger.parked:,})" if ledger.parked else "")
    sums = "" if ledger.adds_up() else "  ← does not add up"
    return f"selected {ledger.selected:,} = {done} + skipped {ledger.skipped:,} + failed {ledger.failed:,}{sums}"


def _counts(what: str, count: str, counter: Counter[str]) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False)
    t.add_column(what)
    t.add_column(count, justify="right")
    for key, n in counter.most_common():
        t.add_row(safe(key, 160), f"{n:,}")
    return t


def make_journal(target: BrokerTarget, source: str, action: Action, selection: Selection) -> Journal:
    """The journal of this action (the same command, or the same dialog, finds it again and resumes)."""
    path = journal_path(target.display, action.kind, source, str(action.to or "origin"), selection.describe())
    return Journal(path, lambda doc: json_text(doc, indent=None),
                   {"action": action.kind, "broker": target.display, "source": source,
                    "to": str(action.to) if action.to else None, "selection": selection.describe(),
                    "started": datetime.now(UTC).isoformat()})


def start_export(stream: IO[str], target: BrokerTarget, source: str) -> Callable[[Record], None]:
    """Write an export's first line (what it is, from where, when) to ``stream``; the writer of each record's line.
    Every line passes the one sanitiser (``json_text``: ASCII only)."""
    stream.write(json_text(header_line(target.kind, target.display, source, datetime.now(UTC)), indent=None) + "\n")

    def write(r: Record) -> None:
        stream.write(json_text(record_to_json(r), indent=None) + "\n")

    return write
