"""AMQP basic properties as a content header carries them (bytes): read into values, and their headers table edited
entry by entry instead of decoded and encoded again.

``read_properties`` reads every property but the headers with pika's own field decoders (``pika.data``), so each
value is what pika's ``BasicProperties.decode`` gives, and says where the headers table is; a caller decodes the
table (``pika.data.decode_table``) or keeps it as it is. ``splice_headers`` writes the same properties with some
headers taken out of the table and others appended: every other entry stays the bytes it was (its AMQP field type
included), which decoding and encoding again with pika would not keep (pika writes every integer as 'I' or 'l',
reads floats as integers, a long string that is not UTF-8 back as a byte array).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from pika import data, spec

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_P = spec.BasicProperties
# the properties in the order their flags go (the AMQP basic class), with how each is encoded: s a short string,
# B an octet, Q a 64-bit timestamp, F the headers table
FIELDS = (("content_type", _P.FLAG_CONTENT_TYPE, "s"), ("content_encoding", _P.FLAG_CONTENT_ENCODING, "s"),
          ("headers", _P.FLAG_HEADERS, "F"), ("delivery_mode", _P.FLAG_DELIVERY_MODE, "B"),
          ("priority", _P.FLAG_PRIORITY, "B"), ("correlation_id", _P.FLAG_CORRELATION_ID, "s"),
          ("reply_to", _P.FLAG_REPLY_TO, "s"), ("expiration", _P.FLAG_EXPIRATION, "s"),
          ("message_id", _P.FLAG_MESSAGE_ID, "s"), ("timestamp", _P.FLAG_TIMESTAMP, "Q"), ("type", _P.FLAG_TYPE, "s"),
          ("user_id", _P.FLAG_USER_ID, "s"), ("app_id", _P.FLAG_APP_ID, "s"), ("cluster_id", _P.FLAG_CLUSTER_ID, "s"))
# bytes a table value of each AMQP field type takes after its type octet (RabbitMQ's types, and pika's); -1: a
# 32-bit length and that many bytes follow
_FIELD_SIZES = {ord(k): n for k, n in (("t", 1), ("b", 1), ("B", 1), ("U", 2), ("u", 2), ("s", 2), ("I", 4),
                                       ("i", 4), ("f", 4), ("L", 8), ("l", 8), ("d", 8), ("T", 8), ("D", 5),
                                       ("V", 0), ("S", -1), ("x", -1), ("A", -1), ("F", -1))}


class Table(NamedTuple):
    """Where the headers table is in the property bytes: ``start`` its length prefix, ``end`` the byte after it
    (``start == end``: the properties have no headers, and a table would go at ``start``)."""

    start: int
    end: int


def read_properties(raw: bytes) -> tuple[dict[str, Any], Table] | None:
    """The properties in ``raw`` but the headers, by pika's names (those not set left out), and where the headers
    table is. None when ``raw`` has a second flag word (never for basic properties): pika's decode then reads it.
    Bytes cut short raise (``struct.error``, ``IndexError``), as pika's decode does."""
    flags = _U16.unpack_from(raw)[0]
    if flags & 1:
        return None
    out: dict[str, Any] = {}
    pos = 2
    table = None
    for name, flag, kind in FIELDS:
        if not flags & flag:
            if kind == "F":
                table = Table(pos, pos)
            continue
        if kind == "s":
            out[name], pos = data.decode_short_string(raw, pos)
        elif kind == "F":
            end = pos + 4 + _U32.unpack_from(raw, pos)[0]
            if end > len(raw):
                raise IndexError("the headers table runs past the properties")
            table, pos = Table(pos, end), end
        elif kind == "B":
            out[name] = raw[pos]
            pos += 1
        else:
            out[name] = _U64.unpack_from(raw, pos)[0]
            pos += 8
    assert table is not None
    return out, table


def splice_headers(raw: bytes, table: Table, drop: frozenset[bytes], extra: dict[str, Any]) -> bytes | None:
    """``raw`` with the entries of its headers table named in ``drop`` (as bytes) taken out and ``extra`` appended
    (encoded as pika encodes them); every other byte as it was. None when an entry does not read (a field type
    this does not know, a length past the table)."""
    kept: list[bytes] = []
    if table.end > table.start and not _kept_entries(raw, table.start + 4, table.end, drop, kept):
        return None
    pieces: list[bytes] = []
    for name, value in extra.items():
        data.encode_short_string(pieces, name)
        data.encode_value(pieces, value)
    entries = b"".join(kept + pieces)
    flags = _U16.unpack_from(raw)[0] | _P.FLAG_HEADERS
    return b"".join((_U16.pack(flags), raw[2:table.start], _U32.pack(len(entries)), entries, raw[table.end:]))


def _kept_entries(raw: bytes, pos: int, end: int, drop: frozenset[bytes], kept: list[bytes]) -> bool:
    """Append the entries of the table ``raw[pos:end]`` whose names are not in ``drop`` to ``kept`` (runs of
    consecutive entries, as they are); False when an entry does not read."""
    run = pos
    sizes = _FIELD_SIZES
    while pos < end:
        value = pos + 1 + raw[pos]  # the name is a short string; its value's type octet follows it
        if value >= end:
            return False
        size = sizes.get(raw[value], -2)
        if size == -2:
            return False
        if size < 0:
            if value + 5 > end:
                return False
            size = 4 + _U32.unpack_from(raw, value + 1)[0]
        nxt = value + 1 + size
        if nxt > end:
            return False
        if raw[pos + 1:value] in drop:
            if pos > run:
                kept.append(raw[run:pos])
            run = nxt
        pos = nxt
    if end > run:
        kept.append(raw[run:end])
    return True
