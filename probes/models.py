"""Frozen, driver-free models every probe returns. Raw broker payloads live only in fields named ``raw``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

QueueKind = Literal["queue", "topic", "stream", "list"]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One row of any broker's queue / topic / stream / list table."""

    broker: str
    name: str
    kind: QueueKind
    depth: int  # messages waiting (RabbitMQ ready, Kafka/Redis backlog, list length)
    in_flight: int  # delivered and not yet acknowledged (unacked, pending)
    consumers: int
    publish_rate: float | None  # msg/s, None where the broker does not say
    deliver_rate: float | None
    dead_letter_target: str | None  # where this queue dead-letters to, in the broker's own words
    is_dead_letter: bool  # this queue is itself a dead-letter destination
    queue_type: str | None = None  # classic / quorum / stream (RabbitMQ), stream / list (Redis) ...
    state: str | None = None  # running / idle / down ... None where unknown
    dead_letter_source: str | None = None  # "arguments" or "policy NAME" (RabbitMQ), "pattern" ...
    dead_letter_queues: tuple[str, ...] = ()  # queues the dead-letter target routes to, when resolvable
    delivery_limit: int | None = None  # quorum-queue delivery limit; peeks count against it
    policy: str | None = None
    lag: int | None = None  # topics / streams: the backlog of the slowest consumer group
    partitions: int | None = None  # Kafka topics
    config: Mapping[str, str] = field(default_factory=dict)  # key settings (retention, cleanup policy, ...)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    rate_source: str | None = None  # where publish/deliver rates came from ("prometheus", "management message_stats")
    dead_letter_overrides: str | None = None  # "policy NAME" whose dead-letter exchange the queue arguments override
    message_ttl_ms: int | None = None  # the message TTL that applies (RabbitMQ: the lower of argument and policy)
    message_ttl_source: str | None = None  # "argument", "policy NAME", ...
    appended: int | None = None  # messages ever appended (Kafka: end offsets summed; Redis: entries-added): a counter
    dead_letter_exchange_missing: bool = False  # RabbitMQ: its dead-letter exchange does not exist (dead letters
    # are dropped)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed here (lag is then the whole retained backlog)
    low: int
    high: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupLag:
    """One consumer group on one topic / stream: how far behind it is."""

    broker: str
    group: str
    source: str  # the topic or stream it reads
    lag: int  # messages not yet consumed by this group
    state: str | None = None  # Stable / Empty / ... (Kafka)
    members: int = 0
    pending: int | None = None  # Redis: delivered, not acknowledged
    consumed: int | None = None  # a monotonic "consumed so far" counter (committed offsets, entries-read)
    lag_exact: bool = True  # False when a budget cut the count short (then ``lag`` is a lower bound)
    oldest_pending_idle_ms: int | None = None
    max_delivery_count: int | None = None
    partitions: tuple[PartitionLag, ...] = ()
    note: str | None = None  # what the figure assumes, e.g. "no committed offset" (Kafka)


@dataclass(frozen=True, slots=True)
class NodeAlarm:
    """A resource alarm in force on one broker node (RabbitMQ blocks every publisher while it lasts)."""

    node: str
    resource: Literal["memory", "disk"]
    value: int | None = None  # bytes: memory used / disk space free
    limit: int | None = None  # bytes: the memory high watermark / the free disk space limit


@dataclass(frozen=True, slots=True)
class BrokerOverview:
    broker: str
    kind: str
    version: str | None
    node: str | None
    cluster: str | None
    queues: int
    messages: int
    ready: int
    unacked: int
    consumers: int
    connections: int | None
    publish_rate: float | None
    deliver_rate: float | None
    scope: str | None = None  # what the queue list covers, e.g. "vhost /"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    rate_source: str | None = None  # where the queues' rates came from ("prometheus", "management message_stats")
    rate_note: str | None = None  # why the preferred rate source was not used, when it was not
    alarms: tuple[NodeAlarm, ...] | None = None  # resource alarms in force (RabbitMQ); None: not known (the user
    # may not read node state, or the broker has no such alarms)


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """Everything one poll saw. ``partial`` is true when a budget cut the listing short (see ``notes``)."""

    broker: str
    kind: str
    taken_at: float  # time.time() when the poll started
    duration_s: float
    overview: BrokerOverview
    queues: tuple[QueueStats, ...]
    partial: bool = False
    notes: tuple[str, ...] = ()
    groups: tuple[GroupLag, ...] = ()

    def queue(self, name: str) -> QueueStats | None:
        return next((q for q in self.queues if q.name == name), None)


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    queue: str
    tag: str
    connection: str | None  # peer host:port or connection name
    channel: str | None
    prefetch: int | None
    ack_required: bool | None
    active: bool | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    pending: int | None = None  # Redis streams: delivered to this consumer, not yet acknowledged
    idle_ms: int | None = None  # Redis streams: since this consumer's last attempted interaction


@dataclass(frozen=True, slots=True)
class DeathRecord:
    """One dead-lettering event (RabbitMQ x-death entry, or a DLQ's recorded reason elsewhere)."""

    queue: str | None
    reason: str | None  # rejected | expired | maxlen | delivery_limit | ...
    count: int
    exchange: str | None = None
    routing_keys: tuple[str, ...] = ()
    time: datetime | None = None
    original_id: str | None = None  # the message's id where it failed (Redis stream entry id, RQ job id)
    group: str | None = None  # the consumer group that gave up on it (Redis streams)
    consumer: str | None = None  # the consumer (or worker) that last had it
    attempts: int | None = None  # deliveries before it was dead-lettered, where the record says (then ``count``)


