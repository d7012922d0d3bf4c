"""One lag model for every broker: backlog in messages, and seconds to drain where a consume rate is known.

The rate comes, in order of preference, from a consumed-so-far counter in two snapshots (Kafka committed
offsets, Redis ``entries-read``), from the broker's own rate (RabbitMQ deliver rate), or from the backlog
shrinking between two snapshots (net drain). With none of those, seconds-to-drain is unknown (None).
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.models import BrokerSnapshot, GroupLag, PartitionLag


@dataclass(frozen=True, slots=True)
class LagRow:
    broker: str
    source: str  # queue / topic / stream / list
    group: str | None  # consumer group (Kafka, Redis streams); None for a plain queue
    backlog: int
    exact: bool
    consumers: int
    pending: int | None = None
    consume_rate: float | None = None  # msg/s
    rate_basis: str | None = None  # "committed offsets" | "entries read" | "broker rate" | "net drain"
    seconds_to_drain: float | None = None
    state: str | None = None
    oldest_pending_idle_ms: int | None = None
    max_delivery_count: int | None = None
    partitions: tuple[PartitionLag, ...] = ()


def lag_rows(curr: BrokerSnapshot, prev: BrokerSnapshot | None = None) -> list[LagRow]:
    """Consumer groups (Kafka, Redis streams) and queue backlogs (RabbitMQ queues, Redis lists)."""
    dt = curr.taken_at - prev.taken_at if prev is not None else 0.0
    rows: list[LagRow] = []
    before_groups = {(g.source, g.group): g for g in prev.groups} if prev else {}
    for g in curr.groups:
        rate, basis = _group_rate(g, before_groups.get((g.source, g.group)), dt, curr.kind)
        rows.append(_row(curr.broker, g.source, g.group, g.lag, g.lag_exact, g.members, rate, basis,
                         pending=g.pending, state=g.state, oldest_pending_idle_ms=g.oldest_pending_idle_ms,
                         max_delivery_count=g.max_delivery_count, partitions=g.partitions))
    grouped = {g.source for g in curr.groups}
    before_queues = {q.name: q for q in prev.queues} if prev else {}
    for q in curr.queues:
        if q.kind in ("topic", "stream") or q.name in grouped:
            continue  # their lag is per consumer group, above
        backlog = q.depth + q.in_flight
        rate, basis = (q.deliver_rate, "broker rate") if q.deliver_rate else (None, None)
        old = before_queues.get(q.name)
        if rate is None and old is not None and dt > 0 and (old.depth + old.in_flight) > backlog:
            rate, basis = ((old.depth + old.in_flight) - backlog) / dt, "net drain"
        rows.append(_row(curr.broker, q.name, None, backlog, True, q.consumers, rate, basis, pending=q.in_flight))
    return sorted(rows, key=lambda r: (-r.backlog, r.source, r.group or ""))


def _group_rate(g: GroupLag, old: GroupLag | None, dt: float, kind: str) -> tuple[float | None, str | None]:
    if old is None or dt <= 0:
        return None, None
    if g.consumed is not None and old.consumed is not None:
        basis = "committed offsets" if kind == "kafka" else "entries read"
        return max(0.0, (g.consumed - old.consumed) / dt), basis
    if old.lag > g.lag:
        return (old.lag - g.lag) / dt, "net drain"
    return None, None


def _row(broker: str, source: str, group: str | None, backlog: int, exact: bool, consumers: int,
         rate: float | None, basis: str | None, **extra: object) -> LagRow:
    if backlog == 0:
        drain: float | None = 0.0
    elif rate is not None and rate > 0:
        drain = backlog / rate
    else:
        drain = None
    return LagRow(broker=broker, source=source, group=group, backlog=backlog, exact=exact, consumers=consumers,
                  consume_rate=rate, rate_basis=basis, seconds_to_drain=drain, **extra)  # type: ignore[arg-type]
