"""Redis stream entries and list values as ``Record``s, and back: exact, with provenance from the one parser.

A stream entry is a list of (field, value) pairs: order and repeats matter and are kept. The body is the field the
peek shows as the body (``probes.redis_peek.BODY_FIELDS``, in that order of preference; its first occurrence); the
other fields are the headers, in order, values as bytes; ``properties`` say which field held the body and where
(``body_field``, ``body_position``), so writing the record back rebuilds the entry field for field. An entry with no
such field has an empty body and ``body_field`` None: its fields are the message. Provenance (reason, origin,
failed-at) comes from the fields through ``probes.death_fields`` as the peek reads it (qdeck's worker writes
``body``, ``reason``, ``source``, ``attempts``, ``failed_at``).

A list value is only a body: no headers, no id. Its id is a digest of its bytes (equal values are one identity,
counted as many times as they occur); a JSON object body's top-level fields are read for provenance with the same
parser. ``qdeck-redrive-*`` cannot travel with a list value: a list message's redrive count stays 0.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from probes.death_fields import ORIGIN_FIELDS, death_origin
from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID, parse_count, parse_id
from probes.redis_peek import BODY_FIELDS

JSON_FIELDS_LIMIT = 1 << 20  # a list value larger than this is not parsed for provenance
LUA_PAIRS_LIMIT = 3000  # Lua's unpack() takes ~8,000 values: a larger entry is refused, not half written
STREAM_KEYS = ("body_field", "body_position")  # a record read from a stream has these properties


def name_of(raw: bytes) -> str:
    """A field name as text that encodes back to the very bytes (undecodable bytes as surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


def raw_name(name: str) -> bytes:
    raw = _RAW_NAMES.get(name)
    return raw if raw is not None else name.encode("utf-8", "surrogateescape")


_RAW_NAMES = {n: n.encode() for n in (REDRIVE_ID, REDRIVE_COUNT)}


def id_time(entry_id: str) -> datetime | None:
    return _ms_time(entry_id.split("-", 1)[0])


@functools.lru_cache(maxsize=4096)
def _ms_time(ms: str) -> datetime | None:  # entries come in bursts: many share their millisecond
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC) if ms.isdigit() else None


class Held(NamedTuple):
    """A record's handle in its source: the entry id (XDEL) or the value (LREM), and a stream entry's fields as
    Redis gave them (to write the entry back without re-encoding it)."""

    key: bytes
    fields: Sequence[bytes] = ()


class Parsed:
    """One entry or value, parsed, waiting for its origin's key type (a stream or a list) to become a Record."""

    __slots__ = ("body", "count", "died_at", "handle", "headers", "id", "identity", "origin", "origin_field",
                 "properties", "reason", "timestamp")

    def __init__(self, id_: str, handle: Held, body: bytes, headers: tuple[tuple[str, Any], ...],
                 properties: Mapping[str, Any], fields: Mapping[str, str], timestamp: datetime | None,
                 count: Any = None, identity: Any = None) -> None:
        self.id, self.handle, self.body, self.headers = id_, handle, body, headers
        self.properties, self.timestamp, self.count, self.identity = properties, timestamp, count, identity
        death = death_origin(fields, timestamp) if fields else None
        self.origin, self.reason, self.died_at = death if death is not None else (None, None, None)
        self.origin_field = None
        if self.origin:
            for name in ORIGIN_FIELDS:  # the field the origin came from: the first one set (a plain loop: it
                if fields.get(name):  # runs for every message a redrive reads)
                    self.origin_field = name
                    break

    def origin_name(self) -> str | None:
        return self.origin

    def record(self, places: Mapping[str, Place]) -> Record:
        """``places``: the origin named by each queue name (a stream, or a list where the key is one)."""
        origin = places.get(self.origin) if self.origin else None
        # positional, in Record's order (id, body, headers, properties, timestamp, died_at, reason, origin,
        # origin_source, redrives, original_id, handle): a third faster than by keyword, for every message
        return Record(self.id, self.body, self.headers, self.properties, self.timestamp, self.died_at, self.reason,
                      origin, self.origin_field if origin is not None else None, parse_count(self.count),
                      parse_id(self.identity), self.handle)


class _Layout(NamedTuple):
    """Where things are in the entries of one writer (the same field names in the same order)."""

    names: tuple[str, ...]  # every field name, as text
    position: int | None  # the body's field
    header_names: tuple[str, ...]  # the others, in order
    count_at: int | None  # qdeck-redrive-count
    identity_at: int | None  # qdeck-redrive-id
    properties: Mapping[str, Any]  # body_field, body_position (read-only: every record of the layout shares it)


