"""The exporter's metric families, built from the brokers' latest polls (never a poll per scrape).

Names follow Prometheus conventions: ``qdeck_`` prefix, base units in the name (``_seconds``), counters end in
``_total``. Labels: ``broker`` (the profile name or the password-masked URL), ``queue`` (queue, topic or stream),
``group`` (consumer group; "" for a plain queue's backlog), ``partition`` (Kafka), ``vhost`` (RabbitMQ; "" for the
others), ``kind``. Every label value passes the one sanitiser (``console.safe_text.safe``) and is cut to
``LABEL_CHARS``, so a hostile queue name cannot break the exposition; two names that come out the same are
exported once (the first).

A broker whose last poll failed exports ``qdeck_broker_up 0``, its poll counters and the ``unreachable`` rule,
not figures from its last good snapshot (stale figures must not look current).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from console.exporter.state import BrokerView, ExporterState
from console.health.context import dead_letters
from console.health.model import worst
from console.safe_text import safe

LABEL_CHARS = 300  # a label value past this is cut (with "…"); queue names are at most 255 bytes on RabbitMQ

Q = ("broker", "vhost", "queue", "kind")
G = ("broker", "queue", "group")


def label(value: Any) -> str:
    return "" if value is None else safe(value, LABEL_CHARS)


class _Family:
    """A metric family that takes each label set once (sanitised names can collide)."""

    def __init__(self, metric: GaugeMetricFamily | CounterMetricFamily) -> None:
        self.metric = metric
        self._seen: set[tuple[str, ...]] = set()

    def add(self, labels: Iterable[Any], value: float | None) -> None:
        if value is None:
            return  # unknown is no sample, never a made-up 0
        values = tuple(label(v) for v in labels)
        if values in self._seen:
            return
        self._seen.add(values)
        self.metric.add_metric(list(values), float(value))


def _gauge(name: str, doc: str, labels: Sequence[str]) -> _Family:
    return _Family(GaugeMetricFamily(name, doc, labels=list(labels)))


def _counter(name: str, doc: str, labels: Sequence[str]) -> _Family:
    return _Family(CounterMetricFamily(name, doc, labels=list(labels)))


def families(views: Sequence[BrokerView], *, now: float, wall_now: float) -> list[Metric]:
    """Every family for ``views``; ``now`` is ``time.perf_counter()`` (poll ages), ``wall_now`` ``time.time()``
    (snapshot ages)."""
    up = _gauge("qdeck_broker_up", "1 when the last poll of the broker succeeded, 0 when it failed.",
                ("broker", "kind"))
    polls = _counter("qdeck_broker_polls", "Polls of the broker (failed ones included).", ("broker",))
    errors = _counter("qdeck_broker_poll_errors", "Failed polls of the broker.", ("broker",))
    poll_age = _gauge("qdeck_broker_last_poll_age_seconds", "Seconds since the broker's last poll came back.",
                      ("broker",))
    duration = _gauge("qdeck_broker_poll_duration_seconds", "How long the broker's last poll took.", ("broker",))
    snap_age = _gauge("qdeck_broker_snapshot_age_seconds",
                      "Seconds since the figures exported for the broker were read (its last good poll began).",
                      ("broker",))
    partial = _gauge("qdeck_broker_partial",
                     "1 when a scan budget cut the broker's listing short (some queues are missing).", ("broker",))
    status = _gauge("qdeck_broker_status",
                    "The worst health rule level on the broker: 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN.", ("broker",))
    depth = _gauge("qdeck_queue_depth", "Messages waiting in the queue (RabbitMQ ready; Kafka and Redis backlog).",
                   Q)
    in_flight = _gauge("qdeck_queue_in_flight", "Messages delivered and not yet acknowledged.", Q)
    consumers = _gauge("qdeck_queue_consumers", "Consumers attached to the queue.", Q)
    publish = _gauge("qdeck_queue_publish_messages_per_second", "Messages published to the queue per second.", Q)
    deliver = _gauge("qdeck_queue_deliver_messages_per_second", "Messages delivered to consumers per second.", Q)
    dlq = _gauge("qdeck_dlq_depth", "Messages held by a dead-letter queue.", Q)
    lag = _gauge("qdeck_group_lag", "Messages the consumer group has not consumed yet.", G)
    members = _gauge("qdeck_group_members", "Members of the consumer group.", G)
    pending = _gauge("qdeck_group_pending", "Entries delivered to the group and not acknowledged (Redis).", G)
    idle = _gauge("qdeck_group_oldest_pending_idle_seconds",
                  "Idle time of the group's oldest pending entry (Redis).", G)
    part_lag = _gauge("qdeck_partition_lag", "The consumer group's lag on one partition (Kafka).",
                      (*G, "partition"))
    drain = _gauge("qdeck_time_to_drain_seconds",
                   "Backlog over its net drain rate, while it drains (absent while it does not).",
                   ("broker", "vhost", "queue", "group"))
    rule = _gauge("qdeck_rule_status", "A health rule's level: 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN.",
                  ("broker", "rule", "queue", "group"))
    rule_value = _gauge("qdeck_rule_value", "The figure a health rule judged (messages, seconds, ...).",
                        ("broker", "rule", "queue", "group"))

    for v in views:
        b = v.label
        polls.add([b], v.polls)
        errors.add([b], v.errors)
        if v.up is None:
            continue
        up.add([b, v.kind], 1 if v.up else 0)
        poll_age.add([b], max(0.0, now - v.last_poll) if v.last_poll is not None else None)
        duration.add([b], v.poll_duration_s)
        snap = v.snapshot
        if snap is not None:
            snap_age.add([b], max(0.0, wall_now - snap.taken_at))
        status.add([b], int(worst(v.findings)))
        for f in v.findings:
            rule.add([b, f.rule, f.queue, f.group], int(f.level))
            rule_value.add([b, f.rule, f.queue, f.group], f.value)
        if not v.up or snap is None:
            continue
        partial.add([b], 1 if snap.partial else 0)
        for q in snap.queues:
            key = [b, v.vhost, q.name, q.kind]
            depth.add(key, q.depth)
            in_flight.add(key, q.in_flight)
            consumers.add(key, q.consumers)
            publish.add(key, q.publish_rate)
            deliver.add(key, q.deliver_rate)
            if q.is_dead_letter:
                dlq.add(key, dead_letters(q))
        for g in snap.groups:
            key = [b, g.source, g.group]
            lag.add(key, g.lag)
            members.add(key, g.members)
            pending.add(key, g.pending)
            idle.add(key, g.oldest_pending_idle_ms / 1000 if g.oldest_pending_idle_ms is not None else None)
            for p in g.partitions:
                part_lag.add([*key, p.partition], p.lag)
        for row in v.rows:
            drain.add([b, v.vhost, row.source, row.group], row.seconds_to_drain)
    every = (up, polls, errors, poll_age, duration, snap_age, partial, status, depth, in_flight, consumers, publish,
             deliver, dlq, lag, members, pending, idle, part_lag, drain, rule, rule_value)
    return [f.metric for f in every]


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector over the exporter's state: each scrape reads the latest polls."""

    def __init__(self, state: ExporterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from families(self.state.views(), now=self.state.clock(), wall_now=time.time())
