"""Rich renderables for the CLI's human output. Every broker-supplied string goes through ``safe``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.safe_text import preview_bytes, safe
from probes.lag import LagRow
from probes.models import BrokerSnapshot, ConsumerInfo, PeekedMessage, PeekResult, QueueStats
from probes.paging import cursor_token


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def type_text(q: QueueStats) -> str:
    """A queue's type as the CLI and the console show it: classic / quorum / stream (RabbitMQ), stream / list
    (Redis), topic (Kafka); the kind where the broker names no type."""
    return q.queue_type or q.kind


def snapshot_notes(snapshot: BrokerSnapshot) -> list[str]:
    """What a snapshot says besides its rows (a missing dead-letter exchange, a scan cut short): the CLI prints
    these under its table, the console under its overview."""
    notes = list(snapshot.notes)
    if snapshot.partial:
        notes.append("partial snapshot: a listing budget ran out (see notes)")
    return notes


def totals_text(snapshot: BrokerSnapshot) -> str:
    """A broker's totals: depth, in flight, consumers and (where the broker gives them) rates."""
    o = snapshot.overview
    text = f"depth {o.ready:,}  in flight {o.unacked:,}  consumers {o.consumers:,}"
    if o.publish_rate is not None:
        text += f" · in {fmt_rate(o.publish_rate)}/s  out {fmt_rate(o.deliver_rate)}/s"
    return text


def fmt_duration(seconds: float | None) -> str:
    """The one duration format (CLI and console): 93s, 14m, 5.2h, 3.1d."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def drain_text(row: LagRow) -> str:
    """Time to drain as qdeck says it everywhere: a duration while draining, never while growing or stalled,
    ? before a rate is known."""
    if row.trend in ("growing", "stalled"):
        return f"never ({row.trend})"
    if row.seconds_to_drain is None:
        return "?"
    return fmt_duration(row.seconds_to_drain)


def fmt_ttl(ms: int | None) -> str:
    """A message TTL: 500ms, 30s, 10m, 2.0h (the one duration format past a second)."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.4g}s" if ms < 120_000 else fmt_duration(ms / 1000)


def rates_caption(queues: Sequence[QueueStats]) -> str | None:
    """Where the IN/s and OUT/s figures came from, when a broker said (RabbitMQ: prometheus or message_stats)."""
    sources = sorted({q.rate_source for q in queues if q.rate_source})
    if not sources:
        return None
    return f"rates from {' and '.join(safe(s) for s in sources)}; OUT/s is deliveries to consumers (gets excluded)"


def fmt_net_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    sign = "+" if rate > 0 else "-" if rate < 0 else ""
    return sign + fmt_rate(abs(rate))


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value else "-"


def overview_line(snapshot: BrokerSnapshot, shown: int) -> Text:
    o = snapshot.overview
    parts = [f"{safe(o.broker)}", f"{o.kind} {o.version or ''}".strip()]
    if o.node:
        parts.append(safe(o.node))
    if o.scope:
        parts.append(safe(o.scope))
    parts.append(f"{shown:,} of {o.queues:,} queues shown")
    parts.append(totals_text(snapshot))
    return Text(" · ".join(parts), style="dim")


def queues_table(queues: Sequence[QueueStats], *, label_broker: bool = False) -> Table:
    caption = rates_caption(queues)
    table = Table(box=None, header_style="bold", pad_edge=False, caption=caption, caption_style="dim",
                  caption_justify="left")
    if label_broker:
        table.add_column("BROKER")
    table.add_column("NAME", overflow="fold")
    table.add_column("TYPE")
    table.add_column("DEPTH", justify="right")
    table.add_column("IN FLIGHT", justify="right")
    table.add_column("CONSUMERS", justify="right")
    show_lag = any(q.lag is not None for q in queues)
    if show_lag:
        table.add_column("LAG", justify="right")
    table.add_column("IN/s", justify="right")
    table.add_column("OUT/s", justify="right")
    table.add_column("DEAD-LETTERS TO", overflow="fold")
    show_ttl = any(q.message_ttl_ms is not None for q in queues)
    if show_ttl:
        table.add_column("MESSAGE TTL", overflow="fold")
    for q in queues:
        name = Text(safe(q.name), style="bold red" if q.is_dead_letter and q.depth else "")
        if q.is_dead_letter:
            name.append(" [DLQ]", style="red")
        target = safe(q.dead_letter_target) if q.dead_letter_target else "-"
        if q.dead_letter_target and q.dead_letter_overrides:
            target += f" (argument, overrides {safe(q.dead_letter_overrides)})"
        elif q.dead_letter_target and q.dead_letter_source and q.dead_letter_source != "arguments":
            target += f" ({safe(q.dead_letter_source)})"
        ttl = []
        if show_ttl:
            ttl = [Text(fmt_ttl(q.message_ttl_ms) + (f" ({safe(q.message_ttl_source)})"
                                                     if q.message_ttl_source else ""))]
        lag = ["-" if q.lag is None else f"{q.lag:,}"] if show_lag else []
        broker = [Text(safe(q.broker))] if label_broker else []
        table.add_row(*broker, name, safe(type_text(q)), f"{q.depth:,}", f"{q.in_flight:,}",
                      f"{q.consumers:,}", *lag, fmt_rate(q.publish_rate), fmt_rate(q.deliver_rate), Text(target),
                      *ttl)
    return table


