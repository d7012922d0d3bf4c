"""Deliveries read straight off a pika connection's bytes: Basic.Deliver + content header + body, parsed here.

pika turns every delivery into three frame objects, a method object, a properties object and a chain of callbacks:
about a third of the CPU of both ends of the request/reply path (the worker consuming requests, the load generator
consuming replies) at tens of thousands of messages a second. ``DeliveryReader`` sits in front of pika's frame
parser on one connection: a complete delivery for a consumer registered with it is parsed with ``struct`` and handed
to its callback as ``(body, delivery_tag, properties)`` (``raw=True``: the content header's property bytes as they
came, undecoded, for a caller that decodes them itself or passes them on unchanged); every other frame (heartbeats,
RPC replies, channel closing, deliveries for other consumers, returns) goes to pika, whole and in order, so pika's
state stays pika's. Publisher confirms (Basic.Ack / Basic.Nack) of a channel registered with ``confirms`` are parsed
here too: one per few requests on the load generator's request channel.

The consumer is registered with pika too (``basic_consume``), so cancelling, closing and acking stay pika's API;
a cancelled consumer's deliveries go to pika, which rejects them as it always does. The pika internals it relies on
(pika's parser entry and partial frame, the byte and frame counters the heartbeat checker reads, a channel's
cancelled consumers) are reached through ``pika_compat`` only; without them deliveries go through pika's own path
with the same callback signature (tested both ways, and on a real connection that the direct path is the one used).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pika import spec
from pika.channel import Channel

from probes.rabbitmq import pika_compat

OnDelivery = Callable[[bytes, int, Any], None]
"""``(body, delivery_tag, properties)``; properties is a ``pika.BasicProperties`` (shared and empty when the
message has none: read it, never change it), or for a ``raw`` consumer the property bytes of its content header
(the property flags and the properties as AMQP encodes them: ``b"\\x00\\x00"`` when it has none)."""
OnConfirm = Callable[[int, bool], None]
"""``(delivery_tag, multiple)``: a publisher confirm (an ack or a nack: either way the broker has decided)."""

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_DELIVER = b"\x00\x3c\x00\x3c"  # Basic (60) . Deliver (60)
_ACK = b"\x00\x3c\x00\x50"  # Basic (60) . Ack (80): delivery tag, multiple
_NACK = b"\x00\x3c\x00\x78"  # Basic (60) . Nack (120): delivery tag, multiple, requeue
_Q = struct.Struct(">Q")
_HEADER_FIXED = struct.Struct(">HHQH")  # class, weight, body size, first property flags
_END = spec.FRAME_END
_NO_PROPERTIES = spec.BasicProperties()
Owner = tuple[Channel, OnDelivery, set[str], bool]  # a consumer's channel, callback, cancelled tags, raw


def _pika_callback(on_delivery: OnDelivery, raw: bool) -> Callable[[Any, Any, Any, bytes], None]:
    def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
        on_delivery(body, method.delivery_tag, properties)

    def on_raw_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
        on_delivery(body, method.delivery_tag, b"".join(properties.encode()))  # what pika decoded, encoded again

    return on_raw_message if raw else on_message


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


def _needed(buf: bytes, pos: int, size: int) -> int:
    """How many bytes from ``pos`` the frame starting there needs to be complete (8 while its head is not here)."""
    if size - pos < 8:
        return 8
    length: int = _HEAD.unpack_from(buf, pos)[2]
    return length + 8


def _whole_frames(data: bytes) -> list[bytes]:
    """``data``, made of whole frames, frame by frame."""
    out, pos = [], 0
    while pos < len(data):
        end = pos + _HEAD.unpack_from(data, pos)[2] + 8
        out.append(data[pos:end])
        pos = end
    return out


_MORE, _DONE, _NOT_OURS = 0, 1, 2  # what parsing a delivery's content frames came to


def _content(buf: bytes, pos: int, size: int, number: int, properties: Any, body_size: int, got: int,
             parts: list[bytes | memoryview], raw: bool = False) -> tuple[int, int, Any, int, int]:
    """Parse a delivery's content frames on channel ``number`` from ``pos`` on, going on from what its earlier
    frames said (``properties`` None: the content header is next; ``got`` bytes of ``body_size`` in ``parts``, to
    which the body frames' payloads are added). Returns (status, position, properties, body_size, got): ``_DONE``
    and the position after its last frame; ``_MORE`` and the start of a frame not complete yet; ``_NOT_OURS`` when
    a frame is not the content it needs. ``raw``: properties are the header's property bytes, not decoded."""
    if properties is None:
        hend = _frame_end(buf, pos, size, spec.FRAME_HEADER, number)
        if hend is None:
            return _MORE, pos, None, 0, 0
        if hend < 0 or hend - pos - 7 < 14:
            return _NOT_OURS, pos, None, 0, 0  # not the content a delivery needs: pika decides (and closes the link)
        _cls, _weight, body_size, flags = _HEADER_FIXED.unpack_from(buf, pos + 7)
        if raw:
            properties = buf[pos + 19:hend]
        elif flags:
            properties = spec.BasicProperties()
            properties.decode(buf[pos + 19:hend])
        else:
            properties = _NO_PROPERTIES
        pos = hend + 1
    # The body, in as many frames as the broker split it into.
    while got < body_size:
        bend = _frame_end(buf, pos, size, spec.FRAME_BODY, number)
        if bend is None:
            return _MORE, pos, properties, body_size, got
        if bend < 0:
            return _NOT_OURS, pos, properties, body_size, got
        n = bend - pos - 7
        if n == body_size:  # the whole body in one frame: sliced
            parts.append(buf[pos + 7:bend])
        else:  # one frame of several: a view of the read, the body is joined once at the end
            parts.append(memoryview(buf)[pos + 7:bend])
        got += n
        pos = bend + 1
    return (_DONE if got == body_size else _NOT_OURS), pos, properties, body_size, got


def _body(parts: list[bytes | memoryview]) -> bytes:
    """The body from its parts (a single part that is bytes is the body itself: no copy)."""
    if len(parts) == 1:
        part = parts[0]
        if isinstance(part, bytes):
            return part
    return b"".join(parts)


class _Delivery:
    """A delivery of a registered consumer whose content is still on the way: what its frames said so far (see
    ``_content``), and its whole frames from the reads so far (``raw``, views of them: pika gets them if the
    delivery turns out not to be this reader's after all), their size (``nbytes``)."""

    __slots__ = ("body_size", "cancelled", "channel", "delivery_tag", "got", "nbytes", "number", "on_delivery", "parts",
                 "properties", "raw", "raw_properties", "tag")

    def __init__(self, number: int, tag: bytes, owner: Owner, delivery_tag: int, properties: Any, body_size: int,
                 got: int, parts: list[bytes | memoryview]) -> None:
        self.number, self.tag, self.delivery_tag = number, tag, delivery_tag
        self.channel, self.on_delivery, self.cancelled, self.raw_properties = owner
        self.properties, self.body_size, self.got, self.parts = properties, body_size, got, parts
        self.raw: list[memoryview] = []
        self.nbytes = 0

    def owned(self) -> bool:
        """Whether its consumer is still this reader's to serve (open channel, not cancelled)."""
        return bool(self.channel.is_open) and not (self.cancelled and self.tag.decode() in self.cancelled)

    def keep(self, buf: bytes, start: int, end: int) -> None:
        """Its whole frames ``buf[start:end]`` are parsed and it goes on in a later read: keep them (a view)."""
        if end > start:
            self.raw.append(memoryview(buf)[start:end])
            self.nbytes += end - start


class DeliveryReader:
    """Parses the deliveries of registered consumers on one pika connection; pika parses the rest.

    ``direct``: whether the pika internals it needs are there (else every consumer is pika's); ``parsed``: how many
    deliveries it parsed itself; ``confirms_parsed``: how many publisher confirms.

    Every byte is parsed once, whatever the reads: reads that end inside a frame are held as they came (a list,
    joined once the frame is complete), and a delivery whose content spans reads keeps what is parsed of it (a
    ``_Delivery``) and goes on from its next frame; a body in several frames is joined once, at the end. The work
    for a message is linear in its size."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.direct = pika_compat.can_parse_deliveries(connection)
        self.parsed = 0
        self.confirms_parsed = 0
        self._to_pika: Callable[[bytes], None] | None = None
        self._consumers: dict[tuple[int, bytes], Owner] = {}
        self._confirms: dict[int, tuple[Channel, OnConfirm]] = {}  # channel number → its confirm callback
        self._chunks: list[bytes | memoryview] = []  # the reads since the start of a frame not complete yet
        self._held = 0  # their size
        self._need = 0  # the size of that frame: no parsing before
        self._partial: _Delivery | None = None  # a delivery whose content is still on the way

    @classmethod
    def of(cls, connection: Any) -> DeliveryReader:
        """The connection's reader (one per connection, made on first use)."""
        return pika_compat.per_connection(connection, "delivery_reader", lambda: cls(connection))

    @property
    def _buffer(self) -> bytes:
        """Every byte received and not handed on yet (a delivery in progress, a frame not complete): for tests."""
        partial = b"".join(self._partial.raw) if self._partial is not None else b""
        return partial + b"".join(self._chunks)

    def consume(self, channel: Channel, queue: str, on_delivery: OnDelivery, *, auto_ack: bool,
                consumer_tag: str | None = None, raw: bool = False) -> str:
        """``basic_consume`` whose deliveries reach ``on_delivery(body, delivery_tag, properties)`` (``raw``: the
        property bytes, undecoded; through pika's path, what pika decoded encoded again)."""
        named = {"consumer_tag": consumer_tag} if consumer_tag is not None else {}
        tag = channel.basic_consume(queue, _pika_callback(on_delivery, raw), auto_ack=auto_ack, **named)
        cancelled = pika_compat.cancelled_tags(channel)
        if self.direct and cancelled is not None:
            self._consumers[(channel.channel_number, tag.encode())] = (channel, on_delivery, cancelled, raw)
            self._install()
        return str(tag)

    def confirms(self, channel: Channel, on_confirm: OnConfirm) -> bool:
        """Publisher confirms of ``channel`` (already in confirm mode) reach ``on_confirm(delivery_tag, multiple)``,
        parsed here instead of by pika (its frame objects and callback dispatch for each ack cost the load
        generator ~8 % of its CPU at 12,000 requests/s). False when the direct path is not there: the caller keeps
        pika's callback."""
        if not self.direct:
            return False
        self._confirms[channel.channel_number] = (channel, on_confirm)
        self._install()
        return True

    def _install(self) -> None:
        if self._to_pika is not None:
            return
        # Whatever pika holds of a frame not yet complete becomes the start of this reader's buffer.
        self._to_pika, pending = pika_compat.take_over_reads(self.connection, self.data_received)
        if pending:
            self._chunks, self._held, self._need = [pending], len(pending), 0

    def data_received(self, data: bytes) -> None:
        if type(data) is not bytes:
            data = bytes(data)  # views of it are kept: it must not change
        if self._held:
            self._chunks.append(data)
            self._held += len(data)
            if self._held < self._need:
                return  # the frame in front is not complete: nothing to parse yet
            buf = b"".join(self._chunks)
        else:
            buf = data
        size = len(buf)
        pos = 0
        to_pika = self._to_pika
        assert to_pika is not None
        unpack_head, header_fixed, unpack_q = _HEAD.unpack_from, _HEADER_FIXED.unpack_from, _Q.unpack_from
        consumers, confirms = self._consumers, self._confirms
        parsed = confirmed = nbytes = frames = 0
        waiting = False
        try:
            d = self._partial
            if d is not None:
                # A delivery whose content was on the way: go on from its next frame.
                self._partial = None
                status = _NOT_OURS
                if d.owned():
                    status, nxt, d.properties, d.body_size, d.got = _content(buf, 0, size, d.number, d.properties,
                                                                             d.body_size, d.got, d.parts,
                                                                             d.raw_properties)
                if status == _DONE:
                    nbytes += d.nbytes + nxt
                    frames += 2 + len(d.parts)
                    parsed += 1
                    pos = nxt
                    d.on_delivery(_body(d.parts), d.delivery_tag, d.properties)
                elif status == _MORE:
                    d.keep(buf, 0, nxt)
                    self._partial, pos, waiting = d, nxt, True
                else:
                    # Not this reader's to parse after all: pika gets its frames, whole and in order; those of this
                    # read follow in the loop below (none is a delivery's method frame).
                    for whole in _whole_frames(b"".join(d.raw)):
                        to_pika(whole)
            while not waiting and size - pos >= 8:
                kind, number, length = unpack_head(buf, pos)
                end = pos + 7 + length  # the frame-end octet
                if end >= size:
                    break
                if kind == 1 and buf[pos + 7:pos + 11] == _DELIVER and buf[end] == _END:
                    p = pos + 12
                    tag = buf[p:p + buf[p - 1]]
                    owner = consumers.get((number, tag))
                    if owner is not None and owner[0].is_open and not (owner[2] and tag.decode() in owner[2]):
                        # A delivery of a registered consumer: parsed here. The common case first, inline: a content
                        # header with no properties and the whole body in one frame, both already read.
                        hpos = end + 1
                        if size - hpos >= 8 and not owner[3]:
                            hkind, hnumber, hlength = unpack_head(buf, hpos)
                            hend = hpos + 7 + hlength
                            if hkind == 2 and hnumber == number and hlength >= 14 and hend + 8 < size \
                                    and buf[hend] == _END:
                                _cls, _weight, body_size, flags = header_fixed(buf, hpos + 7)
                                bkind, bnumber, blength = unpack_head(buf, hend + 1)
                                bend = hend + 8 + blength
                                if not flags and body_size and bkind == 3 and bnumber == number \
                                        and blength == body_size and bend < size and buf[bend] == _END:
                                    (delivery_tag,) = unpack_q(buf, p + len(tag))
                                    nbytes += bend + 1 - pos
                                    frames += 3
                                    parsed += 1
                                    pos = bend + 1
                                    owner[1](buf[hend + 8:bend], delivery_tag, _NO_PROPERTIES)
                                    continue
                        parts: list[bytes | memoryview] = []
                        status, nxt, properties, body_size, got = _content(buf, end + 1, size, number, None, 0, 0,
                                                                           parts, owner[3])
                        (delivery_tag,) = _Q.unpack_from(buf, p + len(tag))
                        if status == _DONE:
                            nbytes += nxt - pos
                            frames += 2 + len(parts)
                            parsed += 1
                            pos = nxt
                            owner[1](parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts),
                                     delivery_tag, properties)
                            continue
                        if status == _MORE:  # its content is still on the way: kept, parsing goes on next read
                            d = _Delivery(number, tag, owner, delivery_tag, properties, body_size, got, parts)
                            d.keep(buf, pos, nxt)
                            self._partial, pos = d, nxt
                            break
                elif kind == 1 and length == 13 and number in confirms and buf[end] == _END \
                        and buf[pos + 7:pos + 11] in (_ACK, _NACK):
                    channel, on_confirm = confirms[number]
                    if channel.is_open:  # a publisher confirm: parsed here
                        (delivery_tag,) = _Q.unpack_from(buf, pos + 11)
                        nbytes += end + 1 - pos
                        frames += 1
                        confirmed += 1
                        pos = end + 1
                        on_confirm(delivery_tag, bool(buf[pos - 2] & 1))
                        continue
                # Anything else, or a delivery this reader does not own: pika parses it, a whole frame at a time.
                frame, pos = buf[pos:end + 1], end + 1
                to_pika(frame)
        finally:
            if pos < size:
                self._chunks = [buf if pos == 0 else memoryview(buf)[pos:]]
                self._held = size - pos
                self._need = _needed(buf, pos, size)
            else:
                self._chunks, self._held = [], 0
            if frames:
                self.parsed += parsed
                self.confirms_parsed += confirmed
                # the heartbeat checker reads these to know the link is alive
                pika_compat.count_received(self.connection, nbytes, frames)
