"""One lag model for every broker: backlog in messages, the net rate it changes at, time to drain and a trend.

- **lag** (backlog): messages not yet consumed (a group's lag; a queue's ready + unacked).
- **consume rate**: messages consumed per second, from a consumed-so-far counter in two snapshots (Kafka committed
  offsets, Redis ``entries-read``) or the broker's own rate of deliveries to consumers (RabbitMQ: its Prometheus
  plugin's counters over the interval, else the management API's message_stats; ``basic.get``, qdeck's peeks
  included, is not consumption). A queue with no consumer consumes nothing, whatever the rate says (a consumer that
  left during the interval).
- **produce rate**: messages arriving per second (the end offset / stream length moving, or the broker's publish
  rate).
- **net rate** = consume rate − produce rate: how fast the backlog shrinks (negative: it grows). Without separate
  rates it is the backlog's own change between two snapshots.
- **time to drain** = backlog / net rate, only while the net rate is positive; None otherwise.
- **trend**: ``idle`` (no backlog), ``draining`` (net rate > 0), ``growing`` (net rate < 0), ``stalled`` (a backlog
  that does not move, or nobody consuming it); None until a rate is known.

One snapshot gives no rates at all (``lag --interval 0``, a console's first poll), not even a broker's own: every
rate is a figure over an interval the user chose or can see. ``rate_basis`` names where each row's rates came from.

The CLI table, ``--json`` and the console all classify with ``classify`` here.

Kafka and Redis give no rates of their own: ``with_snapshot_rates`` fills a topic's or stream's in/s and out/s from
the counters of two snapshots (the same counters as the lag rates), for ``qdeck queues --watch`` and the console.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from probes.models import BrokerSnapshot, GroupLag, PartitionLag, QueueStats

Trend = Literal["draining", "growing", "stalled", "idle"]
Rates = tuple[float | None, float | None, float | None, str | None]  # consume, produce, net, basis


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
    rate_basis: str | None = None  # "committed offsets" | "entries read" | "prometheus" |
    # "management message_stats" (RabbitMQ's own rates) | "net drain" (the backlog's change)
    seconds_to_drain: float | None = None  # backlog / net rate, while the net rate is positive
    produce_rate: float | None = None  # msg/s arriving
    net_rate: float | None = None  # consume − produce: how fast the backlog shrinks (negative: grows)
    trend: Trend | None = None  # see ``classify``
    state: str | None = None
    oldest_pending_idle_ms: int | None = None
    max_delivery_count: int | None = None
    partitions: tuple[PartitionLag, ...] = ()


def _plain_queues(snap: BrokerSnapshot) -> list[QueueStats]:
    """The queues whose backlog is their own (not a topic's or stream's: those lag per consumer group)."""
    grouped = {g.source for g in snap.groups}
    return [q for q in snap.queues if q.kind not in ("topic", "stream") and q.name not in grouped]


def _queue_backlog(q: QueueStats) -> int:
    return q.depth + q.in_flight


def backlogs(snap: BrokerSnapshot) -> dict[tuple[str, str | None], int]:
    """Every ``lag_rows`` row's backlog by (source, group), without the rates: what a trend over many snapshots
    needs (``lag_rows`` on each of them cost seconds on 10,000 queues)."""
    out: dict[tuple[str, str | None], int] = {(g.source, g.group): g.lag for g in snap.groups}
    for q in _plain_queues(snap):
        out[(q.name, None)] = _queue_backlog(q)
    return out


def lag_rows(curr: BrokerSnapshot, prev: BrokerSnapshot | None = None) -> list[LagRow]:
    """Consumer groups (Kafka, Redis streams) and queue backlogs (RabbitMQ queues, Redis lists)."""
    dt = curr.taken_at - prev.taken_at if prev is not None else 0.0
    rows: list[LagRow] = []
    before_groups = {(g.source, g.group): g for g in prev.groups} if prev else {}
    for g in curr.groups:
        rows.append(_row(curr.broker, g.source, g.group, g.lag, g.lag_exact, g.members,
                         _group_rates(g, before_groups.get((g.source, g.group)), dt, curr.kind),
                         pending=g.pending, state=g.state, oldest_pending_idle_ms=g.oldest_pending_idle_ms,
                         max_delivery_count=g.max_delivery_count, partitions=g.partitions))
    before_queues = {q.name: q for q in prev.queues} if prev else {}
    for q in _plain_queues(curr):
        backlog = _queue_backlog(q)
        old = before_queues.get(q.name)
        rates: Rates = (None, None, None, None)  # one snapshot: no rate estimate
        consume: float | None
        if prev is not None and q.deliver_rate is not None and q.publish_rate is not None:
            consume = 0.0 if q.consumers == 0 else q.deliver_rate  # nobody consuming now: it does not drain
            rates = (consume, q.publish_rate, consume - q.publish_rate, q.rate_source or "broker rate")
        elif old is not None and dt > 0:
            consume = 0.0 if q.consumers == 0 and q.deliver_rate is not None else q.deliver_rate
            rates = (consume, q.publish_rate, ((old.depth + old.in_flight) - backlog) / dt, "net drain")
        rows.append(_row(curr.broker, q.name, None, backlog, True, q.consumers, rates, pending=q.in_flight))
    return sorted(rows, key=lambda r: (-r.backlog, r.source, r.group or ""))


SNAPSHOT_RATES = {"kafka": "snapshots of end and committed offsets",  # in/s, out/s
                  "redis": "snapshots of entries-added, entries-read"}


def with_snapshot_rates(curr: BrokerSnapshot, prev: BrokerSnapshot | None) -> BrokerSnapshot:
    """``curr`` with in/s and out/s filled in for the topics and streams the broker gives no rates for, from the
    counters of ``prev`` and ``curr``: in/s from ``appended`` (Kafka's end offsets, Redis's entries-added), out/s
    the sum of the consume rates of the source's consumer groups (committed offsets, entries read), as RabbitMQ's
    deliver rate counts deliveries to every consumer; 0 with no group at all. A figure whose counters are missing
    (a first snapshot, a group or stream new since, Redis before 7) stays None: unknown, never a guess."""
    dt = curr.taken_at - prev.taken_at if prev is not None else 0.0
    if prev is None or dt <= 0 or curr.kind not in SNAPSHOT_RATES:  # RabbitMQ gives rates of its own
        return curr
    before = {q.name: q for q in prev.queues}
    old_groups = {(g.source, g.group): g for g in prev.groups}
    consumed: dict[str, float] = {}
    unknown: set[str] = set()
    for g in curr.groups:
        consume = _group_rates(g, old_groups.get((g.source, g.group)), dt, curr.kind)[0]
        if consume is None:
            unknown.add(g.source)
        else:
            consumed[g.source] = consumed.get(g.source, 0.0) + consume
    queues: list[QueueStats] = []
    changed = False
    for q in curr.queues:
        old = before.get(q.name)
        if old is None or q.kind not in ("topic", "stream") or q.publish_rate is not None or q.deliver_rate is not None:
            queues.append(q)
            continue
        publish = (max(0.0, (q.appended - old.appended) / dt)
                   if q.appended is not None and old.appended is not None else None)
        deliver = None if q.name in unknown else consumed.get(q.name, 0.0)
        if publish is None and deliver is None:
            queues.append(q)
            continue
        queues.append(dataclasses.replace(q, publish_rate=publish, deliver_rate=deliver,
                                          rate_source=SNAPSHOT_RATES.get(curr.kind, "snapshots")))
        changed = True
    return dataclasses.replace(curr, queues=tuple(queues)) if changed else curr


def _group_rates(g: GroupLag, old: GroupLag | None, dt: float, kind: str) -> Rates:
    if old is None or dt <= 0:
        return None, None, None, None
    if g.consumed is not None and old.consumed is not None:
        basis = "committed offsets" if kind == "kafka" else "entries read"
        consume = max(0.0, (g.consumed - old.consumed) / dt)
        produce = max(0.0, ((g.consumed + g.lag) - (old.consumed + old.lag)) / dt)
        return consume, produce, consume - produce, basis
    return None, None, (old.lag - g.lag) / dt, "net drain"


def classify(backlog: int, consumers: int, consume_rate: float | None, net_rate: float | None) -> Trend | None:
    """The one classification of a lag row (see the module docstring)."""
    if backlog == 0:
        return "idle"
    if net_rate is not None and net_rate < 0:
        return "growing"
    if net_rate is not None and net_rate > 0:
        return "draining"
    if net_rate is not None or consumers == 0 or consume_rate == 0:
        return "stalled"
    return None


def seconds_to_drain(backlog: int, net_rate: float | None) -> float | None:
    if backlog == 0:
        return 0.0
    return backlog / net_rate if net_rate is not None and net_rate > 0 else None


def _row(broker: str, source: str, group: str | None, backlog: int, exact: bool, consumers: int,
         rates: Rates, **extra: object) -> LagRow:
    consume, produce, net, basis = rates
    return LagRow(broker=broker, source=source, group=group, backlog=backlog, exact=exact, consumers=consumers,
                  consume_rate=consume, rate_basis=basis, seconds_to_drain=seconds_to_drain(backlog, net),
                  produce_rate=produce, net_rate=net, trend=classify(backlog, consumers, consume, net),
                  **extra)  # type: ignore[arg-type]
