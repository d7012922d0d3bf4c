"""``qdeck dlq list`` and ``qdeck dlq peek``."""

from __future__ import annotations

import typer
from rich.text import Text

from console.output import emit_json, stdout_console, warn
from console.queue_filter import dead_letter_queues
from console.render import dlq_table, peek_view
from console.runner import brokers_option, cli_errors, fail, one_broker, run_probe, run_probes
from console.safe_text import TABLE_PREVIEW_BYTES
from probes.models import PEEK_BODY_BYTES

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
    count: int = typer.Option(10, "-n", "--count", min=1, max=10_000, help="How many messages to read."),
    broker: list[str] = brokers_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (bodies as text, or base64 when binary)."),
    body_bytes: int | None = typer.Option(
        None, "--body-bytes", min=0,
        help=f"Bytes of each body to show: table default {TABLE_PREVIEW_BYTES}, --json default {PEEK_BODY_BYTES:,}; "
             "0 = the whole body (in JSON as text, or base64 when binary)."),
    force: bool = typer.Option(False, "--force",
                               help="Peek a quorum queue with a delivery limit although each peek counts as a "
                                    "delivery (repeated peeks can dead-letter or drop messages)."),
) -> None:
    """Show messages with their x-death reason, count, original queue/exchange/routing key, death times,
    headers and a body preview.

    RabbitMQ: the management API cannot read without taking; qdeck reads with requeue, so messages go back in
    order but are marked redelivered. It never uses an ack mode that removes messages.
    """
    if not queue.strip():
        raise fail("the queue name is empty")
    fetch = None if body_bytes == 0 else (body_bytes or PEEK_BODY_BYTES)
    result = run_probe(one_broker(broker, "dlq peek"), lambda p: p.peek(queue, count, force=force, body_bytes=fetch))
    if as_json:
        emit_json(result)
        return
    if result.side_effect:
        warn(result.side_effect)
    stdout_console().print(peek_view(result, body_bytes if body_bytes is not None else TABLE_PREVIEW_BYTES))
