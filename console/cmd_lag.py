"""``qdeck lag``: consumer-group lag and queue backlog for any broker, with seconds to drain."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table
from rich.text import Text

from console.output import emit_json, stdout_console
from console.queue_filter import LagSort, select_lag
from console.render import drain_text, fmt_net_rate, fmt_rate
from console.runner import brokers_option, cli_errors, finite_at_most, run_probes
from console.safe_text import safe
from probes import BrokerSnapshot, Probe
from probes.lag import LagRow, lag_rows
from probes.serialize import to_jsonable

Notes = dict[tuple[str, str, str | None], str]


def lag_notes(snapshots: list[BrokerSnapshot]) -> Notes:
    """(broker, source, group) -> what that row's figure assumes (Kafka groups with no committed offset)."""
    return {(s.broker, g.source, g.group): g.note for s in snapshots for g in s.groups if g.note}


def lag_table(rows: list[LagRow], partitions: bool, *, label_broker: bool = False,
              notes: Notes | None = None) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    numeric = ("LAG", "PENDING", "CONSUMERS", "IN/s", "OUT/s", "NET/s", "DRAIN")
    for col in (("BROKER",) if label_broker else ()) + ("SOURCE", "GROUP", *numeric, "TREND", "DETAIL"):
        table.add_column(col, justify="right" if col in numeric else "left", overflow="fold")
    for r in rows:
        detail = []
        if r.state:
            detail.append(safe(r.state.lower()))
        if r.oldest_pending_idle_ms is not None:
            detail.append(f"oldest pending idle {r.oldest_pending_idle_ms / 1000:.1f}s")
        if r.max_delivery_count is not None:
            detail.append(f"max deliveries {r.max_delivery_count}")
        if r.rate_basis:
            detail.append(f"rate from {r.rate_basis}")
        note = (notes or {}).get((r.broker, r.source, r.group))
        if note:
            detail.append(safe(note))
        lag = f"{r.backlog:,}" + ("" if r.exact else "+")
        broker = [Text(safe(r.broker))] if label_broker else []
        table.add_row(*broker, Text(safe(r.source or "-")), Text(safe(r.group or "-")),
                      Text(lag, style="bold" if r.backlog else ""),
                      "-" if r.pending is None else f"{r.pending:,}", f"{r.consumers:,}", fmt_rate(r.produce_rate),
                      fmt_rate(r.consume_rate), fmt_net_rate(r.net_rate), drain_text(r), r.trend or "?",
                      Text(", ".join(detail), style="dim"))
        if partitions:
            for p in r.partitions:
                committed = "-" if p.committed is None else f"{p.committed:,}"
                table.add_row(*([""] if label_broker else []), "", Text(f"  partition {p.partition}", style="dim"),
                              f"{p.lag:,}", "", "", "", "", "", "", "",
                              Text(f"committed {committed} · low {p.low:,} · high {p.high:,}", style="dim"))
    return table


@cli_errors
def lag(
    broker: list[str] = brokers_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    interval: float = typer.Option(2.0, "--interval", "-i", min=0.0, callback=finite_at_most(3600), metavar="SECONDS",
                                   help="Seconds between the two snapshots that give consume rates (0: one "
                                        "snapshot, no rate estimate)."),
    partitions: bool = typer.Option(False, "--partitions", "-p", help="Show Kafka lag per partition."),
    pattern: str | None = typer.Option(None, "--filter", "-f", metavar="GLOB",
                                       help="Only rows whose queue, topic, stream or group name matches: a glob when "
                                            "it has * ? or [, else a substring; case-insensitive."),
    sort: LagSort = typer.Option(LagSort.backlog, "--sort", "-s",
                                 help="Sort by this column: numbers largest first (eta: never-draining first), "
                                      "names A→Z, trend worst first."),
    reverse: bool = typer.Option(False, "--reverse", "-r", help="Reverse the sort order."),
) -> None:
    """Consumer-group lag (Kafka, Redis streams) and queue backlog (RabbitMQ, Redis lists): produce, consume and
    net rates, the time to drain at the net rate, and the trend (draining, growing, stalled, idle)."""

    async def two_snapshots(probe: Probe) -> tuple[BrokerSnapshot | None, BrokerSnapshot]:
        first = await probe.snapshot()
        if interval <= 0:
            return None, first
        await asyncio.sleep(interval)
        return first, await probe.snapshot()

    pairs = run_probes(broker, two_snapshots)
    rows = select_lag((r for prev, curr in pairs for r in lag_rows(curr, prev)), pattern, sort, reverse)
    notes = [note for _prev, curr in pairs for note in curr.notes]
    row_notes = lag_notes([curr for _prev, curr in pairs])
    if as_json:
        listed = [{**to_jsonable(r), "note": row_notes.get((r.broker, r.source, r.group))} for r in rows]
        doc: dict[str, object] = {"interval_s": interval, "lag": listed, "partial": any(c.partial for _p, c in pairs),
                                  "notes": notes}
        if len(pairs) == 1:
            doc = {"broker": pairs[0][1].broker, "kind": pairs[0][1].kind, **doc}
        emit_json(doc)
        return
    out = stdout_console()
    if not rows:
        out.print(Text(f"no queue, topic, stream or group matches {safe(pattern, 80)!r}" if pattern
                       else "no queues or consumer groups found", style="dim"))
    else:
        out.print(lag_table(rows, partitions, label_broker=len(pairs) > 1, notes=row_notes))
    for note in notes:
        out.print(Text(f"! {safe(note, 400)}", style="yellow"))
