"""``qdeck dlq list`` and ``qdeck dlq peek``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich.text import Text

from console.output import emit_json, stdout_console, warn
from console.queue_filter import dead_letter_queues
from console.render import dlq_table, peek_view
from console.runner import brokers_option, cli_errors, fail, one_broker, run_probe, run_probes
from console.safe_text import TABLE_PREVIEW_BYTES
from probes import ConfigError, resolve_broker
from probes.dlq.selection import parse_age
from probes.models import PEEK_BODY_BYTES, PeekFrom
from probes.paging import RABBITMQ_NEWEST_MAX, cursor_token, parse_cursor, start_problem
from probes.serialize import to_jsonable

app = typer.Typer(help="Dead-letter queues: which exist, what feeds them, and what is in them.",
                  no_args_is_help=True)


@app.command("list")
@cli_errors
def list_(
    broker: list[str] = brokers_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List dead-letter queues (bound to a dead-letter exchange, or named like one) with counts and sources."""
    snapshots = run_probes(broker, lambda p: p.snapshot())
    dlqs, feeders = dead_letter_queues((s.broker, q) for s in snapshots for q in s.queues)
    notes = [note for s in snapshots for note in s.notes]
    if as_json:
        doc: dict[str, object] = {"dead_letter_queues": [
            {"broker": b, "queue": q, "fed_by": feeders.get((b, q.name), [])} for b, q in dlqs], "notes": notes}
        if len(snapshots) == 1:
            doc = {"broker": snapshots[0].broker, **doc}
        emit_json(doc)
        return
    out = stdout_console()
    if dlqs:
        out.print(dlq_table(dlqs, feeders, label_broker=len(snapshots) > 1))
    else:
        out.print(Text("no dead-letter queues found", style="dim"))
    for note in notes:
        warn(note)


@app.command("peek")
@cli_errors
def peek(
    queue: str = typer.Argument(..., help="The dead-letter queue (or any queue) to read."),
    count: int = typer.Option(10, "-n", "--count", min=1, max=10_000, help="How many messages to read (a page)."),
    broker: list[str] = brokers_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (bodies as text, or base64 when binary)."),
    body_bytes: int | None = typer.Option(
        None, "--body-bytes", min=0,
        help=f"Bytes of each body to show: table default {TABLE_PREVIEW_BYTES}, --json default {PEEK_BODY_BYTES:,}; "
             "0 = the whole body (in JSON as text, or base64 when binary)."),
    force: bool = typer.Option(False, "--force",
                               help="Peek a quorum queue with a delivery limit although each peek counts as a "
                                    "delivery (repeated peeks can dead-letter or drop messages)."),
    newest: bool = typer.Option(False, "--newest",
                                help="Newest first (Kafka: partitions merged by record time; Redis lists: from the "
                                     f"tail; RabbitMQ: reads the whole queue, at most {RABBITMQ_NEWEST_MAX:,})."),
    after: str | None = typer.Option(None, "--after", metavar="CURSOR",
                                     help="The next page: the cursor the last peek printed ('next page: --after "
                                          "...'); it fixes where and which way, so give it alone."),
    partition: int | None = typer.Option(None, "--partition", min=0, help="Kafka: this partition only."),
    offset: int | None = typer.Option(None, "--offset",
                                      help="Kafka: from this offset in each partition read (negative: that many "
                                           "before the end)."),
    since: str | None = typer.Option(None, "--since", metavar="TIME",
                                     help="Kafka, Redis streams: from this time on (ISO 8601, UTC unless it says; "
                                          "or an age: 90s, 15m, 2h, 3d)."),
    group: str | None = typer.Option(None, "--group",
                                     help="Kafka: from the group's committed offsets; Redis streams: after its "
                                          "last-delivered entry (what the group has not read yet)."),
    pending: str | None = typer.Option(None, "--pending", metavar="GROUP",
                                       help="Redis streams: GROUP's pending entries (delivered, not acknowledged) "
                                            "with consumer, idle time and delivery count, oldest first."),
    read_only: bool = typer.Option(False, "--read-only",
                                   help="Refuse anything with a side effect: on RabbitMQ, where a peek requeues the "
                                        "messages it reads, the peek is refused."),
) -> None:
    """Show messages with their x-death reason, count, original queue/exchange/routing key, death times,
    headers and a body preview, a page at a time: the end prints the cursor of the next page.

    RabbitMQ: the management API cannot read without taking; qdeck reads with requeue, so messages go back in
    order but are marked redelivered. It never uses an ack mode that removes messages. It cannot seek either:
    page N takes every message before it again (the note says how many).
    """
    if not queue.strip():
        raise fail("the queue name is empty")
    spec = one_broker(broker, "dlq peek")
    start = PeekFrom(newest=newest, partition=partition, offset=offset,
                     since=None if since is None else parse_since(since), group=group, pending=pending,
                     after=None if after is None else parse_cursor(after))
    problem = start_problem(resolve_broker(spec).kind, queue, start)  # before connecting: the one rule
    if problem is not None:
        raise fail(problem)
    fetch = None if body_bytes == 0 else (body_bytes or PEEK_BODY_BYTES)
    result = run_probe(spec, lambda p: p.peek(queue, count, force=force, body_bytes=fetch, start=start),
                       read_only=read_only)
    if as_json:
        doc = to_jsonable(result)
        doc["next"] = cursor_token(result.next) if result.next is not None else None
        emit_json(doc)
        return
    if result.side_effect:
        warn(result.side_effect)
    for note in result.notes:
        warn(note)
    stdout_console().print(peek_view(result, body_bytes if body_bytes is not None else TABLE_PREVIEW_BYTES))


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (UTC unless it names a zone) or an age before now (90s, 15m, 2h, 3d)."""
    try:
        when = (now or datetime.now(UTC)) - timedelta(seconds=parse_age(text, "--since"))
    except ConfigError:  # not an age: a time
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise fail(f"--since {text!r} is neither a time (2026-05-01T10:00:00Z; UTC unless it says) nor an age "
                       "(90s, 15m, 2h, 3d)") from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    if when.year < 1970:
        raise fail(f"--since {text!r} is before 1970")
    return when
