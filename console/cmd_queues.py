"""``qdeck queues`` and ``qdeck consumers``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from console.output import emit_json, is_terminal, stdout_console
from console.poller import DEFAULT_TIMEOUT_S, Poller, PollResult, resolve_targets
from console.queue_filter import FILTER_HELP, Only, SortField, select_queues
from console.render import consumers_table, snapshot_view
from console.runner import brokers_option, cli_errors, fail, finite_at_most, run_probes
from console.safe_text import safe
from probes import BrokerSnapshot, BrokerTarget, Probe
from probes.errors import NotFound
from probes.lag import with_snapshot_rates
from probes.models import ConsumerInfo


@cli_errors
def queues(
    broker: list[str] = brokers_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (JSON Lines with --watch)."),
    watch: float | None = typer.Option(None, "--watch", "-w", min=0.5, callback=finite_at_most(86400),
                                       metavar="SECONDS",
                                       help="Poll again every SECONDS until Ctrl-C."),
    pattern: str | None = typer.Option(None, "--filter", "-f", metavar="GLOB",
                                       help=FILTER_HELP),
    sort: SortField = typer.Option(SortField.name, "--sort", "-s",
                                   help="Sort by this field: names A→Z, numbers largest first."),
    reverse: bool = typer.Option(False, "--reverse", "-r", help="Reverse the sort order."),
    which: Only | None = typer.Option(None, "--only", help="Only dead-letter queues holding messages, queues with a "
                                                           "backlog (lagging), or messages and no consumer."),
) -> None:
    """List queues, topics and streams with depth, unacked, consumers, rates and dead-letter targets.

    RabbitMQ's management statistics refresh every 5 s, so counts can trail the broker by that much.
    """
    view = _View(as_json, pattern, sort, reverse, which.value if which else None)
    if watch is None:
        view.show(run_probes(broker, lambda p: p.snapshot()))
        return
    asyncio.run(_poll_forever(resolve_targets(broker), watch, view))


class _View:
    """Filter, sort and show one round of snapshots (one per broker), as a table or a JSON document."""

    def __init__(self, as_json: bool, pattern: str | None, sort: SortField, reverse: bool,
                 which: str | None = None) -> None:
        self.as_json, self.pattern, self.sort, self.reverse, self.which = as_json, pattern, sort, reverse, which

    def document(self, snapshots: Sequence[BrokerSnapshot]) -> dict[str, object]:
        """``queues``: the selected rows of every broker; ``snapshots``: each broker's snapshot holding only its
        selected rows (``snapshot`` too when there is one broker)."""
        shown = [dataclasses.replace(s, queues=tuple(select_queues(s.queues, self.pattern, self.sort,
                                                                   self.reverse, self.which))) for s in snapshots]
        rows = select_queues([q for s in shown for q in s.queues], self.pattern, self.sort, self.reverse,
                             self.which)
        doc: dict[str, object] = {"queues": rows, "snapshots": shown}
        if len(shown) == 1:
            doc["snapshot"] = shown[0]
        return doc

    def renderable(self, snapshots: Sequence[BrokerSnapshot]) -> RenderableType:
        several = len(snapshots) > 1
        return Group(*(snapshot_view(s, select_queues(s.queues, self.pattern, self.sort, self.reverse, self.which),
                                     label_broker=several) for s in snapshots))

    def show(self, snapshots: Sequence[BrokerSnapshot], *, lines: bool = False) -> None:
        if self.as_json:
            emit_json(self.document(snapshots), lines=lines)
        else:
            stdout_console().print(self.renderable(snapshots))


async def _poll_forever(targets: list[BrokerTarget], interval: float, view: _View) -> None:
    """Poll every broker through the one poller (its own loop per broker, never overlapping polls, backing off on
    failure) and show every broker's latest table after each poll; a failed poll keeps that broker's last table and
    says why. On a terminal the table is redrawn in place; off one (a pipe, a file) each frame is written and flushed
    as it is made."""
    console = stdout_console()
    live = Live(console=console, auto_refresh=False, transient=False) if is_terminal() and not view.as_json else None
    last: dict[str, BrokerSnapshot | None] = {t.label: None for t in targets}
    errors: dict[str, tuple[str, float]] = {}  # broker -> (its error, seconds until it is polled again)

    def show(result: PollResult) -> None:
        delay = result.next_poll_s if result.next_poll_s is not None else interval
        if result.snapshot is not None:
            errors.pop(result.label, None)
            last[result.label] = with_snapshot_rates(result.snapshot, last[result.label])  # Kafka, Redis: rates
        else:
            errors[result.label] = (result.error or "poll failed", delay)
        shown = [s for s in last.values() if s is not None]
        if view.as_json:
            emit_json(view.document(shown) if result.snapshot is not None else
                      {"error": result.error, "retry_in_s": delay, "broker": result.label}, lines=True)
            return
        head = [Text(f"! {safe(e, 400)} (retrying in {d:g}s)", style="bold red") for e, d in errors.values()] or [
            Text(f"every {interval:g}s · {time.strftime('%H:%M:%S')} · Ctrl-C to stop", style="dim")]
        frame = Group(*head, *([view.renderable(shown)] if shown else []))
        if live is not None:
            live.update(frame, refresh=True)
        else:
            console.print(frame)
            console.file.flush()

    with live if live is not None else contextlib.nullcontext():
        await Poller(targets, interval=interval, timeout=DEFAULT_TIMEOUT_S, on_result=show).run()


@cli_errors
def consumers(
    queue: str | None = typer.Argument(None, help="Only this queue's consumers."),
    broker: list[str] = brokers_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List consumers (tag, connection, prefetch, ack mode), for one queue or all.

    A QUEUE that none of the brokers has is an error (exit 2), never "no consumers": a typo must not read as
    nobody consuming. With several brokers, the queue needs to exist on one of them."""

    async def of(probe: Probe) -> Sequence[ConsumerInfo] | NotFound:
        try:
            return await probe.consumers(queue)
        except NotFound as exc:
            return exc

    batches = run_probes(broker, of)
    missing = [b for b in batches if isinstance(b, NotFound)]
    if missing and len(missing) == len(batches):
        raise fail(str(missing[0]) if len(missing) == 1 else f"queue {queue!r} not found on any of the brokers")
    found = [c for batch in batches if not isinstance(batch, NotFound) for c in batch]
    if as_json:
        emit_json({"consumers": list(found)})
    elif not found:
        stdout_console().print(Text("no consumers" + (f" on {safe(queue)}" if queue else ""), style="dim"))
    else:
        stdout_console().print(consumers_table(found))
