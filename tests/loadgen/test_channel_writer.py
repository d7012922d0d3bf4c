"""``ChannelWriter`` writes exactly the frames pika's own ``basic_publish`` and ``basic_ack`` would write."""

from __future__ import annotations

from typing import Any

import pika.exceptions as pexc
import pytest
from pika import frame, spec

from loadgen.amqp import ChannelWriter


class _Conn:
    def __init__(self, body_max: int) -> None:
        self._body_max_length = body_max
        self.bytes_sent = self.frames_sent = 0
        self.written: list[bytes] = []

    def _adapter_emit_data(self, data: bytes) -> None:
        self.written.append(data)


class _Channel:
    def __init__(self, conn: _Conn, number: int = 3, is_open: bool = True) -> None:
        self.connection, self.channel_number, self.is_open = conn, number, is_open


def _pika_publish(number: int, body_max: int, key: str, body: bytes) -> bytes:
    """What pika's Connection._send_message marshals for basic_publish('', key, body)."""
    out = [frame.Method(number, spec.Basic.Publish(exchange="", routing_key=key)).marshal(),
           frame.Header(number, len(body), spec.BasicProperties()).marshal()]
    for start in range(0, len(body), body_max):
        out.append(frame.Body(number, body[start:start + body_max]).marshal())
    return b"".join(out)


@pytest.mark.parametrize("body_max", [131_064, 10])
def test_publish_and_ack_bytes_are_pikas(body_max: int) -> None:
    conn = _Conn(body_max)
    writer = ChannelWriter(_Channel(conn))  # type: ignore[arg-type]
    messages = [("requests", b'{"seq":1}'), ("qdeck.reply.ab", b""), ("requests", "ünï".encode() * 9),
                ("requests", b'{"seq":2}')]
    writer.publish(messages)
    writer.ack([1, 2, 2**40])
    assert len(conn.written) == 2  # one write per call
    assert conn.written[0] == b"".join(_pika_publish(3, body_max, k, b) for k, b in messages)
    assert conn.written[1] == b"".join(frame.Method(3, spec.Basic.Ack(delivery_tag=t, multiple=False)).marshal()
                                       for t in (1, 2, 2**40))
    assert conn.bytes_sent == sum(map(len, conn.written))


def test_closed_channel_raises_and_writes_nothing() -> None:
    conn = _Conn(100)
    writer = ChannelWriter(_Channel(conn, is_open=False))  # type: ignore[arg-type]
    with pytest.raises(pexc.ChannelWrongStateError):
        writer.publish([("q", b"x")])
    with pytest.raises(pexc.ChannelWrongStateError):
        writer.ack([1])
    assert conn.written == []


def test_without_pika_internals_it_goes_through_pikas_api() -> None:
    calls: list[Any] = []

    class Channel:
        channel_number, is_open, connection = 1, True, object()

        def basic_publish(self, exchange: str, key: str, body: bytes) -> None:
            calls.append(("publish", exchange, key, body))

        def basic_ack(self, tag: int) -> None:
            calls.append(("ack", tag))

    writer = ChannelWriter(Channel())  # type: ignore[arg-type]
    writer.publish([("q", b"a"), ("q", b"b")])
    writer.ack([7])
    assert calls == [("publish", "", "q", b"a"), ("publish", "", "q", b"b"), ("ack", 7)]
