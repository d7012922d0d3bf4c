"""The raw AMQP paths of the RabbitMQ dead-letter redrive, without a broker: property bytes read as pika reads them,
a headers table edited entry by entry (every other byte kept, field types pika cannot write included), publishes
marshalled to pika's very bytes, and deliveries handed over with their property bytes as they came."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pika.exceptions as pexc
import pytest
from pika import data, frame, spec

from probes.dlq.model import Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID, redrive_headers
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from probes.rabbitmq.amqp_properties import Table, read_properties, splice_headers
from probes.rabbitmq.dlq_records import PROPERTY_NAMES, basic_properties, raw_properties, to_record
from probes.rabbitmq.publish_frames import PublishFrames
from tests.loadgen.test_amqp_deliveries import _Channel, _Conn, _deliver
from tests.pika_writes import WriteChannel, WriteConn

WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
X_DEATH = [{"count": 1, "reason": "rejected", "queue": "work", "time": WHEN, "exchange": "",
            "routing-keys": ["work"]}]


def encoded(props: spec.BasicProperties) -> bytes:
    return b"".join(props.encode())


def entry(name: bytes, kind: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + kind + value


def with_table(entries: list[bytes], **props: Any) -> bytes:
    """Property bytes whose headers table is ``entries`` as written (types pika cannot write included)."""
    plain = encoded(spec.BasicProperties(**props))
    flags = struct.unpack_from(">H", plain)[0] | spec.BasicProperties.FLAG_HEADERS
    table = b"".join(entries)
    at = 2 + sum(1 + plain[2] for _ in [0] if props.get("content_type") is not None)  # after content_type
    return struct.pack(">H", flags) + plain[2:at] + struct.pack(">I", len(table)) + table + plain[at:]


EVERY = spec.BasicProperties(content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                             priority=3, correlation_id="c-1", reply_to="replies", expiration="60000",
                             message_id="m-1", timestamp=1_714_557_600, type="infer", user_id="guest",
                             app_id="qdeck-test", cluster_id="c",
                             headers={"x-death": X_DEATH, "x-first-death-queue": "work", "tenant": "acme",
                                      "price": Decimal("9.95"), "raw": b"\x00\xff", "none": None, "ok": True,
                                      "x-delivery-count": 2, "CC": ["other"], REDRIVE_COUNT: 1, "big": 2**40})


@pytest.mark.parametrize("props", [EVERY, spec.BasicProperties(), spec.BasicProperties(message_id="only"),
                                   spec.BasicProperties(content_type="text/plain", headers={"a": 1}, priority=0)])
def test_properties_read_as_pika_reads_them(props: spec.BasicProperties) -> None:
    raw = encoded(props)
    read = read_properties(raw)
    assert read is not None
    values, table = read
    decoded = spec.BasicProperties().decode(raw)
    assert values == {n: getattr(decoded, n) for n in PROPERTY_NAMES if getattr(decoded, n) is not None}
    assert list(values) == [n for n in PROPERTY_NAMES if n in values]  # in AMQP's order, as the record had them
    if props.headers is None:
        assert table.start == table.end
    else:
        assert data.decode_table(raw, table.start)[0] == decoded.headers and table.end <= len(raw)
    # and the record of a delivery is the same whether it came as bytes or as pika's decoded properties
    as_bytes, as_pika = to_record(1, raw, b"body"), to_record(1, decoded, b"body")
    assert (as_bytes.id, as_bytes.headers, dict(as_bytes.properties), as_bytes.reason, as_bytes.origin,
            as_bytes.redrives) == (as_pika.id, as_pika.headers, dict(as_pika.properties), as_pika.reason,
                                   as_pika.origin, as_pika.redrives)


def test_a_redrive_writes_what_pika_would_but_keeps_every_other_byte() -> None:
    r = to_record(7, encoded(EVERY), b"body")
    extra = redrive_headers(r)
    spliced = raw_properties(r, extra)
    assert spliced is not None
    # what the values say is what pika's encode of the same record says (x-delivery-count and CC dropped,
    # qdeck's headers replaced and appended) ...
    assert spec.BasicProperties().decode(spliced).__dict__ == spec.BasicProperties().decode(
        encoded(basic_properties(r, extra))).__dict__
    headers = spec.BasicProperties().decode(spliced).headers
    assert list(headers)[-2:] == [REDRIVE_ID, REDRIVE_COUNT] and headers[REDRIVE_COUNT] == 2
    assert "x-delivery-count" not in headers and "CC" not in headers
    # ... and the other properties are the delivered bytes, unchanged
    read = read_properties(spliced)
    assert read is not None and read[0] == read_properties(encoded(EVERY))[0]  # type: ignore[index]


def test_field_types_pika_cannot_write_travel_byte_for_byte() -> None:
    kept = [entry(b"f32", b"f", struct.pack(">f", 1.5)), entry(b"f64", b"d", struct.pack(">d", 2.25)),
            entry(b"short", b"s", struct.pack(">h", -7)), entry(b"octet", b"b", b"\xfe"),
            entry(b"u16", b"u", b"\x01\x02"), entry(b"L64", b"L", struct.pack(">q", 5)),
            entry(b"latin1", b"S", struct.pack(">I", 3) + b"\xe9t\xe9"),
            entry(b"nested", b"F", struct.pack(">I", 4) + entry(b"k", b"t", b"\x01")),
            entry(b"arr", b"A", struct.pack(">I", 2) + b"B\x09")]
    dropped = [entry(b"x-delivery-count", b"l", struct.pack(">q", 3)), entry(REDRIVE_COUNT.encode(), b"I", b"\0\0\0\1")]
    raw = with_table(kept[:4] + dropped[:1] + kept[4:] + dropped[1:], content_type="text/plain", message_id="m")
    r = to_record(1, raw, b"x")
    out = raw_properties(r, {REDRIVE_ID: "m", REDRIVE_COUNT: 2})
    assert out is not None
    values, table = read_properties(out)  # type: ignore[misc]
    assert values == {"content_type": "text/plain", "message_id": "m"}
    pieces: list[bytes] = []
    for name, value in ((REDRIVE_ID, "m"), (REDRIVE_COUNT, 2)):
        data.encode_short_string(pieces, name)
        data.encode_value(pieces, value)
    assert out[table.start + 4:table.end] == b"".join(kept) + b"".join(pieces)


def test_a_table_it_cannot_read_is_left_to_pika() -> None:
    unknown = with_table([entry(b"odd", b"Z", b"")])
    assert splice_headers(unknown, read_properties(unknown)[1], frozenset(), {"a": 1}) is None  # type: ignore[index]
    cut = with_table([entry(b"s", b"S", struct.pack(">I", 99) + b"abc")])
    assert splice_headers(cut, Table(2, len(cut)), frozenset(), {}) is None
    not_delivered = Record(id="i", body=b"", handle=None)
    assert raw_properties(not_delivered, {"a": 1}) is None
    # and a delivery without headers gets a table
    bare = to_record(3, encoded(spec.BasicProperties(delivery_mode=2)), b"")
    out = raw_properties(bare, {REDRIVE_ID: "h-1", REDRIVE_COUNT: 1})
    assert out is not None
    assert spec.BasicProperties().decode(out).headers == {REDRIVE_ID: "h-1", REDRIVE_COUNT: 1}
    assert spec.BasicProperties().decode(out).delivery_mode == 2




@pytest.mark.parametrize("body_max", [131_064, 380])
def test_publish_frames_are_pikas(body_max: int) -> None:
    conn = WriteConn(body_max)
    frames = PublishFrames(WriteChannel(conn, 4))
    assert frames.direct
    messages = [("", "work", b'{"n": 1}', EVERY), ("dlx", "key", b"", spec.BasicProperties()),
                ("", "work", "ünï".encode() * 300, spec.BasicProperties(headers={"a": [1, "b"]}))]
    parts: list[bytes] = []
    for exchange, key, body, props in messages:
        frames.add(parts, exchange, key, body, encoded(props), mandatory=True)
    frames.write(parts)
    expected = []
    for exchange, key, body, props in messages:
        expected.append(frame.Method(4, spec.Basic.Publish(exchange=exchange, routing_key=key,
                                                           mandatory=True)).marshal())
        expected.append(frame.Header(4, len(body), props).marshal())
        expected += [frame.Body(4, body[i:i + body_max]).marshal() for i in range(0, len(body), body_max)]
    assert conn.written == [b"".join(expected)]  # one write
    assert conn.frames_sent == len(expected) and conn.bytes_sent == len(conn.written[0])
    parts = []
    with pytest.raises(pexc.ShortStringTooLong):
        frames.add(parts, "", "k" * 256, b"", b"\0\0")
    with pytest.raises(ValueError, match="do not fit in one frame"):
        frames.add(parts, "", "work", b"", b"\0\0" + b"x" * body_max)
    assert parts == []  # nothing of a publish that cannot be marshalled


@pytest.mark.parametrize("chunk", [1, 9, 10_000])
def test_a_raw_consumer_gets_the_property_bytes_as_they_came(chunk: int) -> None:
    conn, channel = _Conn(), _Channel()
    got: list[tuple[bytes, int, Any]] = []
    reader = DeliveryReader.of(conn)
    reader.consume(channel, "q", lambda body, tag, props: got.append((body, tag, props)),
                   auto_ack=False, raw=True)
    stream = _deliver(1, "ctag1.q", 1, b"one", EVERY) + _deliver(1, "ctag1.q", 2, b"two" * 9, body_max=5)
    for i in range(0, len(stream), chunk):
        conn._on_data_available(stream[i:i + chunk])
    assert got == [(b"one", 1, encoded(EVERY)), (b"two" * 9, 2, b"\x00\x00")]
    # through pika's path (no internals) the callback gets what pika decoded, encoded again
    class NoInternals:
        pass

    tag = DeliveryReader.of(NoInternals()).consume(channel, "p", lambda b, t, p: got.append((b, t, p)),
                                                   auto_ack=False, raw=True)
    channel.consumers[tag](channel, spec.Basic.Deliver(consumer_tag=tag, delivery_tag=3), EVERY, b"three")
    assert got[-1] == (b"three", 3, encoded(EVERY))
