"""Kafka records as the dead-letter actions read and write them, exactly.

Read: a consumed message becomes a ``Record`` with its key, every header in order (duplicates and null values
kept, values as bytes), its timestamp and timestamp type, partition and offset, and a null value told apart from an
empty one. Provenance comes from the parsers that peek uses (``probes.kafka_headers``, ``probes.death_fields``):
Spring's ``kafka_dlt-original-topic`` (+ ``kafka_dlt-original-partition``, a 4-byte big-endian int), Kafka
Connect's ``__connect.errors.topic`` (+ ``__connect.errors.partition``, text) and qdeck's worker's ``source``
field; a topic named by a record that is no recognisable dead letter is not trusted as an origin.

Write: a ``Record`` becomes what ``Producer.produce`` takes: the same key, value, headers (qdeck's own replaced:
the old ones dropped, the new ones appended as UTF-8 text) and CreateTime.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from probes.death_fields import ORIGIN_FIELDS as DEATH_ORIGINS
from probes.death_fields import REASON_FIELDS, TIME_FIELDS, death_from_fields
from probes.dlq.model import Place, Record
from probes.dlq.provenance import QDECK_HEADERS, REDRIVE_COUNT, REDRIVE_ID, parse_count, parse_id
from probes.kafka_headers import CONNECT_TOPIC, SPRING_TOPIC, header_map, header_values, origin_topic
from probes.models import HeaderValue

SPRING_PARTITION = "kafka_dlt-original-partition"
CONNECT_PARTITION = "__connect.errors.partition"
WORKER_TOPIC = "source"
ORIGIN_FIELDS = (SPRING_TOPIC, CONNECT_TOPIC, WORKER_TOPIC)  # the order origin_topic() tries them in
PARTITION_FIELDS = {SPRING_TOPIC: SPRING_PARTITION, CONNECT_TOPIC: CONNECT_PARTITION}
NO_TIMESTAMP, CREATE_TIME, LOG_APPEND_TIME = 0, 1, 2  # confluent_kafka.TIMESTAMP_*
Headers = list[tuple[str, str | bytes | None]]
# the headers a record's provenance is read from; the rest (a Spring stack trace ...) need not be decoded for it
_PROVENANCE = frozenset(REASON_FIELDS + TIME_FIELDS + DEATH_ORIGINS + ORIGIN_FIELDS + QDECK_HEADERS
                        + (SPRING_PARTITION, CONNECT_PARTITION))
_TIMES = frozenset(TIME_FIELDS)
# Dead letters repeat their provenance (an origin, an exception): decoded once, remembered (bounded). A record
# with a time of its own (qdeck's worker's failed_at) is parsed every time.
Provenance = tuple[str | None, datetime | None, str | None, str | None, str | None, str | None, str | None]
_SEEN: dict[tuple[tuple[str, bytes | None], ...], Provenance] = {}
_VALUES: dict[tuple[str, bytes | None], HeaderValue] = {}
_SEEN_MAX = 4096


def to_record(msg: Any, partitions: Mapping[str, int]) -> Record:
    """A consumed message (no error) → Record; ``partitions`` (topic → partition count) says whether the
    original partition a dead letter names still exists."""
    raw = msg.headers() or []
    headers: tuple[tuple[str, bytes | None], ...] = tuple(raw)  # the client hands values as bytes (or None)
    kind, ms = msg.timestamp()
    stamp = _time(ms) if kind != NO_TIMESTAMP else None
    partition, offset = msg.partition(), msg.offset()
    value = msg.value()
    props: dict[str, Any] = {"key": msg.key(), "timestamp": ms if kind != NO_TIMESTAMP else None,
                             "timestamp_type": kind, "partition": partition, "offset": offset}
    if value is None:
        props["value_null"] = True  # a tombstone: written back as null, not as an empty value
    died_at = stamp if kind == LOG_APPEND_TIME else None  # appended to the dead-letter topic then
    origin = origin_field = reason = None
    count = seen_id = None
    if headers:
        known = tuple([h for h in raw if h[0] in _PROVENANCE])
        timed = any(h[0] in _TIMES for h in known)  # a time of its own (qdeck's worker): parsed every time
        found = None if timed else _SEEN.get(known)  # Spring's and Connect's repeat per origin and exception
        if found is None:
            found = _provenance(known)
            if not timed:
                if len(_SEEN) >= _SEEN_MAX:
                    _SEEN.clear()
                _SEEN[known] = found
        reason, when, name, origin_field, number, count, seen_id = found
        died_at = when or died_at
        if name is not None:
            origin = Place("topic", name, partition=_partition(number, partitions.get(name)))
    return Record(id=f"{partition}:{offset}", body=value or b"", headers=headers, properties=props,
                  timestamp=stamp, died_at=died_at, reason=reason, origin=origin, origin_source=origin_field,
                  redrives=parse_count(count), original_id=parse_id(seen_id), handle=(partition, offset))


def _provenance(known: tuple[tuple[str, bytes | None], ...]) -> Provenance:
    """(reason, died at, origin topic, the field that named it, its partition as text, qdeck-redrive-count,
    qdeck-redrive-id) from the provenance headers, by peek's parsers."""
    fields = header_map(_header_value(pair) for pair in known)
    count, seen_id = fields.get(REDRIVE_COUNT), fields.get(REDRIVE_ID)  # the last of each, as Kafka reads them
    death = death_from_fields(fields)
    if death is None:
        return None, None, None, None, None, count, seen_id
    when = death.time if death.time is None or death.time.tzinfo else death.time.replace(tzinfo=UTC)
    name = origin_topic(fields)
    if not name:
        return death.reason, when, None, None, None, count, seen_id
    field = next(f for f in ORIGIN_FIELDS if fields.get(f) == name)
    return death.reason, when, name, field, fields.get(PARTITION_FIELDS.get(field, "")), count, seen_id


