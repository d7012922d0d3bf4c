"""Deliveries read straight off a pika connection's bytes: Basic.Deliver + content header + body, parsed here.

pika turns every delivery into three frame objects, a method object, a properties object and a chain of callbacks:
about a third of the CPU of both ends of the request/reply path (the worker consuming requests, the load generator
consuming replies) at tens of thousands of messages a second. ``DeliveryReader`` sits in front of pika's frame
parser on one connection: a complete delivery for a consumer registered with it is parsed with ``struct`` and handed
to its callback as ``(body, delivery_tag, properties)``; every other frame (heartbeats, RPC replies, channel closing,
deliveries for other consumers, returns) goes to pika, whole and in order, so pika's state stays pika's.

The consumer is registered with pika too (``basic_consume``), so cancelling, closing and acking stay pika's API;
a cancelled consumer's deliveries go to pika, which rejects them as it always does. It relies on pika internals
(``_on_data_available``, ``_frame_buffer``, the byte and frame counters the heartbeat checker reads); without them
deliveries go through pika's own path with the same callback signature (tested both ways).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pika import spec
from pika.channel import Channel

OnDelivery = Callable[[bytes, int, Any], None]
"""``(body, delivery_tag, properties)``; properties is a ``pika.BasicProperties`` (shared and empty when the
message has none: read it, never change it)."""

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_DELIVER = b"\x00\x3c\x00\x3c"  # Basic (60) . Deliver (60)
_Q = struct.Struct(">Q")
_HEADER_FIXED = struct.Struct(">HHQH")  # class, weight, body size, first property flags
_END = spec.FRAME_END
_NO_PROPERTIES = spec.BasicProperties()


def _pika_callback(on_delivery: OnDelivery) -> Callable[[Any, Any, Any, bytes], None]:
    def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
        on_delivery(body, method.delivery_tag, properties)

    return on_message


def _frame_end(buf: bytes, pos: int, size: int, kind: int, number: int) -> int | None:
    """Where the frame at ``pos`` ends (its frame-end octet) if it is complete and of ``kind`` on channel
    ``number``; None while it is incomplete; -1 when it is another frame."""
    if size - pos < 8:
        return None
    found, channel, length = _HEAD.unpack_from(buf, pos)
    end: int = pos + 7 + length
    if end >= size:
        return None
    if found != kind or channel != number or buf[end] != _END:
        return -1
    return end


class DeliveryReader:
    """Parses the deliveries of registered consumers on one pika connection; pika parses the rest."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self._pika_data = getattr(connection, "_on_data_available", None)
        self.direct = self._pika_data is not None and hasattr(connection, "_frame_buffer")
        self._consumers: dict[tuple[int, bytes], tuple[Channel, OnDelivery]] = {}
        self._buffer = b""
        self._installed = False

    @classmethod
    def of(cls, connection: Any) -> DeliveryReader:
        """The connection's reader (one per connection, made on first use)."""
        reader = getattr(connection, "_qdeck_delivery_reader", None)
        if reader is None:
            reader = cls(connection)
            connection._qdeck_delivery_reader = reader
        return reader

    def consume(self, channel: Channel, queue: str, on_delivery: OnDelivery, *, auto_ack: bool) -> str:
        """``basic_consume`` whose deliveries reach ``on_delivery(body, delivery_tag, properties)``."""
        tag = channel.basic_consume(queue, _pika_callback(on_delivery), auto_ack=auto_ack)
        if self.direct and isinstance(getattr(channel, "_cancelled", None), set):
            self._consumers[(channel.channel_number, tag.encode())] = (channel, on_delivery)
            self._install()
        return str(tag)

    def _install(self) -> None:
        if self._installed:
            return
        conn = self.connection
        # Whatever pika holds of a frame not yet complete becomes the start of this reader's buffer.
        self._buffer, conn._frame_buffer = bytes(conn._frame_buffer), b""
        conn._on_data_available = self.data_received
        self._installed = True

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        pos = 0
        to_pika = self._pika_data
        assert to_pika is not None
        unpack_head = _HEAD.unpack_from
        try:
            while size - pos >= 8:
                kind, number, length = unpack_head(buf, pos)
                end = pos + 7 + length  # the frame-end octet
                if end >= size:
                    break
                if kind == 1 and buf[pos + 7:pos + 11] == _DELIVER and buf[end] == _END:
                    parsed = self._delivery(buf, pos, number, end, size)
                    if parsed is None:
                        break  # its content is still on the way
                    if parsed:
                        (on_delivery, body, delivery_tag, properties), pos = parsed
                        on_delivery(body, delivery_tag, properties)
                        continue
                # Anything else, or a delivery this reader does not own: pika parses it, a whole frame at a time.
                frame, pos = buf[pos:end + 1], end + 1
                to_pika(frame)
        finally:
            self._buffer = buf[pos:]

    def _delivery(self, buf: bytes, pos: int, number: int, end: int,
                  size: int) -> tuple[tuple[OnDelivery, bytes, int, Any], int] | tuple[()] | None:
        """A complete delivery at ``pos``: ((callback, body, tag, properties), next position); None when
        its content frames are not all here yet; () when it is not this reader's to parse."""
        p = pos + 11
        tag_len = buf[p]
        key = (number, buf[p + 1:p + 1 + tag_len])
        owner = self._consumers.get(key)
        if owner is None:
            return ()
        channel, on_delivery = owner
        if not channel.is_open or (channel._cancelled and key[1].decode() in channel._cancelled):
            return ()
        (delivery_tag,) = _Q.unpack_from(buf, p + 1 + tag_len)
        # The content header.
        hpos = end + 1
        hend = _frame_end(buf, hpos, size, spec.FRAME_HEADER, number)
        if hend is None:
            return None
        if hend < 0 or hend - hpos - 7 < 14:
            return ()  # not the content a delivery needs: pika decides (and closes the connection)
        _cls, _weight, body_size, flags = _HEADER_FIXED.unpack_from(buf, hpos + 7)
        if flags:
            properties = spec.BasicProperties()
            properties.decode(buf[hpos + 19:hend])
        else:
            properties = _NO_PROPERTIES
        # The body, in as many frames as the broker split it into.
        nxt = hend + 1
        frames = 2
        parts: list[bytes] = []
        got = 0
        while got < body_size:
            bend = _frame_end(buf, nxt, size, spec.FRAME_BODY, number)
            if bend is None:
                return None
            if bend < 0:
                return ()
            parts.append(buf[nxt + 7:bend])
            got += bend - nxt - 7
            frames += 1
            nxt = bend + 1
        if got != body_size:
            return ()
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        conn = self.connection
        conn.bytes_received += nxt - pos  # the heartbeat checker reads these to know the link is alive
        conn.frames_received += frames
        return (on_delivery, body, delivery_tag, properties), nxt
