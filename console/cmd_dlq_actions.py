"""``qdeck dlq redrive | move | purge | delete | export | import``: fix dead letters on RabbitMQ, Kafka and Redis.

Redrive, move, purge and delete are dry runs unless ``--yes``: they print what would happen and change nothing.
Every write needs a profile with ``allow_write = true`` (probes/dlq/writes.py). The loop itself is
probes/dlq/engine.py; this module parses the words, shows progress, prints the ledger and picks the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from console.dlq_report import make_journal, report_view, start_export
from console.output import emit_json, stderr_console, stdout_console, warn
from console.runner import broker_option, cli_errors, fail
from console.safe_text import safe
from probes import BrokerTarget, ConfigError, ProbeError, redact_text, resolve_broker
from probes.dlq.codec import check_header, record_from_json
from probes.dlq.engine import WRITES, Action, Report, run_action
from probes.dlq.journal import Journal
from probes.dlq.model import Record
from probes.dlq.provenance import DEFAULT_MAX_REDRIVES
from probes.dlq.rate import TokenBucket, parse_rate
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.dlq.writes import require_write

EXIT_NOT_DONE = 1  # something failed, or the counts do not add up
EXIT_INTERRUPTED = 130
IMPORT_BATCH = 500

# ---- the options every action shares ------------------------------------------------------------------------------


def _reason() -> Any:
    return typer.Option([], "--reason", help="Only messages that died for this reason (rejected, expired, maxlen, "
                                             "delivery_limit, an exception's text); repeat for several.")


def _older() -> Any:
    return typer.Option(None, "--older-than", metavar="AGE", help="Only messages that died (else were produced) at "
                                                                  "least AGE ago: 30s, 15m, 2h, 7d.")


def _newer() -> Any:
    return typer.Option(None, "--newer-than", metavar="AGE", help="Only messages that died (else were produced) at "
                                                                  "most AGE ago.")


def _header() -> Any:
    return typer.Option([], "--header", metavar="NAME=VALUE", help="Only messages with this header value; repeat: "
                                                                  "all must match.")


def _match() -> Any:
    return typer.Option(None, "--match", metavar="REGEX", help="Only messages whose body matches this regular "
                                                              "expression (searched, on the raw bytes).")


def _ids() -> Any:
    return typer.Option([], "--id", metavar="ID", help="Only these messages (the ids `qdeck dlq peek` and exports "
                                                      "show); repeat for several.")


def _max() -> Any:
    return typer.Option(None, "--max", min=1, metavar="N", help="At most N messages.")


def _rate() -> Any:
    return typer.Option(None, "--rate", metavar="N/s", help="At most N messages a second (a token bucket). Default: "
                                                           "as fast as the broker confirms.")


def _yes() -> Any:
    return typer.Option(False, "--yes", "-y", help="Do it. Without --yes nothing changes: the dry run prints the "
                                                   "counts by reason and destination and the first few messages.")


def _force() -> Any:
    return typer.Option(False, "--force", help="Write even where the pre-flight found a problem (the destination is "
                                               "missing, has no consumer, or routes straight back here); RabbitMQ: "
                                               "read a quorum queue that has a delivery limit (each read counts as a "
                                               "delivery).")


def _read_only() -> Any:
    return typer.Option(False, "--read-only", help="Refuse every write whatever the profile says (and RabbitMQ "
                                                   "reads, which requeue).")


def _json() -> Any:
    return typer.Option(False, "--json", help="Print the report (dry run or ledger) as JSON.")


def selection_of(reason: list[str], older_than: str | None, newer_than: str | None, header: list[str],
                 match: str | None, ids: list[str], max_n: int | None) -> Selection:
    return Selection.parse(reasons=reason, older_than=older_than, newer_than=newer_than, headers=header,
                           match=match, ids=ids, max_n=max_n)


def target_of(broker: str | None, read_only: bool) -> BrokerTarget:
    target = resolve_broker(broker)
    return dataclasses.replace(target, read_only=True) if read_only else target


# ---- running one action --------------------------------------------------------------------------------------------


def run(target: BrokerTarget, source: str, action: Action, selection: Selection, *, as_json: bool,
        to_name: str | None = None, options: dict[str, Any] | None = None,
        on_export: Callable[[Record], None] | None = None, quiet: bool = False) -> Report:
    """Open the store, resolve ``to_name``, journal a real move, run, and always close; errors scrubbed."""

    async def go() -> Report:
        stop = asyncio.Event()
        store = open_store(target, source, force=action.force, **(options or {}))
        with _stop_on_ctrl_c(stop):
            async with store:
                act = action
                if not act.dry_run and act.kind in WRITES:  # before a journal is made for a run that cannot write
                    require_write(target, f"{WRITES[act.kind]} in {source}")
                if to_name is not None:
                    act = dataclasses.replace(action, to=await store.resolve(to_name))
                journal = _journal(target, source, act, selection) if not act.dry_run and act.kind in (
                    "redrive", "move") else None
                try:
                    with _progress(act, quiet or as_json) as progress:
                        return await run_action(store, act, selection, journal=journal, stop=stop,
                                                progress=progress, on_export=on_export)
                finally:
                    if journal is not None:
                        journal.close()

    try:
        return asyncio.run(go())
    except ProbeError as exc:
        raise type(exc)(redact_text(str(exc), target.secrets)) from None


def _journal(target: BrokerTarget, source: str, action: Action, selection: Selection) -> Journal:
    journal = make_journal(target, source, action, selection)
    path = journal.path
    if journal.resuming:
        warn(f"resuming an interrupted {action.kind} from its journal {path}: {sum(journal.pending.values()):,} "
             f"messages confirmed earlier are removed without sending them again; "
             f"{sum(journal.in_flight.values()):,} were in flight and may arrive twice")
    else:
        warn(f"journal: {path} (an interrupted run resumes from it: run the same command again)")
    return journal


@contextlib.contextmanager
def _stop_on_ctrl_c(stop: asyncio.Event) -> Iterator[None]:
    """The first Ctrl-C stops after the batch in hand (the ledger is printed, the journal resumes); a second one
    stops at once."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        if stop.is_set():
            loop.remove_signal_handler(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            return
        stop.set()
        print("qdeck: stopping after the batch in hand (Ctrl-C again stops at once)", file=sys.stderr, flush=True)

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError):  # not the main thread (tests under CliRunner)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