@functools.lru_cache(maxsize=256)
def _layout(raw_names: tuple[bytes, ...]) -> _Layout:
    """An entry's field names as text, where its body is, where its headers are, and where qdeck's count and id
    are: the same for every entry a given writer makes, so worked out once."""
    names = tuple(name_of(n) for n in raw_names)
    body_field = next((k for k in BODY_FIELDS if k in names), None)
    position = names.index(body_field) if body_field is not None else None
    count = names.index(REDRIVE_COUNT) if REDRIVE_COUNT in names else None
    identity = names.index(REDRIVE_ID) if REDRIVE_ID in names else None
    header_names = names if position is None else names[:position] + names[position + 1:]
    properties = MappingProxyType({"body_field": body_field, "body_position": position})
    return _Layout(names, position, header_names, count, identity, properties)


def parse_entry(entry_id: bytes, flat: list[bytes]) -> Parsed:
    """A raw XRANGE entry (id, [field, value, field, value, ...])."""
    eid = entry_id.decode("ascii")
    layout = _layout(tuple(flat[0::2]))
    values = flat[1::2]
    position = layout.position
    if position is None:
        body, rest = b"", values
    else:
        body, rest = values[position], values[:position] + values[position + 1:]
    names = layout.header_names
    headers = tuple(zip(names, rest, strict=True))
    # as the peek reads them (the last of repeated fields)
    fields = dict(zip(names, [v.decode("utf-8", "backslashreplace") for v in rest], strict=True))
    count, identity = layout.count_at, layout.identity_at
    return Parsed(eid, Held(entry_id, flat), body, headers, layout.properties, fields, id_time(eid),
                  values[count] if count is not None else None, values[identity] if identity is not None else None)


def parse_value(value: bytes) -> Parsed:
    """A list value: the body; provenance from a JSON object's top-level fields (qdeck's ``source``, ``reason``)."""
    fields: dict[str, str] = {}
    if value[:1] == b"{" and len(value) <= JSON_FIELDS_LIMIT:
        try:
            doc = json.loads(value)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            fields = {str(k): str(v) for k, v in doc.items()
                      if isinstance(v, str | int | float) and not isinstance(v, bool)}
    digest = hashlib.sha256(value).hexdigest()[:32]
    return Parsed(digest, Held(value), value, (), {}, fields, None)


def with_extra(headers: Sequence[tuple[str, Any]], extra: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``headers`` with qdeck's ``extra`` replacing the first of each name in place (later repeats dropped), the
    rest appended: a redrive keeps the field order, hop after hop."""
    out: list[tuple[str, Any]] = []
    placed: set[str] = set()
    for k, v in headers:
        if k in extra:
            if k not in placed:
                out.append((k, extra[k]))
                placed.add(k)
            continue
        out.append((k, v))
    out += [(k, v) for k, v in extra.items() if k not in placed]
    return out


def value_bytes(v: Any) -> bytes:
    """A header value as a stream field value: bytes as they are, text as UTF-8, others as text."""
    if type(v) is str:
        return v.encode("utf-8", "surrogateescape")
    if type(v) is int:
        return b"%d" % v
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, bool):
        return b"true" if v else b"false"
    if v is None:
        return b""
    if isinstance(v, datetime):
        return v.isoformat().encode()
    if isinstance(v, dict | list):
        return json.dumps(v, default=str, ensure_ascii=False).encode()
    return str(v).encode("utf-8", "surrogateescape")


def stream_fields(r: Record, extra: Mapping[str, Any]) -> list[bytes]:
    """The flat field list to XADD for ``r``: a stream entry field for field (its body back at its place); any
    other record as a ``body`` field followed by its headers."""
    held = r.handle
    if isinstance(held, Held) and held.fields:  # as read: Redis's own bytes, qdeck's fields set as with_extra does
        flat = list(held.fields)
        names = flat[0::2]
        for k, v in extra.items():
            name = raw_name(k)
            found = names.count(name)
            if found > 1:
                break  # repeated: the general way below drops the repeats
            if found:
                flat[2 * names.index(name) + 1] = value_bytes(v)
            else:
                flat += (name, value_bytes(v))
        else:
            return flat
    headers = with_extra(r.headers, extra)
    if all(k in r.properties for k in STREAM_KEYS):
        field, position = r.properties["body_field"], r.properties["body_position"]
        if field is not None:
            at = position if isinstance(position, int) and 0 <= position <= len(headers) else 0
            headers.insert(at, (str(field), r.body))
    else:
        headers.insert(0, ("body", r.body))
    out: list[bytes] = []
    for k, v in headers:
        out += (raw_name(k), value_bytes(v))
    return out


def list_value(r: Record) -> bytes | None:
    """What a list holds for ``r`` (its body); None for a stream entry with no body field (its fields are the
    message: a list cannot hold them)."""
    if all(k in r.properties for k in STREAM_KEYS) and r.properties["body_field"] is None:
        return None
    return r.body