def snapshot_view(snapshot: BrokerSnapshot, queues: Sequence[QueueStats], *,
                  label_broker: bool = False) -> RenderableType:
    parts: list[RenderableType] = [overview_line(snapshot, len(queues)),
                                   queues_table(queues, label_broker=label_broker)]
    parts += [Text(f"! {safe(note, 400)}", style="yellow") for note in snapshot_notes(snapshot)]
    return Group(*parts)


def dlq_table(dlqs: Sequence[tuple[str, QueueStats]], feeders: dict[tuple[str, str], list[str]], *,
              label_broker: bool = False) -> Table:
    """``dlqs``: (broker, queue) pairs; ``feeders``: (broker, dead-letter queue) → the queues that feed it."""
    table = Table(box=None, header_style="bold", pad_edge=False, caption=rates_caption([q for _l, q in dlqs]),
                  caption_style="dim", caption_justify="left")
    if label_broker:
        table.add_column("BROKER")
    table.add_column("DEAD-LETTER QUEUE", overflow="fold")
    table.add_column("TYPE")
    table.add_column("MESSAGES", justify="right")
    table.add_column("CONSUMERS", justify="right")
    table.add_column("IN/s", justify="right")
    table.add_column("FED BY", overflow="fold")
    for label, q in dlqs:
        fed = ", ".join(safe(n) for n in feeders.get((label, q.name), [])) or "(name pattern only)"
        broker = [Text(safe(label))] if label_broker else []
        table.add_row(*broker, Text(safe(q.name), style="bold red" if q.depth else ""), safe(q.queue_type or q.kind),
                      f"{q.depth + q.in_flight:,}", f"{q.consumers:,}", fmt_rate(q.publish_rate), Text(fed))
    return table


def consumers_table(consumers: Iterable[ConsumerInfo]) -> Table:
    rows = list(consumers)
    streams = any(c.pending is not None or c.idle_ms is not None for c in rows)  # Redis: pending and idle
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("QUEUE", "CONSUMER TAG", "CONNECTION", "PREFETCH", "ACK", "ACTIVE", *(("PENDING", "IDLE") * streams))
    for col in columns:
        table.add_column(col, justify="right" if col in ("PREFETCH", "PENDING", "IDLE") else "left", overflow="fold")
    for c in rows:
        extra = ["-" if c.pending is None else f"{c.pending:,}",
                 fmt_duration(None if c.idle_ms is None else c.idle_ms / 1000)] if streams else []
        table.add_row(Text(safe(c.queue)), Text(safe(c.tag)), Text(safe(c.connection or "-")),
                      "-" if c.prefetch is None else str(c.prefetch),
                      {True: "manual", False: "auto", None: "-"}[c.ack_required],
                      {True: "yes", False: "no", None: "-"}[c.active], *extra)
    return table


def pending_text(m: PeekedMessage) -> str | None:
    """A pending entry's state (Redis streams): who holds it, for how long, how often delivered; None otherwise."""
    if m.delivery_count is None and m.idle_ms is None:
        return None
    times = "?" if m.delivery_count is None else f"{m.delivery_count:,}"
    idle = fmt_duration(None if m.idle_ms is None else m.idle_ms / 1000)
    return f"consumer {safe(m.consumer or '?', 80)} · idle {idle} · delivered {times}×"


