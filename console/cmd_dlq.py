"""``qdeck dlq list`` and ``qdeck dlq peek``."""

from __future__ import annotations

import typer
from rich.text import Text

from console.output import emit_json, stderr_console, stdout_console, warn
from console.render import dlq_table, peek_view
from console.runner import broker_option, cli_errors, fail, run_probe
from probes import BrokerSnapshot, QueueStats

app = typer.Typer(help="Dead-letter queues: which exist, what feeds them, and what is in them.",
                  no_args_is_help=True)


def dead_letter_queues(snapshot: BrokerSnapshot) -> tuple[list[QueueStats], dict[str, list[str]]]:
    """The dead-letter queues, and for each the queues that dead-letter into it."""
    feeders: dict[str, list[str]] = {}
    for q in snapshot.queues:
        for target in q.dead_letter_queues:
            feeders.setdefault(target, []).append(q.name)
    dlqs = [q for q in snapshot.queues if q.is_dead_letter or q.name in feeders]
    dlqs.sort(key=lambda q: (-(q.depth + q.in_flight), q.name))
    return dlqs, feeders


@app.command("list")
@cli_errors
def list_(
    broker: str | None = broker_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List dead-letter queues (bound to a dead-letter exchange, or named like one) with counts and sources."""
    snapshot = run_probe(broker, lambda p: p.snapshot())
    dlqs, feeders = dead_letter_queues(snapshot)
    if as_json:
        emit_json({"broker": snapshot.broker, "dead_letter_queues": [
            {"queue": q, "fed_by": feeders.get(q.name, [])} for q in dlqs], "notes": list(snapshot.notes)})
        return
    out = stdout_console()
    if dlqs:
        out.print(dlq_table(dlqs, feeders))
    else:
        out.print(Text("no dead-letter queues found", style="dim"))
    for note in snapshot.notes:
        warn(note)


@app.command("peek")
@cli_errors
def peek(
    queue: str = typer.Argument(..., help="The dead-letter queue (or any queue) to read."),
    count: int = typer.Option(10, "-n", "--count", min=1, max=10_000, help="How many messages to read."),
    broker: str | None = broker_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (bodies as text, or base64 when binary)."),
    body_bytes: int = typer.Option(500, "--body-bytes", min=0, help="Body preview length in the table view."),
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
    result = run_probe(broker, lambda p: p.peek(queue, count, force=force))
    if as_json:
        emit_json(result)
        return
    if result.side_effect:
        stderr_console().print(f"note: {result.side_effect}", style="yellow")
    stdout_console().print(peek_view(result, body_bytes))