def _header_value(pair: tuple[str, bytes | None]) -> HeaderValue:
    """One header decoded by ``header_values`` (remembered: the reason, the origin and the attempts repeat)."""
    if pair[0] in _TIMES:
        return header_values((pair,))[0]
    found = _VALUES.get(pair)
    if found is None:
        found = _VALUES[pair] = header_values((pair,))[0]
        if len(_VALUES) > _SEEN_MAX:
            _VALUES.clear()
    return found


def _time(ms: int | None) -> datetime | None:
    if ms is None or ms < 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _partition(text: str | None, count: int | None) -> int | None:
    """The original partition when the header names one the topic still has."""
    if text is None or count is None or not text.strip().isdigit():
        return None
    number = int(text)
    return number if number < count else None


def header_bytes(value: Any) -> bytes | None:
    """A header value as Kafka carries it: bytes as they are, None as null, text as UTF-8, others as their text
    (an imported file written by hand may hold them)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode("utf-8")


def produce_args(r: Record, extra: Mapping[str, Any] | None) -> tuple[bytes | None, bytes | None, Headers, int]:
    """(key, value, headers, timestamp ms; 0 = the producer's clock) to write ``r`` again, with ``extra`` headers
    replacing any of the same name."""
    drop = extra or ()
    headers: Headers = [(k, v if v is None or type(v) is bytes else header_bytes(v)) for k, v in r.headers
                        if k not in drop]
    if extra:
        headers += [(k, header_bytes(v)) for k, v in extra.items()]
    props = r.properties
    key = props.get("key")
    if key is not None and not isinstance(key, bytes):
        key = header_bytes(key)
    value = None if props.get("value_null") else r.body
    stamp = props.get("timestamp")
    if props.get("timestamp_type") != CREATE_TIME or not isinstance(stamp, int) or isinstance(stamp, bool) \
            or stamp <= 0:
        stamp = 0
    return key, value, headers, stamp


def original_partition(r: Record) -> int | None:
    """The partition the record was read from (an export keeps it), for an import that restores a topic."""
    p = r.properties.get("partition")
    return p if isinstance(p, int) and not isinstance(p, bool) and p >= 0 else None
