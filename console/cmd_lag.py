"""``qdeck lag``: consumer-group lag and queue backlog for any broker, with seconds to drain."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table
from rich.text import Text

from console.output import emit_json, stdout_console
from console.render import fmt_rate
from console.runner import broker_option, cli_errors, run_probe
from console.safe_text import safe
from probes import BrokerSnapshot, Probe
from probes.lag import LagRow, lag_rows


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def lag_table(rows: list[LagRow], partitions: bool) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("SOURCE", "GROUP", "LAG", "PENDING", "CONSUMERS", "RATE/s", "DRAIN", "DETAIL"):
        table.add_column(col, justify="right" if col in ("LAG", "PENDING", "CONSUMERS", "RATE/s", "DRAIN")
                         else "left", overflow="fold")
    for r in rows:
        detail = []
        if r.state:
            detail.append(r.state.lower())
        if r.oldest_pending_idle_ms is not None:
            detail.append(f"oldest pending idle {r.oldest_pending_idle_ms / 1000:.1f}s")
        if r.max_delivery_count is not None:
            detail.append(f"max deliveries {r.max_delivery_count}")
        if r.rate_basis:
            detail.append(f"rate from {r.rate_basis}")
        lag = f"{r.backlog:,}" + ("" if r.exact else "+")
        table.add_row(Text(safe(r.source)), Text(safe(r.group or "-")), Text(lag, style="bold" if r.backlog else ""),
                      "-" if r.pending is None else f"{r.pending:,}", f"{r.consumers:,}", fmt_rate(r.consume_rate),
                      fmt_duration(r.seconds_to_drain), Text(", ".join(detail), style="dim"))
        if partitions:
            for p in r.partitions:
                committed = "-" if p.committed is None else f"{p.committed:,}"
                table.add_row("", Text(f"  partition {p.partition}", style="dim"), f"{p.lag:,}", "", "", "", "",
                              Text(f"committed {committed} · low {p.low:,} · high {p.high:,}", style="dim"))
    return table


@cli_errors
def lag(
    broker: str | None = broker_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    interval: float = typer.Option(2.0, "--interval", "-i", min=0.0, metavar="SECONDS",
                                   help="Seconds between the two snapshots that give consume rates (0: one "
                                        "snapshot, no rate estimate)."),
    partitions: bool = typer.Option(False, "--partitions", "-p", help="Show Kafka lag per partition."),
) -> None:
    """Consumer-group lag (Kafka, Redis streams) and queue backlog (RabbitMQ, Redis lists) with the
    estimated time to drain at the recent consume rate."""

    async def two_snapshots(probe: Probe) -> tuple[BrokerSnapshot | None, BrokerSnapshot]:
        first = await probe.snapshot()
        if interval <= 0:
            return None, first
        await asyncio.sleep(interval)
        return first, await probe.snapshot()

    prev, curr = run_probe(broker, two_snapshots)
    rows = lag_rows(curr, prev)
    if as_json:
        emit_json({"broker": curr.broker, "kind": curr.kind, "interval_s": interval, "lag": rows,
                   "partial": curr.partial, "notes": list(curr.notes)})
        return
    out = stdout_console()
    if not rows:
        out.print(Text("no queues or consumer groups found", style="dim"))
    else:
        out.print(lag_table(rows, partitions))
    for note in curr.notes:
        out.print(Text(f"! {safe(note, 400)}", style="yellow"))
