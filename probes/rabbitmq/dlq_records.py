"""RabbitMQ messages as the dead-letter actions read and write them, exactly.

Read: a delivery becomes a ``Record``: its body, every basic property pika decodes (by pika's names, absent ones
left out) and its headers table in order, with the types pika decodes (str, bytes, int, bool, Decimal, datetime,
dict, list, None). One header is left out: ``x-delivery-count``, which a quorum queue sets on each redelivery (it
belongs to the queue's bookkeeping, not to the message; published again it would mislead the next consumer).
Provenance comes from the rules peek uses (``probes.rabbitmq.deadletter.parse_deaths`` and ``PeekedMessage``'s
``original_queue`` / ``death_reason`` / ``last_death_time``): the origin is ``x-first-death-queue``, else the oldest
x-death entry's queue; the reason the most recent death's; else qdeck's worker's ``reason``/``source``/
``failed_at`` headers (``probes.death_fields``). The id is the ``message_id`` property, else a digest of the
message (body, properties, headers), stable across reads.

Write: a ``Record`` becomes ``basic_publish`` arguments: the same properties and headers (x-death included, so a
message that dies again has its count raised instead of a new entry), qdeck's headers replaced, not appended.
A message read by this walk (redrive, move) is written with the property bytes it came with (``raw_properties``):
its headers table is copied entry by entry as the broker delivered it, every value with its AMQP type, byte for
byte, but for the entries dropped below and qdeck's two headers, which are dropped where they were and appended
(encoded as pika encodes them: a long string, a 32-bit integer). A record that did not come from a delivery (an
import) is encoded by pika from its values, and a few AMQP field types then change: short and 32-bit integers go
back as 32-bit ('I'; 64-bit ones stay 64-bit where the value needs 64 bits), a long string that is not UTF-8 goes
back as a byte array ('x'), and float and double values ('f', 'd'), which pika 1.x decodes as truncated integers,
as their integer part. Deliveries are parsed off the socket (``probes.rabbitmq.amqp_deliveries``, raw) and their
properties decoded by pika (``to_record``).
Two things are deliberately not carried over:

- ``CC``/``BCC`` headers (sender-selected distribution): published again they would copy the message to the
  queues they name besides the destination; a redrive goes to one queue.
- nothing is restored: RabbitMQ takes ``expiration`` off a message when it dead-letters it (keeping it in the
  x-death entry's ``original-expiration``); a redriven message keeps what the dead-letter queue holds, so it does
  not expire again by the per-message TTL that killed it (a destination's queue TTL still applies). A message that
  still carries ``expiration`` (published straight into the dead-letter queue) keeps it, restarted from now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pika import data, spec

from probes.death_fields import ORIGIN_FIELDS, death_from_fields
from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID, parse_count, parse_id
from probes.models import PeekedMessage
from probes.rabbitmq.amqp_properties import FIELDS, Table, read_properties, splice_headers
from probes.rabbitmq.deadletter import parse_deaths

PROPERTY_NAMES = tuple(name for name, _flag, _kind in FIELDS if name != "headers")  # pika's names, in AMQP's order
BROKER_HEADERS = frozenset({"x-delivery-count"})
ROUTING_HEADERS = frozenset({"CC", "BCC"})
DEATH_HEADERS = frozenset({"x-death", "x-first-death-queue", "x-first-death-reason", "x-first-death-exchange"})
_WORKER_FIELDS = frozenset(("reason", "failed_at", "attempts", *ORIGIN_FIELDS))


class Delivered(NamedTuple):
    """A record's handle: its delivery tag, and the property bytes it was delivered with and where their headers
    table is (written back as they are, but for the headers ``raw_properties`` changes)."""

    tag: int
    properties: bytes | None = None
    table: Table | None = None


class _Facts(NamedTuple):
    """What a record takes from its headers table."""

    headers: tuple[tuple[str, Any], ...]
    reason: str | None
    died_at: datetime | None
    origin: Place | None
    origin_source: str | None
    redrives: int
    original_id: str | None


# Dead letters that died together carry the same table (x-death's time is in seconds): read once, remembered by its
# bytes (bounded). Records read from the same bytes share its decoded values: read them, never change them.
_TABLES: dict[bytes, _Facts] = {}
_TABLES_MAX = 1024
_TABLE_BYTES_MAX = 16 << 10  # larger tables are read each time


def to_record(tag: int, delivered: spec.BasicProperties | bytes, body: bytes) -> Record:
    """A delivery (its tag, its properties: the content header's bytes, or as pika decoded them; the body) →
    Record."""
    read = read_properties(delivered) if isinstance(delivered, bytes) else None
    if read is not None:
        assert isinstance(delivered, bytes)
        properties, table = read
        raw = delivered[table.start:table.end]
        facts = _TABLES.get(raw)
        if facts is None:
            facts = _facts(data.decode_table(raw, 0)[0] if raw else {})
            if len(raw) <= _TABLE_BYTES_MAX:
                if len(_TABLES) >= _TABLES_MAX:
                    _TABLES.clear()
                _TABLES[raw] = facts
        handle = Delivered(tag, delivered, table)
    else:
        props = spec.BasicProperties().decode(delivered) if isinstance(delivered, bytes) else delivered
        properties = {name: value for name in PROPERTY_NAMES if (value := getattr(props, name, None)) is not None}
        facts = _facts(props.headers or {})
        handle = Delivered(tag)
    message_id = properties.get("message_id")
    rid = message_id if isinstance(message_id, str) and message_id else digest(body, properties, facts.headers)
    return Record(id=rid, body=body, headers=facts.headers, properties=properties,
                  timestamp=_when(properties.get("timestamp")), died_at=facts.died_at, reason=facts.reason,
                  origin=facts.origin, origin_source=facts.origin_source, redrives=facts.redrives,
                  original_id=facts.original_id, handle=handle)


def _facts(table: Mapping[str, Any]) -> _Facts:
    headers = tuple((k, v) for k, v in table.items() if k not in BROKER_HEADERS) \
        if "x-delivery-count" in table else tuple(table.items())
    origin = origin_source = reason = None
    died_at = None
    if "x-death" in table or "x-first-death-queue" in table:
        reason, died_at, origin, origin_source = _broker_death(table)
    elif _WORKER_FIELDS.intersection(table):
        fields = {k: text for k, v in table.items() if (text := _text(v)) is not None}
        death = death_from_fields(fields)
        if death is not None:
            reason, died_at = death.reason, death.time
            if death.queue:
                origin = Place("queue", death.queue)
                origin_source = next((f for f in ORIGIN_FIELDS if fields.get(f) == death.queue), None)
    redrives = parse_count(table.get(REDRIVE_COUNT)) if REDRIVE_COUNT in table else 0
    original = parse_id(table.get(REDRIVE_ID)) if REDRIVE_ID in table else None
    return _Facts(headers, reason, died_at, origin, origin_source, redrives, original)


Death = tuple[str | None, datetime | None, Place | None, str | None]  # reason, died at, origin, origin's header
_DEATHS: dict[tuple[Any, ...], Death] = {}  # dead letters repeat their x-death: parsed once, remembered (bounded)
_DEATHS_MAX = 4096


def _broker_death(table: Mapping[str, Any]) -> Death:
    """Reason, time, origin (and the header that named it) of a broker dead letter, by peek's rules. Only the
    entries' queue, reason, count and time and the x-first-death-* headers matter to them: the key of the cache."""
    entries = table.get("x-death")
    key: tuple[Any, ...] = (table.get("x-first-death-queue"), table.get("x-first-death-reason"),
                            table.get("x-first-death-exchange"))
    if isinstance(entries, list):
        key += tuple((e.get("queue"), e.get("reason"), e.get("count"), e.get("time")) if isinstance(e, dict)
                     else None for e in entries)
    try:
        return _DEATHS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value (a table where text was expected): parsed, not remembered
        key = ()
    deaths, first_reason, first_queue, first_exchange = parse_deaths(_epoch_times(table))
    view = PeekedMessage(position=0, body=b"", size=0, body_truncated=False, deaths=deaths,
                         first_death_reason=first_reason, first_death_queue=first_queue,
                         first_death_exchange=first_exchange)
    origin = Place("queue", view.original_queue) if view.original_queue else None
    found = (view.death_reason, view.last_death_time, origin,
             ("x-first-death-queue" if first_queue else "x-death") if origin else None)
    if key:
        if len(_DEATHS) >= _DEATHS_MAX:
            _DEATHS.clear()
        _DEATHS[key] = found
    return found


def digest(body: bytes, properties: Mapping[str, Any], headers: tuple[tuple[str, Any], ...]) -> str:
    """An id for a message without a message_id: the same message gives the same id on every read (the
    redelivered flag and x-delivery-count are not part of it)."""
    h = hashlib.blake2b(body, digest_size=10)
    h.update(repr(sorted(properties.items())).encode("utf-8", "backslashreplace"))
    h.update(repr(_canonical(headers)).encode("utf-8", "backslashreplace"))
    return "h-" + h.hexdigest()


def _canonical(value: Any) -> Any:
    """``value`` with pika's ``long`` (an int subclass for 64-bit table fields) as a plain int, so a message reads
    to the same digest after an export and import (the codec keeps integers as integers, not their width)."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def basic_properties(r: Record, extra: Mapping[str, Any]) -> spec.BasicProperties:
    """What ``basic_publish`` takes for ``r``, with ``extra`` headers replacing its own of the same names.
    Properties that are not AMQP basic properties (an export of another broker's records) are left out."""
    headers = {k: v for k, v in r.headers if k not in extra and k not in ROUTING_HEADERS}
    headers.update(extra)
    props = {k: v for k, v in r.properties.items() if k in PROPERTY_NAMES}
    return spec.BasicProperties(headers=headers or None, **props)


_DROPPED = frozenset(n.encode() for n in (*BROKER_HEADERS, *ROUTING_HEADERS))


def raw_properties(r: Record, extra: Mapping[str, Any]) -> bytes | None:
    """The property bytes to publish ``r`` with when a walk delivered it: those it came with, its headers table
    copied entry by entry but for what ``basic_properties`` drops too (the broker's and the routing headers, and
    ``extra``'s names), with ``extra`` appended. None for any other record, or bytes this does not read (an
    unknown field type): ``basic_properties`` then encodes it from its values."""
    held = r.handle
    if not isinstance(held, Delivered) or held.properties is None or held.table is None:
        return None
    drop = _DROPPED.union(k.encode("utf-8", "surrogateescape") for k in extra)
    return splice_headers(held.properties, held.table, drop, dict(extra))


def user_id_problem(r: Record, user: str) -> str | None:
    """RabbitMQ closes the channel of a publish whose ``user_id`` is not the connection's user (unless the user
    has the impersonator tag): such a record fails alone instead of taking its batch down."""
    uid = r.properties.get("user_id")
    if uid is None or uid == user:
        return None
    return (f"its user_id property {uid!r} is not the connection's user {user!r}, and RabbitMQ refuses that: "
            "run it as that user (or one with the impersonator tag)")


def _epoch_times(table: Mapping[str, Any]) -> Mapping[str, Any]:
    """pika decodes x-death ``time`` as a datetime; ``parse_deaths`` reads epoch seconds (the management API's)."""
    entries = table.get("x-death")
    if not isinstance(entries, list):
        return table
    fixed = [dict(e, time=e["time"].timestamp()) if isinstance(e, dict) and isinstance(e.get("time"), datetime)
             else e for e in entries]
    return {"x-death": fixed, **{k: table[k] for k in DEATH_HEADERS if k in table and k != "x-death"}}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _when(stamp: Any) -> datetime | None:
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        return None
    try:
        return datetime.fromtimestamp(stamp, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
