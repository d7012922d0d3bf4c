"""Basic.Publish frames marshalled here, properties as given (AMQP-encoded bytes), many publishes to one write.

pika's ``basic_publish`` encodes the properties again from a ``BasicProperties`` (its headers table value by value)
and hands each of the three frames of a publish to the socket with its own ``send()``; for a dead-letter redrive,
which sends each message on with its own property bytes and two headers changed, that was most of qdeck's CPU per
message. Here a publish is the method frame (marshalled by pika once per exchange and routing key), the content
header with the property bytes as they are, and the body split at the connection's frame size as pika splits it;
``write`` hands a batch of them to the connection as one write (``pika_compat.write_frames``), after whatever pika
still holds, and counted as pika counts its own. The bytes are pika's for the same publish (tests compare).
"""

from __future__ import annotations

import struct
from typing import Any

from pika import frame, spec

from probes.rabbitmq import pika_compat

FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
FRAME_END = bytes([spec.FRAME_END])
_HEADER = struct.Struct(">HxxQ")  # content class, weight (0), body size
_CACHE_MAX = 1024


def add_body(parts: list[bytes], number: int, body: bytes, max_len: int) -> None:
    """Append ``body``'s frames on channel ``number``, split at ``max_len`` (the connection's frame size) as pika
    splits it (none for an empty body)."""
    for start in range(0, len(body), max_len):
        chunk = body[start:start + max_len]
        parts.append(FRAME_HEAD.pack(spec.FRAME_BODY, number, len(chunk)) + chunk + FRAME_END)


class PublishFrames:
    """The frames of publishes on one channel of a pika connection. ``direct``: whether the pika internals a
    batched write needs are there (else publish through ``basic_publish``)."""

    def __init__(self, channel: Any) -> None:
        self.number = channel.channel_number
        self.connection = channel.connection
        self.direct = pika_compat.can_write_frames(self.connection)
        self._methods: dict[tuple[str, str, bool], bytes] = {}

    def add(self, parts: list[bytes], exchange: str, routing_key: str, body: bytes, properties: bytes, *,
            mandatory: bool = False) -> None:
        """Append one publish's frames to ``parts``; nothing is appended when it cannot be marshalled (a routing
        key over 255 bytes, properties too large for one frame): that raises, as ``basic_publish`` would."""
        number = self.number
        max_len = pika_compat.body_max_length(self.connection)
        key = (exchange, routing_key, mandatory)
        method = self._methods.get(key)
        if method is None:
            method = frame.Method(number, spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                             mandatory=mandatory)).marshal()
            if len(self._methods) >= _CACHE_MAX:
                self._methods.clear()
            self._methods[key] = method
        if len(properties) + 12 > max_len:
            raise ValueError(f"its properties ({len(properties):,} bytes) do not fit in one frame")
        size = len(body)
        parts.append(method)
        parts.append(FRAME_HEAD.pack(spec.FRAME_HEADER, number, 12 + len(properties))
                     + _HEADER.pack(spec.Basic.INDEX, size) + properties + FRAME_END)
        add_body(parts, number, body, max_len)

    def write(self, parts: list[bytes]) -> None:
        """Hand ``parts`` (whole frames) to the connection as one write."""
        if parts:
            pika_compat.write_frames(self.connection, b"".join(parts), len(parts))