def message_view(m: PeekedMessage, total: int | None, body_limit: int) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    flags = [f"{m.size:,} bytes"]
    if m.redelivered:
        flags.append("redelivered")
    if m.message_id:
        flags.append(f"id {safe(m.message_id, 80)}")
    of = f" of {total:,}" if total is not None else ""
    title = Text(f"── message {m.position + 1}{of} · " + " · ".join(flags), style="cyan")
    pending = pending_text(m)
    if pending:
        grid.add_row("pending", Text(pending))
    if m.deaths or m.first_death_reason:
        attempts = [d.attempts for d in m.deaths if d.attempts is not None]
        times = (f"after {sum(attempts)} deliver{'y' if sum(attempts) == 1 else 'ies'}" if attempts
                 else f"dead-lettered {m.death_count}×")
        grid.add_row("reason", Text(f"{safe(m.death_reason or 'unknown')} ({times})"))
        route = f"queue {safe(m.original_queue or 'unknown')}"
        if m.original_exchange is not None:
            route += f" · exchange {safe(m.original_exchange) or '(default)'}"
        if m.original_routing_keys:
            route += f" · routing key {', '.join(safe(k) for k in m.original_routing_keys)}"
        last = m.deaths[-1] if m.deaths else None
        for label, value in (("id", last and last.original_id), ("group", last and last.group),
                             ("consumer", last and last.consumer)):
            if value:
                route += f" · {label} {safe(value)}"
        grid.add_row("original", Text(route))
        first_where = f" in {safe(m.first_death_queue)}" if m.first_death_queue else ""
        grid.add_row("first death", Text(f"{fmt_time(m.first_death_time)} ({safe(m.first_death_reason or 'unknown')}"
                                         f"{first_where})"))
        grid.add_row("last death", Text(fmt_time(m.last_death_time)))
        for d in m.deaths:
            where = f" in {safe(d.queue)}" if d.queue else ""
            grid.add_row("", Text(f"{safe(d.reason or 'unknown')} ×{d.count}{where} at {fmt_time(d.time)}",
                                  style="dim"))
    else:
        grid.add_row("reason", Text("(no dead-letter record on this message)", style="dim"))
    if m.exchange is not None or m.routing_key is not None:
        grid.add_row("arrived via", Text(f"exchange {safe(m.exchange) or '(default)'} · key {safe(m.routing_key)}"))
    for key, value in m.headers.items():
        grid.add_row(Text(f"header {safe(key, 60)}", style="bold"), Text(safe(value, 300)))
    ctype = m.properties.get("content_type")
    if ctype:
        grid.add_row("content type", Text(safe(ctype)))
    body = preview_bytes(m.body, body_limit, total=m.size)
    grid.add_row("body", Text(body or ("(none: the fields above are the message)" if m.headers else "(empty)")))
    return Group(title, grid)


def walk_total(result: PeekResult) -> int | None:
    """How many messages the walk holds as far as is known: on its last page the count seen (exact: a Kafka
    figure counts offsets, transaction markers included), before that the probe's figure (never fewer than were
    seen), or None when the broker gave none."""
    seen = result.first + len(result.messages)
    if result.next is None:
        return seen
    return None if result.total is None else max(result.total, seen)


def page_caption(result: PeekResult) -> str:
    """Which part of the walk a page shows, in the order and range read: ``messages 21–40 of 61 · oldest first``
    (the CLI's header and the console's peek title)."""
    n = len(result.messages)
    total = walk_total(result)
    if n:
        span = f"messages {result.first + 1:,}–{result.first + n:,}"
        span += f" of {total:,}" if total is not None else " (more follow)"
    else:
        span = "no messages" + (f" after the {result.first:,} shown" if result.first else "")
    return " · ".join([span, *(safe(x, 200) for x in (result.order, result.scope) if x)])


def next_page_text(result: PeekResult) -> str:
    """What continues the walk (``--after TOKEN``), or that this is the last page."""
    if result.next is None:
        return "last page"
    return f"next page: --after {safe(cursor_token(result.next), None)}"


def peek_view(result: PeekResult, body_limit: int) -> RenderableType:
    if not result.messages and not result.first and result.scope is None:
        return Text(f"{safe(result.queue)} is empty: nothing to peek", style="dim")
    total = walk_total(result)
    return Group(Text(page_caption(result), style="bold"),
                 *(message_view(m, total, body_limit) for m in result.messages),
                 Text(next_page_text(result), style="dim"))