@dataclass(frozen=True, slots=True)
class HeaderValue:
    """One record header, exactly: ``text`` when the value is valid UTF-8, else ``base64`` (one is set, or
    neither for a null value); ``decoded`` is a known convention's value as text (Spring's big-endian ints
    and longs, epoch-millisecond timestamps as ISO 8601)."""

    key: str
    text: str | None
    base64: str | None
    decoded: str | None = None


PEEK_BODY_BYTES = 64 * 1024
"""How much of each body a peek returns unless asked otherwise (``body_bytes=None``: the whole body). The CLI, the
console and every probe use this one figure."""


def cut_body(body: bytes, limit: int | None) -> tuple[bytes, bool]:
    """``body`` cut to ``limit`` bytes (None: whole), and whether it was cut."""
    if limit is None or len(body) <= limit:
        return body, False
    return body[:limit], True


@dataclass(frozen=True, slots=True)
class PeekedMessage:
    position: int  # 0-based place in the walk (pages before included; the offset / stream id is in ``message_id``)
    body: bytes
    size: int  # the full body size in bytes (``body`` may be truncated)
    body_truncated: bool
    exchange: str | None = None
    routing_key: str | None = None
    redelivered: bool | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    key: bytes | None = None  # Kafka record key
    partition: int | None = None
    offset: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)  # application headers, x-death excluded
    properties: Mapping[str, Any] = field(default_factory=dict)  # content type, delivery mode, ...
    deaths: tuple[DeathRecord, ...] = ()  # most recent first, as RabbitMQ orders x-death
    first_death_reason: str | None = None
    first_death_queue: str | None = None
    first_death_exchange: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    key_text: str | None = None  # the record key as text when it is valid UTF-8 (``key`` holds the bytes)
    header_list: tuple[HeaderValue, ...] = ()  # Kafka: every header in order, duplicates kept, exactly encoded
    consumer: str | None = None  # Redis pending entries: the consumer that holds it
    idle_ms: int | None = None  # Redis pending entries: since its last delivery
    delivery_count: int | None = None  # Redis pending entries: times delivered

    @property
    def death_reason(self) -> str | None:
        return self.deaths[0].reason if self.deaths else self.first_death_reason

    @property
    def death_count(self) -> int:
        return sum(d.count for d in self.deaths)

    @property
    def original_queue(self) -> str | None:
        return self.first_death_queue or (self.deaths[-1].queue if self.deaths else None)

    @property
    def original_exchange(self) -> str | None:
        if self.first_death_exchange is not None:
            return self.first_death_exchange
        return self.deaths[-1].exchange if self.deaths else None

    @property
    def original_routing_keys(self) -> tuple[str, ...]:
        return self.deaths[-1].routing_keys if self.deaths else ()

    @property
    def first_death_time(self) -> datetime | None:
        times = [d.time for d in self.deaths if d.time is not None]
        return min(times) if times else None

    @property
    def last_death_time(self) -> datetime | None:
        times = [d.time for d in self.deaths if d.time is not None]
        return max(times) if times else None


@dataclass(frozen=True, slots=True)
class KafkaRange:
    """What is left of one partition in a paged Kafka peek: offsets ``low`` (inclusive) to ``high`` (exclusive).
    Oldest first reads up from ``low``; newest first reads down from ``high``."""

    partition: int
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class PeekCursor:
    """Where the next page of a peek starts: the rest of the walk, exactly (no gaps, no repeats), in the order and
    the range the first page chose. ``probes.paging`` writes it as a token (``--after``) and reads it back."""

    kind: str  # the broker kind whose peek made it
    queue_tag: str  # a checksum of the queue's name: a cursor pages one queue
    newest: bool
    shown: int  # messages on the pages before this one
    total: int | None = None  # the walk's size when it started, where the range is fixed (Kafka, Redis streams)
    pending: str | None = None  # Redis streams: paging this group's pending entries
    ranges: tuple[KafkaRange, ...] = ()  # Kafka: what is left per partition
    low: str | None = None  # Redis streams: the id range left, in XRANGE's words ("-", "ID", "(ID", "+")
    high: str | None = None
    skip: int | None = None  # lists, RQ registries, RabbitMQ, memory: messages before this page from the reading end


@dataclass(frozen=True, slots=True)
class PeekFrom:
    """Where a peek starts and which way it reads. ``after`` continues an earlier peek (it fixes both; nothing else
    may be set with it). Which broker takes which field is one rule: ``probes.paging.start_problem``."""

    newest: bool = False  # newest first
    partition: int | None = None  # Kafka: this partition only
    offset: int | None = None  # Kafka: from this offset (negative: that many before the end)
    since: datetime | None = None  # Kafka, Redis streams: records at or after this time
    group: str | None = None  # Kafka: from its committed offsets; Redis streams: after its last-delivered entry
    pending: str | None = None  # Redis streams: this group's pending entries (idle time, delivery count)
    after: PeekCursor | None = None


@dataclass(frozen=True, slots=True)
class PeekResult:
    broker: str
    queue: str
    messages: tuple[PeekedMessage, ...]
    side_effect: str | None = None  # what the peek did to the broker, said plainly (None: nothing)
    first: int = 0  # the first message's place in the walk (0-based): messages on the pages before
    total: int | None = None  # messages in the walk (the queue, or the range asked for); None: not known
    next: PeekCursor | None = None  # the next page; None: this is the last
    order: str | None = None  # how the messages are ordered, in words ("oldest first", ...)
    scope: str | None = None  # the range read when not the whole queue ("since ...", "pending entries of ...")
    notes: tuple[str, ...] = ()  # what the reader should know (partitions with no committed offset, ...)
