"""``qdeck queues`` and ``qdeck consumers``."""

from __future__ import annotations

import asyncio
import time

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from console.output import emit_json, stdout_console
from console.queue_filter import SortField, select_queues
from console.render import consumers_table, snapshot_view
from console.runner import broker_option, cli_errors, run_probe
from probes import BrokerSnapshot, Probe, ProbeError

MAX_BACKOFF_S = 60.0


@cli_errors
def queues(
    broker: str | None = broker_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (JSON Lines with --watch)."),
    watch: float | None = typer.Option(None, "--watch", "-w", min=0.5, metavar="SECONDS",
                                       help="Poll again every SECONDS until Ctrl-C."),
    pattern: str | None = typer.Option(None, "--filter", "-f", metavar="GLOB",
                                       help="Only queues whose name matches GLOB (case-insensitive), e.g. 'work.*'."),
    sort: SortField = typer.Option(SortField.name, "--sort", "-s",
                                   help="Sort by this field: names A→Z, numbers largest first."),
    reverse: bool = typer.Option(False, "--reverse", "-r", help="Reverse the sort order."),
) -> None:
    """List queues, topics and streams with depth, unacked, consumers, rates and dead-letter targets.

    RabbitMQ's management statistics refresh every 5 s, so counts can trail the broker by that much.
    """
    if watch is None:
        snapshot = run_probe(broker, lambda p: p.snapshot())
        rows = select_queues(snapshot.queues, pattern, sort, reverse)
        if as_json:
            emit_json({"snapshot": snapshot, "queues": rows})
        else:
            stdout_console().print(snapshot_view(snapshot, rows))
        return
    run_probe(broker, lambda p: _watch(p, watch, as_json, pattern, sort, reverse))


async def _watch(probe: Probe, interval: float, as_json: bool, pattern: str | None, sort: SortField,
                 reverse: bool) -> None:
    """Poll, show, wait; a failed poll keeps the last table, says why, and backs off (never overlapping polls)."""
    console = stdout_console()
    last: BrokerSnapshot | None = None
    delay = interval
    with Live(console=console, auto_refresh=False, transient=False) if not as_json else _Null() as live:
        while True:
            try:
                last = await probe.snapshot()
                delay = interval
                rows = select_queues(last.queues, pattern, sort, reverse)
                if as_json:
                    emit_json({"snapshot": last, "queues": rows}, lines=True)
                else:
                    stamp = Text(f"every {interval:g}s · {time.strftime('%H:%M:%S')} · Ctrl-C to stop", style="dim")
                    live.update(Group(stamp, snapshot_view(last, rows)), refresh=True)
            except ProbeError as exc:
                delay = min(max(delay * 2, interval), MAX_BACKOFF_S)
                if as_json:
                    emit_json({"error": str(exc), "retry_in_s": delay}, lines=True)
                else:
                    shown = [] if last is None else [snapshot_view(last, select_queues(last.queues, pattern, sort,
                                                                                        reverse))]
                    err = Text(f"! {exc} (retrying in {delay:g}s)", style="bold red")
                    live.update(Group(err, *shown), refresh=True)
            await asyncio.sleep(delay)


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: object, **kwargs: object) -> None:
        return None


@cli_errors
def consumers(
    queue: str | None = typer.Argument(None, help="Only this queue's consumers."),
    broker: str | None = broker_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List consumers (tag, connection, prefetch, ack mode), for one queue or all."""
    found = run_probe(broker, lambda p: p.consumers(queue))
    if as_json:
        emit_json({"consumers": list(found)})
    elif not found:
        stdout_console().print(Text("no consumers" + (f" on {queue}" if queue else ""), style="dim"))
    else:
        stdout_console().print(consumers_table(found))
