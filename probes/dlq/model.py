"""The records and places dead-letter actions work on, and the ledger they keep. Driver-free and frozen."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

PlaceKind = Literal["queue", "exchange", "topic", "stream", "list", "rq"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where a message goes back to (or is moved to).

    - RabbitMQ: ``queue`` (published through the default exchange, routing key = the queue) or ``exchange`` (with
      ``routing_key``: the message's original exchange and key, read from x-death).
    - Kafka: ``topic`` (``partition``: the original partition when the provenance names it and it still exists).
    - Redis: ``stream`` or ``list``; RQ: ``rq`` (the job's origin queue).
    """

    kind: PlaceKind
    name: str
    routing_key: str | None = None  # RabbitMQ exchange places
    partition: int | None = None  # Kafka

    def __str__(self) -> str:
        if self.kind == "exchange":
            return f"exchange {self.name or '(default)'} key {self.routing_key or ''}"
        if self.kind == "topic" and self.partition is not None:
            return f"{self.name}[{self.partition}]"
        return self.name


@dataclass(frozen=True, slots=True)
class Record:
    """One message as a dead-letter action reads it: exact (every property, header and body byte), with what the
    selection and the destination rule need, and the store's own handle for removing it.

    ``headers`` keeps the broker's own types and order: AMQP table values as pika decodes them (str, bytes, int,
    bool, float, Decimal, datetime, dict, list, None), Kafka's (key, bytes | None) pairs in order with duplicates,
    a Redis stream entry's (field, value) byte pairs in order. ``properties`` are the rest: AMQP basic properties
    by pika's names, Kafka ``key``/``timestamp``/``timestamp_type``/``partition``/``offset``, an RQ job's hash.
    """

    id: str  # unique within the source for the broker (Kafka p:o, a Redis entry id, an RQ job id); see ``identity``
    body: bytes
    headers: tuple[tuple[str, Any], ...] = ()
    properties: Mapping[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None  # when the message was first produced, where known
    died_at: datetime | None = None  # when it was (last) dead-lettered, where known
    reason: str | None = None  # why it died: rejected, expired, maxlen, delivery_limit, an exception's last line
    origin: Place | None = None  # where it came from, read from its provenance; None: unknown
    origin_source: str | None = None  # which field told (``x-first-death-queue``, ``kafka_dlt-original-topic`` ...)
    redrives: int = 0  # qdeck-redrive-count already on it
    original_id: str | None = None  # qdeck-redrive-id already on it (its id at the first redrive)
    handle: Any = field(default=None, compare=False, repr=False)  # the store's: a delivery tag, an entry id ...

    def header(self, name: str) -> Any:
        """The first header called ``name`` (case-sensitive), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def identity(self) -> str:
        """What the journal counts this message by: the broker's id where it is unique (Kafka, Redis, RQ; a
        RabbitMQ message_id), else a digest of its content (stores set ``id`` to it). The journal counts each
        identity, so two identical messages are two entries, never one."""
        return self.id


Outcome = Literal["moved", "parked", "skipped", "failed", "deleted", "exported", "duplicate"]


@dataclass
class Ledger:
    """What an action did: ``selected = moved + skipped + failed`` (parked messages are moved, to the parked
    queue); ``examined`` counts every message read, selected or not."""

    examined: int = 0
    selected: int = 0
    moved: int = 0
    parked: int = 0  # of ``moved``: past --max-redrives, moved to ``<source>.parked``
    skipped: int = 0
    failed: int = 0
    deleted: int = 0  # purge / delete
    exported: int = 0
    resumed: int = 0  # confirmed at the destination by an earlier, interrupted run: removed now, not sent again
    possible_duplicates: int = 0  # in flight when an earlier run was killed: may have reached the destination twice
    skip_reasons: Counter[str] = field(default_factory=Counter)
    fail_reasons: Counter[str] = field(default_factory=Counter)
    destinations: Counter[str] = field(default_factory=Counter)  # str(Place) -> messages moved (or planned) there
    reasons: Counter[str] = field(default_factory=Counter)  # death reason -> selected messages
    interrupted: bool = False  # Ctrl-C (or a stop) before the end

    def adds_up(self) -> bool:
        """Whether every selected message is accounted for, once."""
        return self.selected == self.moved + self.skipped + self.failed + self.deleted + self.exported

    def skip(self, why: str) -> None:
        self.skipped += 1
        self.skip_reasons[why] += 1

    def fail(self, why: str, n: int = 1) -> None:
        self.failed += n
        self.fail_reasons[why] += n
