"""``RabbitMQProbe``: overview, queues (paged), consumers and a requeueing peek for one vhost."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from probes.death_fields import death_from_fields
from probes.errors import AuthFailed, NotFound, ProbeError, ReadOnly, UnsafeOperation, Unsupported
from probes.models import (
    PEEK_BODY_BYTES,
    BrokerOverview,
    BrokerSnapshot,
    ConsumerInfo,
    NodeAlarm,
    PeekCursor,
    PeekedMessage,
    PeekFrom,
    PeekResult,
    QueueStats,
)
from probes.naming import DEFAULT_DLQ_PATTERNS, matches_dlq_name
from probes.paging import RABBITMQ_NEWEST_MAX, check_start, queue_tag, rabbitmq_fetch_count
from probes.rabbitmq.deadletter import (
    DeadLetterConfig,
    dead_letter_config,
    delivery_limit,
    message_ttl,
    parse_deaths,
    routed_queues,
)
from probes.rabbitmq.http import ManagementClient, vhost_path
from probes.rabbitmq.node_check import check_same_cluster, cluster_nodes, server_properties
from probes.rabbitmq.prometheus import MESSAGE_STATS, PROMETHEUS, PrometheusRates, RateReading
from probes.urls import BrokerTarget

# Only what the snapshot reads: smaller pages to encode, send and parse.
QUEUE_COLUMNS = ",".join((
    "name", "vhost", "type", "state", "durable", "auto_delete", "exclusive", "node", "policy", "operator_policy",
    "arguments", "effective_policy_definition", "messages", "messages_ready", "messages_unacknowledged",
    "consumers", "consumer_utilisation", "idle_since", "memory",
    "message_stats.publish_details.rate", "message_stats.deliver_details.rate",
    "message_stats.deliver_no_ack_details.rate",
))
# Consumption is deliveries to consumers (with and without acks): never basic.get, which qdeck's own peeks use and
# which deliver_get (what the management UI shows) includes.
CONSUMED = ("deliver_details", "deliver_no_ack_details")
# The node facts the alarm check reads from /api/nodes (one request per snapshot; it needs the monitoring tag).
NODE_COLUMNS = "name,running,mem_alarm,mem_used,mem_limit,disk_free_alarm,disk_free,disk_free_limit"

PEEK_SIDE_EFFECT = ("read through the management API's get with requeue: the messages went back to the queue in "
                    "their original order but are now marked redelivered")


class RabbitMQProbe:
    def __init__(self, target: BrokerTarget, *, dlq_patterns: Sequence[str] = DEFAULT_DLQ_PATTERNS,
                 timeout: float = 10.0, client: ManagementClient | None = None) -> None:
        self.target = target
        self.vhost = target.path or "/"
        self.dlq_patterns = tuple(dlq_patterns)
        self.http = client or ManagementClient(target, timeout=timeout)
        self.prometheus = PrometheusRates(target, timeout=timeout)
        self._version: str | None = None
        self._node_checked = False  # the AMQP port was found to be the management API's cluster (checked once)
        self._alarms_refused: str | None = None  # why /api/nodes cannot be read (asked once per probe)

    async def aclose(self) -> None:
        await asyncio.gather(self.http.aclose(), self.prometheus.aclose())

    # ---- the AMQP port is the management API's cluster ------------------------------------------------
    async def _amqp_properties(self) -> dict[str, Any] | ProbeError | None:
        """The AMQP server's properties (or the error, returned so that a management API error is said first);
        None once the check has passed."""
        if self._node_checked:
            return None
        try:
            return await server_properties(self.target)
        except ProbeError as exc:
            return exc

    def _check_node(self, props: dict[str, Any] | ProbeError | None, overview: Mapping[str, Any]) -> None:
        if props is None:
            return
        if isinstance(props, ProbeError):
            raise props
        check_same_cluster(self.target, props, overview, self.http.shown_base)
        self._node_checked = True

    async def _checked_overview(self) -> Mapping[str, Any]:
        overview, props = await asyncio.gather(self.http.get("/overview", what="overview"), self._amqp_properties())
        self._check_node(props, overview)
        self._version = overview.get("rabbitmq_version") or overview.get("management_version")
        return dict(overview)

    # ---- snapshot -------------------------------------------------------------------------------------
    async def snapshot(self) -> BrokerSnapshot:
        started, t0 = time.time(), time.perf_counter()
        overview_raw, queues_raw, props, reading, alarms = await asyncio.gather(
            self.http.get("/overview", what="overview"),
            self.http.paged(f"/queues/{vhost_path(self.vhost)}", {"columns": QUEUE_COLUMNS},
                            what=f"vhost {self.vhost!r}"),
            self._amqp_properties(),
            self.prometheus.read(self.vhost),
            self._node_alarms(),
        )
        self._check_node(props, overview_raw)
        self._version = overview_raw.get("rabbitmq_version") or overview_raw.get("management_version")
        reading = self._usable(reading, overview_raw)
        configs = {q["name"]: dead_letter_config(q) for q in queues_raw}
        routes, missing, notes = await self._resolve_dead_letter_routes(
            c for c in configs.values() if c is not None)
        dead_letter_queues = {name for targets in routes.values() for name in targets}
        queues = tuple(self._queue_stats(q, configs[q["name"]], routes, dead_letter_queues, reading, missing)
                       for q in queues_raw)
        overview = dataclasses.replace(self._overview(overview_raw, queues, reading),
                                       alarms=None if isinstance(alarms, str) else alarms)
        if isinstance(alarms, str):
            notes.append(alarms)
        return BrokerSnapshot(broker=self.target.label, kind="rabbitmq", taken_at=started,
                              duration_s=time.perf_counter() - t0, overview=overview,
                              queues=tuple(sorted(queues, key=lambda q: q.name)), notes=tuple(notes))

    async def _resolve_dead_letter_routes(
        self, configs: Iterable[DeadLetterConfig]
    ) -> tuple[dict[tuple[str, str | None], tuple[str, ...]], set[str], list[str]]:
        """Where each distinct (dead-letter exchange, routing key) pair delivers (one bindings call per exchange),
        the dead-letter exchanges that do not exist, and notes."""
        wanted = {(c.exchange, c.routing_key) for c in configs}
        routes: dict[tuple[str, str | None], tuple[str, ...]] = {}
        missing: set[str] = set()
        notes: list[str] = []
        exchanges = sorted({ex for ex, _ in wanted if ex})
        looked_up = await asyncio.gather(*(self._exchange_routes(ex) for ex in exchanges))
        found = dict(zip(exchanges, looked_up, strict=True))
        for exchange, key in sorted(wanted, key=lambda p: (p[0], p[1] or "")):
            if not exchange:  # default exchange: the routing key names the queue
                routes[(exchange, key)] = (key,) if key else ()
                continue
            info = found[exchange]
            if info is None:
                missing.add(exchange)
                notes.append(f"dead-letter exchange {exchange!r} does not exist in vhost {self.vhost!r}: "
                             "messages dead-lettered to it are dropped")
                routes[(exchange, key)] = ()
                continue
            ex_type, bindings = info
            routes[(exchange, key)] = tuple(routed_queues(ex_type, bindings, key))
            if not routes[(exchange, key)]:
                notes.append(f"dead-letter exchange {exchange!r} routes to no queue: "
                             "dead-lettered messages are dropped")
        return routes, missing, notes

    async def _node_alarms(self) -> tuple[NodeAlarm, ...] | str:
        """The memory and disk alarms in force on the cluster's nodes, or (as a note) why they cannot be read: a
        user without the monitoring tag may not read /api/nodes, which is not a failure of the snapshot."""
        if self._alarms_refused is not None:
            return self._alarms_refused
        try:
            nodes = await self.http.get("/nodes", {"columns": NODE_COLUMNS}, what="nodes")
        except AuthFailed:
            self._alarms_refused = (f"node alarms unknown: user {self.target.username or 'guest'!r} may not read "
                                    "/api/nodes (it needs the 'monitoring' tag)")
            return self._alarms_refused
        except NotFound:
            self._alarms_refused = "node alarms unknown: this management API has no /api/nodes"
            return self._alarms_refused
        alarms: list[NodeAlarm] = []
        for node in nodes if isinstance(nodes, list) else ():
            name = str(node.get("name", "?"))
            if node.get("running") is not False and ("mem_alarm" not in node or "disk_free_alarm" not in node):
                # a node's statistics come in a few seconds after it (or the management agent) starts
                return f"node alarms unknown: node {name!r} has not reported its alarm state yet"
            if node.get("mem_alarm") is True:
                alarms.append(NodeAlarm(name, "memory", _int(node.get("mem_used")), _int(node.get("mem_limit"))))
            if node.get("disk_free_alarm") is True:
                alarms.append(NodeAlarm(name, "disk", _int(node.get("disk_free")),
                                        _int(node.get("disk_free_limit"))))
        return tuple(alarms)

    def _usable(self, reading: RateReading, overview: Mapping[str, Any]) -> RateReading:
        """Prometheus rates only when they cover the whole cluster the management API answers for."""
        if reading.rates is None:
            return reading
        nodes = cluster_nodes(overview)
        if nodes > 1:
            return RateReading(None, f"a cluster of {nodes} nodes: the Prometheus plugin at {self.prometheus.shown} "
                                     "counts its own node only")
        cluster = overview.get("cluster_name")
        if reading.cluster is not None and cluster is not None and reading.cluster != cluster:
            return RateReading(None, f"the Prometheus plugin at {self.prometheus.shown} is cluster "
                                     f"{reading.cluster!r}, not {cluster!r}")
        return reading

    async def _exchange_routes(self, exchange: str) -> tuple[str, list[dict[str, Any]]] | None:
        base = f"/exchanges/{vhost_path(self.vhost)}/{vhost_path(exchange)}"
        try:
            info, bindings = await asyncio.gather(self.http.get(base, what=f"exchange {exchange!r}"),
                                                  self.http.get(base + "/bindings/source"))
        except NotFound:
            return None
        return str(info.get("type", "direct")), list(bindings)

    def _queue_stats(self, q: Mapping[str, Any], config: DeadLetterConfig | None,
                     routes: Mapping[tuple[str, str | None], tuple[str, ...]], dlqs: set[str],
                     reading: RateReading, missing_exchanges: Collection[str] = ()) -> QueueStats:
        stats = q.get("message_stats") or {}
        name = str(q["name"])
        queue_type = str(q.get("type") or "classic")
        ready = q.get("messages_ready")
        publish_rate: float | None
        deliver_rate: float | None
        if reading.rates is not None:
            publish_rate, deliver_rate = reading.rates.get(name, (0.0, 0.0))
            source: str | None = PROMETHEUS
        else:
            publish_rate, deliver_rate = _rate(stats, "publish_details"), _consumed(stats)
            source = MESSAGE_STATS if publish_rate is not None or deliver_rate is not None else None
        ttl, ttl_source = message_ttl(q)
        return QueueStats(
            broker=self.target.label, name=name, kind="stream" if queue_type == "stream" else "queue",
            depth=int(ready if ready is not None else q.get("messages") or 0),
            in_flight=int(q.get("messages_unacknowledged") or 0),
            consumers=int(q.get("consumers") or 0),
            publish_rate=publish_rate, deliver_rate=deliver_rate, rate_source=source,
            dead_letter_target=config.target if config else None,
            dead_letter_exchange_missing=config is not None and config.exchange in missing_exchanges,
            dead_letter_overrides=config.overrides if config else None,
            message_ttl_ms=ttl, message_ttl_source=ttl_source,
            dead_letter_source=config.source if config else None,
            dead_letter_queues=routes.get((config.exchange, config.routing_key), ()) if config else (),
            is_dead_letter=name in dlqs or matches_dlq_name(name, self.dlq_patterns),
            queue_type=queue_type, state=q.get("state"), policy=q.get("policy"),
            delivery_limit=delivery_limit(q, self._version), raw=q,
        )

    def _overview(self, raw: Mapping[str, Any], queues: Sequence[QueueStats], reading: RateReading) -> BrokerOverview:
        stats = raw.get("message_stats") or {}
        totals = raw.get("object_totals") or {}
        return BrokerOverview(
            broker=self.target.label, kind="rabbitmq",
            version=raw.get("rabbitmq_version") or raw.get("management_version"),
            node=raw.get("node"), cluster=raw.get("cluster_name"),
            queues=len(queues), messages=sum(q.depth + q.in_flight for q in queues),
            ready=sum(q.depth for q in queues), unacked=sum(q.in_flight for q in queues),
            consumers=sum(q.consumers for q in queues), connections=totals.get("connections"),
            publish_rate=_rate(stats, "publish_details"), deliver_rate=_consumed(stats),
            scope=f"vhost {self.vhost}", raw=raw,
            rate_source=PROMETHEUS if reading.rates is not None else MESSAGE_STATS, rate_note=reading.note,
        )

    # ---- consumers --------------------------------------------------------------------------------------
    async def consumers(self, queue: str | None = None) -> Sequence[ConsumerInfo]:
        if not self._node_checked:
            await self._checked_overview()
        if queue is not None:  # a queue that is not there is an error, not "no consumers"
            await self.http.get(f"/queues/{vhost_path(self.vhost)}/{vhost_path(queue)}",
                                what=f"queue {queue!r} in vhost {self.vhost!r}")
        raw = await self.http.get(f"/consumers/{vhost_path(self.vhost)}", what=f"vhost {self.vhost!r}")
        found = []
        for c in raw:
            qname = str((c.get("queue") or {}).get("name", ""))
            if queue is not None and qname != queue:
                continue
            channel = c.get("channel_details") or {}
            peer = f"{channel.get('peer_host')}:{channel.get('peer_port')}" if channel.get("peer_host") else None
            found.append(ConsumerInfo(queue=qname, tag=str(c.get("consumer_tag", "")),
                                      connection=channel.get("connection_name") or peer,
                                      channel=channel.get("name"), prefetch=c.get("prefetch_count"),
                                      ack_required=c.get("ack_required"), active=c.get("active"), raw=c))
        return sorted(found, key=lambda c: (c.queue, c.tag))

    # ---- peek ---------------------------------------------------------------------------------------------
    async def peek(self, queue: str, limit: int, *, force: bool = False,
                   body_bytes: int | None = PEEK_BODY_BYTES, start: PeekFrom | None = None) -> PeekResult:
        """A page of ``limit`` messages through the management API's get with requeue. RabbitMQ cannot seek: page
        N takes every message before it again (``probes.paging.rabbitmq_fetch_count``), and newest first takes the
        whole queue; the side effect says how many were redelivered."""
        if limit < 1:
            raise ProbeError("peek needs a message count of at least 1")
        if self.target.read_only:
            raise ReadOnly(f"refusing to peek {queue!r} on {self.target.label}: --read-only is set, and a RabbitMQ "
                           "peek takes the messages and requeues them (they come back marked redelivered)")
        start = start or PeekFrom()
        check_start("rabbitmq", queue, start)
        cursor = start.after
        newest = cursor.newest if cursor is not None else start.newest
        skip = (cursor.skip or 0) if cursor is not None else 0
        path = f"/queues/{vhost_path(self.vhost)}/{vhost_path(queue)}"
        if self._version is None or not self._node_checked:
            await self._checked_overview()
        info = await self.http.get(path, what=f"queue {queue!r} in vhost {self.vhost!r}")
        queue_type = info.get("type", "classic")
        if queue_type == "stream":
            raise Unsupported(f"queue {queue!r} is a stream: the management API cannot peek streams "
                              "(read it with a stream consumer from an offset)")
        side_effect = PEEK_SIDE_EFFECT
        if queue_type == "quorum":
            limit_n = delivery_limit(info, self._version)
            if limit_n is not None and not force:
                how = ("on RabbitMQ 3.x a negative limit drops or dead-letters every message the first time it is "
                       "requeued, so a single peek loses what it reads" if limit_n < 0 else
                       "every peek counts as a delivery, so repeated peeks dead-letter or drop its messages")
                raise UnsafeOperation(
                    f"refusing to peek quorum queue {queue!r}: it has a delivery limit of {limit_n} and {how}; "
                    "pass --force to peek anyway")
            side_effect += "; on this quorum queue each peek also raised the messages' x-delivery-count by one"
        ready = info.get("messages_ready")
        if newest and isinstance(ready, int) and ready > RABBITMQ_NEWEST_MAX:
            raise Unsupported(f"newest first on RabbitMQ reads the whole queue from the head (the management API "
                              f"cannot read from the tail), and {queue!r} holds {ready:,} ready messages, more than "
                              f"{RABBITMQ_NEWEST_MAX:,}: page oldest first instead")
        count = rabbitmq_fetch_count(limit, start)
        body: dict[str, object] = {"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"}
        if body_bytes is not None:
            body["truncate"] = body_bytes
        raw = await self.http.post(f"{path}/get", body, what=f"queue {queue!r} in vhost {self.vhost!r}")
        if newest:
            if len(raw) >= count:
                raise Unsupported(f"newest first on RabbitMQ: {queue!r} grew past {RABBITMQ_NEWEST_MAX:,} messages "
                                  f"while it was read ({len(raw):,} were read and requeued, marked redelivered); "
                                  "page oldest first instead")
            total = len(raw)
            page = list(reversed(raw[max(0, total - skip - limit):max(0, total - skip)]))
            more = total - skip - limit > 0
        else:
            page = raw[skip:skip + limit]
            more = len(raw) > skip + limit
            total = len(raw) if not more else max(len(raw), int(ready or info.get("messages") or 0))
        messages = tuple(_peeked(skip + i, m) for i, m in enumerate(page))
        if raw:
            side_effect += _paging_cost(len(raw), skip, newest)
        shown = skip + len(messages)
        nxt = PeekCursor("rabbitmq", queue_tag(queue), newest, shown, skip=shown) if more else None
        return PeekResult(broker=self.target.label, queue=queue, messages=messages,
                          side_effect=side_effect if raw else None, first=skip, total=total, next=nxt,
                          order="newest first" if newest else "oldest first",
                          notes=("pages are positions: messages consumed or published between pages shift them",)
                          if nxt is not None or skip else ())


def _paging_cost(read: int, skip: int, newest: bool) -> str:
    """What paging cost on a broker that cannot seek, said plainly."""
    if newest:
        return (f"; newest first read the whole queue from the head to find its tail: all {read:,} messages were "
                "requeued and marked redelivered")
    if skip:
        return (f"; RabbitMQ cannot seek, so this page took the {min(skip, read):,} message(s) before it again "
                f"({read:,} requeued in all); every later page costs more")
    return ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rate(stats: Mapping[str, Any], key: str) -> float | None:
    details = stats.get(key)
    if isinstance(details, Mapping) and isinstance(details.get("rate"), int | float):
        return float(details["rate"])
    return None


def _consumed(stats: Mapping[str, Any]) -> float | None:
    """Deliveries to consumers per second (basic.get excluded); None when the broker gives no message_stats."""
    rates = [_rate(stats, key) for key in CONSUMED]
    known = [r for r in rates if r is not None]
    if known:
        return sum(known)
    return 0.0 if any(str(k).endswith("_details") for k in stats) else None


def _peeked(position: int, m: Mapping[str, Any]) -> PeekedMessage:
    payload = m.get("payload") or ""
    body = base64.b64decode(payload) if m.get("payload_encoding") == "base64" else str(payload).encode("utf-8")
    size = int(m.get("payload_bytes") or len(body))
    props = dict(m.get("properties") or {})
    headers = dict(props.pop("headers", None) or {})
    deaths, first_reason, first_queue, first_exchange = parse_deaths(headers)
    if not deaths:  # published to a DLQ by an application (qdeck's worker) rather than dead-lettered by the broker
        record = death_from_fields({k: str(v) for k, v in headers.items() if isinstance(v, str | int)})
        if record is not None:
            deaths, first_reason, first_queue = (record,), record.reason, record.queue
    app_headers = {k: v for k, v in headers.items() if k != "x-death" and not k.startswith("x-first-death-")}
    stamp = props.get("timestamp")
    return PeekedMessage(
        position=position, body=body, size=size, body_truncated=len(body) < size,
        exchange=m.get("exchange"), routing_key=m.get("routing_key"), redelivered=m.get("redelivered"),
        message_id=props.get("message_id"),
        timestamp=datetime.fromtimestamp(stamp, tz=UTC) if isinstance(stamp, int | float) else None,
        headers=app_headers, properties=props, deaths=deaths, first_death_reason=first_reason,
        first_death_queue=first_queue, first_death_exchange=first_exchange, raw=m,
    )


__all__ = ["RabbitMQProbe"]