@contextlib.contextmanager
def _progress(action: Action, quiet: bool) -> Iterator[Callable[[Report], None] | None]:
    """A bar with the ETA on a terminal's stderr; nothing otherwise (scripts read the ledger)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    verb = "would " + action.kind if action.dry_run else action.kind
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=stderr_console(), transient=True)
    task: list[Any] = []

    def update(report: Report) -> None:
        total, done = report.expected, report.progressed
        if not task:
            task.append(bar.add_task(f"{verb} {safe(report.source, 40)}", total=total))
        bar.update(task[0], completed=done, total=max(total or 0, done) or None)

    with bar:
        yield update


# ---- what it prints -----------------------------------------------------------------------------------------------


def report_json(report: Report, journal: str | None = None) -> dict[str, Any]:
    ledger = report.ledger
    return {
        "action": report.action.kind, "dry_run": report.action.dry_run, "source": report.source,
        "selection": report.selection.describe(), "examined": ledger.examined, "selected": ledger.selected,
        "moved": ledger.moved, "parked": ledger.parked, "skipped": ledger.skipped, "failed": ledger.failed,
        "deleted": ledger.deleted, "exported": ledger.exported, "resumed": ledger.resumed,
        "possible_duplicates": ledger.possible_duplicates, "unsettled": report.unsettled,
        "adds_up": ledger.adds_up(), "interrupted": ledger.interrupted,
        "by_reason": dict(ledger.reasons), "by_destination": dict(ledger.destinations),
        "skip_reasons": dict(ledger.skip_reasons), "fail_reasons": dict(ledger.fail_reasons),
        "problems": report.problems,
        "first": [{"id": p.record.id, "reason": p.record.reason, "to": str(p.place) if p.place else None,
                   "why": p.why, "parked": p.parked, "size": len(p.record.body)} for p in report.samples],
        "journal": journal,
    }


def print_report(report: Report) -> None:
    stdout_console().print(report_view(report))


def finish(report: Report, as_json: bool) -> None:
    """Print the report and exit: 0 when every selected message is accounted for and none failed; 1 otherwise;
    130 when interrupted."""
    if as_json:
        emit_json(report_json(report))
    else:
        print_report(report)
    if report.ledger.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.ledger.failed or not report.ledger.adds_up():
        raise typer.Exit(EXIT_NOT_DONE)


# ---- the commands -------------------------------------------------------------------------------------------------


@cli_errors
def redrive(
    dlq: str = typer.Argument(..., help="The dead-letter queue, topic, stream, list or RQ failed registry."),
    to: str | None = typer.Option(None, "--to", metavar="QUEUE", help="Send every selected message here instead of "
                                                                      "back where it came from."),
    max_redrives: int = typer.Option(DEFAULT_MAX_REDRIVES, "--max-redrives", min=0,
                                     help="A message already redriven this many times is parked in DLQ.parked "
                                          "instead of going round the loop again."),
    reason: list[str] = _reason(), older_than: str | None = _older(), newer_than: str | None = _newer(),
    header: list[str] = _header(), match: str | None = _match(), ids: list[str] = _ids(), max_n: int | None = _max(),
    rate: str | None = _rate(), yes: bool = _yes(), force: bool = _force(), read_only: bool = _read_only(),
    broker: str | None = broker_option(), as_json: bool = _json(),
) -> None:
    """Send dead letters back where they came from, read from each message's provenance (x-death, Spring's and
    Kafka Connect's DLT headers, the qdeck worker's source field, RQ's origin); unknown origins are skipped.

    Confirmed at the destination before it leaves the DLQ; resumable (a journal); loop-guarded; a dry run unless
    --yes."""
    selection = selection_of(reason, older_than, newer_than, header, match, ids, max_n)
    action = Action("redrive", max_redrives=max_redrives, dry_run=not yes, force=force, rate=parse_rate(rate))
    finish(run(target_of(broker, read_only), _name(dlq, "DLQ"), action, selection, as_json=as_json,
               to_name=_name(to, "--to") if to is not None else None), as_json)


@cli_errors
def move(
    src: str = typer.Argument(..., help="Where the messages are."),
    dst: str = typer.Argument(..., help="Where they go (on the same broker)."),
    reason: list[str] = _reason(), older_than: str | None = _older(), newer_than: str | None = _newer(),
    header: list[str] = _header(), match: str | None = _match(), ids: list[str] = _ids(), max_n: int | None = _max(),
    rate: str | None = _rate(), yes: bool = _yes(), force: bool = _force(), read_only: bool = _read_only(),
    broker: str | None = broker_option(), as_json: bool = _json(),
) -> None:
    """Move messages from SRC to DST, keeping their ids, properties and headers (a dry run unless --yes)."""
    selection = selection_of(reason, older_than, newer_than, header, match, ids, max_n)
    if _name(src, "SRC") == _name(dst, "DST"):
        raise fail("SRC and DST are the same")
    action = Action("move", dry_run=not yes, force=force, rate=parse_rate(rate))
    finish(run(target_of(broker, read_only), src, action, selection, as_json=as_json, to_name=dst), as_json)


@cli_errors
def purge(
    dlq: str = typer.Argument(..., help="The queue to empty (of the selected messages)."),
    reason: list[str] = _reason(), older_than: str | None = _older(), newer_than: str | None = _newer(),
    header: list[str] = _header(), match: str | None = _match(), max_n: int | None = _max(),
    rate: str | None = _rate(), yes: bool = _yes(),
    force: bool = typer.Option(False, "--force", help="RabbitMQ: read a quorum queue that has a delivery limit. "
                                                      "Kafka: delete the records from the log (DeleteRecords) "
                                                      "instead of moving qdeck's position past them."),
    read_only: bool = _read_only(), broker: str | None = broker_option(), as_json: bool = _json(),
) -> None:
    """Delete the selected messages (every message when nothing is selected); a dry run unless --yes."""
    selection = selection_of(reason, older_than, newer_than, header, match, [], max_n)
    action = Action("purge", dry_run=not yes, force=force, rate=parse_rate(rate))
    finish(run(target_of(broker, read_only), _name(dlq, "DLQ"), action, selection, as_json=as_json,
               options={"delete_records": True} if force else None), as_json)


@cli_errors
def delete(
    dlq: str = typer.Argument(..., help="The queue holding the messages."),
    ids: list[str] = typer.Option(..., "--id", metavar="ID", help="The messages to delete (as `qdeck dlq peek` "
                                                                  "shows them); repeat for several."),
    yes: bool = _yes(), force: bool = _force(), read_only: bool = _read_only(), broker: str | None = broker_option(),
    as_json: bool = _json(),
) -> None:
    """Delete messages by id; a dry run unless --yes."""
    selection = selection_of([], None, None, [], None, ids, None)
    action = Action("delete", dry_run=not yes, force=force)
    report = run(target_of(broker, read_only), _name(dlq, "DLQ"), action, selection, as_json=as_json)
    if report.ledger.selected < len(selection.ids) and not as_json:
        warn(f"{len(selection.ids) - report.ledger.selected} of the {len(selection.ids)} ids given were not found "
             f"in {dlq}")
    finish(report, as_json)


@cli_errors
def export(
    dlq: str = typer.Argument(..., help="The queue to export."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE.jsonl", help="Where to write (- for stdout)."),
    reason: list[str] = _reason(), older_than: str | None = _older(), newer_than: str | None = _newer(),
    header: list[str] = _header(), match: str | None = _match(), ids: list[str] = _ids(), max_n: int | None = _max(),
    force: bool = _force(), read_only: bool = _read_only(), broker: str | None = broker_option(),
) -> None:
    """Write the selected messages to a JSON Lines file, exactly: every property, header (types, order) and body
    byte. Nothing is removed (RabbitMQ: the messages are read and requeued, so they come back marked
    redelivered)."""
    selection = selection_of(reason, older_than, newer_than, header, match, ids, max_n)
    target = target_of(broker, read_only)
    source = _name(dlq, "DLQ")
    to_stdout = str(output) == "-"
    partial = output.with_name(output.name + ".partial")
    try:
        stream: IO[str] = sys.stdout if to_stdout else partial.open("w", encoding="ascii")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
    write = start_export(stream, target, source)
    try:
        report = run(target, source, Action("export", dry_run=True, force=force), selection, as_json=False,
                     quiet=to_stdout,
                     on_export=write)
    except BaseException:
        if not to_stdout:
            stream.close()
            partial.unlink(missing_ok=True)
        raise
    if not to_stdout:
        stream.close()
        partial.replace(output)
        print(f"exported {report.ledger.exported:,} messages to {safe(str(output.resolve()), 500)}", file=sys.stderr)
    if report.ledger.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


@cli_errors
def import_(
    file: Path = typer.Argument(..., metavar="FILE.jsonl", help="A file `qdeck dlq export` wrote."),
    to: str = typer.Option(..., "--to", metavar="QUEUE", help="Where to write the messages."),
    rate: str | None = _rate(), read_only: bool = _read_only(), broker: str | None = broker_option(),
    as_json: bool = _json(),
) -> None:
    """Write every message of an export to QUEUE, exactly as exported (properties, headers, body), confirmed.
    The whole file is checked before anything is written."""
    records = read_export(file)
    target = target_of(broker, read_only)
    per_second = parse_rate(rate)

    async def go() -> tuple[int, dict[str, int]]:
        store = open_store(target, _name(to, "--to"))
        async with store:
            place = await store.resolve(to)
            require_write(target, f"import into {to}")
            bucket = TokenBucket(per_second) if per_second else None
            written, failed = 0, dict[str, int]()
            for i in range(0, len(records), IMPORT_BATCH):
                batch = records[i:i + IMPORT_BATCH]
                if bucket is not None:
                    await bucket.take(len(batch))
                for why in await store.write(place, batch):
                    if why is None:
                        written += 1
                    else:
                        failed[why] = failed.get(why, 0) + 1
            return written, failed

    try:
        written, failed = asyncio.run(go())
    except ProbeError as exc:
        raise type(exc)(redact_text(str(exc), target.secrets)) from None
    n_failed = sum(failed.values())
    if as_json:
        emit_json({"file": str(file), "to": to, "records": len(records), "written": written, "failed": n_failed,
                   "fail_reasons": failed})
    else:
        out = stdout_console()
        out.print(Text(f"import {safe(str(file), 300)} → {safe(to, 120)}: {len(records):,} = written {written:,} + "
                       f"failed {n_failed:,}", style="bold" if not n_failed else "bold red"))
        for why, n in sorted(failed.items(), key=lambda kv: -kv[1]):
            out.print(Text(f"  failed {n:,}: {safe(why, 300)}", style="red"))
    if n_failed:
        raise typer.Exit(EXIT_NOT_DONE)


def read_export(file: Path) -> list[Record]:
    """Every record of an export, checked line by line (a bad line names its number: nothing is written)."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file} is not a qdeck export (not UTF-8 text)") from None
    if not lines:
        raise ConfigError(f"{file} is empty")
    records = []
    for n, line in enumerate(lines, 1):
        where = f"{file}:{n}"
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            raise ConfigError(f"{where}: not a JSON line") from None
        if n == 1:
            check_header(doc, where)
        else:
            records.append(record_from_json(doc, where))
    return records


def _name(name: str, what: str) -> str:
    if not name.strip():
        raise fail(f"{what} is empty")
    return name


def register(app: typer.Typer) -> None:
    """Add the action commands to ``qdeck dlq``."""
    app.command("redrive")(redrive)
    app.command("move")(move)
    app.command("purge")(purge)
    app.command("delete")(delete)
    app.command("export")(export)
    app.command("import")(import_)

