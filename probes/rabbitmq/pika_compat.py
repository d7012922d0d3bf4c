"""Everything qdeck touches inside pika beyond its public API, in one place.

Checked against the source of pika 1.3.2, 1.4.0 and 1.4.4 and run against 1.4.4 (pinned ``pika>=1.3.2,<1.5`` in
pyproject.toml). pika's main branch after 1.4.4 keeps ``_frame_buffer`` as a ``bytearray`` and trims it in place:
``take_over_reads`` handles both. Each fast path has its own check here; its caller falls back to pika's public API
when the check fails (``ChannelWriter`` (``loadgen.brokers.amqp``) and ``PublishFrames`` (``publish_frames``, the
dead-letter redrive's confirmed publishes) to ``basic_publish``/``basic_ack``, ``DeliveryReader``
(``amqp_deliveries``) to pika's frame parser, the socket write to pika's buffered write), and
``tests/loadgen/test_pika_compat.py`` asserts on a real
connection that every check passes: a pika upgrade that breaks one fails a test instead of slowing qdeck down
unnoticed.

The internals used, all of ``pika.connection.Connection`` unless said otherwise:

- ``_adapter_emit_data(data)`` (``BaseConnection``): hands bytes to the connection's transport, in order, after
  whatever it still holds. ``ChannelWriter`` and ``PublishFrames`` write a batch of marshalled frames through it.
- ``_body_max_length``: the largest body frame payload, known once the connection is tuned.
- ``bytes_sent``, ``frames_sent``, ``bytes_received``, ``frames_received``: counters (public names, undocumented)
  that pika's heartbeat checker reads to know the link is alive; bytes qdeck writes or parses itself are counted.
- ``_on_data_available(data)`` and ``_frame_buffer``: pika's frame parser, called (looked up on the instance) by
  ``BaseConnection._proto_data_received`` for every read, and the partial frame it holds between reads.
  ``DeliveryReader`` takes that entry point and hands pika whole frames only.
- ``_transport`` (``BaseConnection``): the connection's stream transport.
- ``pika.adapters.utils.io_services_utils._AsyncPlaintextTransport`` and its ``_sock``, ``_state`` and
  ``_STATE_ACTIVE`` (``get_write_buffer_size()`` is public): a write goes to the socket at once when nothing is
  queued before it, instead of through a writability watcher and a later turn of the loop.
- ``_AsyncTransportBase._MAX_CONSUME_BYTES``: how many bytes one readable event reads before the loop runs anything
  else (100 KB in pika); set per transport instance.
- ``pika.channel.Channel._cancelled``: the consumer tags cancelled on a channel, whose deliveries pika rejects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

CHECKED_VERSIONS = ("1.3.2", "1.4.0", "1.4.4")
"""pika releases whose source was read for every internal listed above (1.4.4 also run by the tests)."""

_COUNTERS_OUT = ("bytes_sent", "frames_sent")
_COUNTERS_IN = ("bytes_received", "frames_received")


def _plain_transport_class() -> type[Any] | None:
    try:
        from pika.adapters.utils import io_services_utils
    except ImportError:
        return None
    cls = getattr(io_services_utils, "_AsyncPlaintextTransport", None)
    return cls if isinstance(cls, type) else None


_PLAIN_TRANSPORT = _plain_transport_class()


def _ints(obj: Any, names: tuple[str, ...]) -> bool:
    return all(isinstance(getattr(obj, name, None), int) for name in names)


# --- writing: ChannelWriter ------------------------------------------------------------------------------------


def can_write_frames(connection: Any) -> bool:
    """Whether marshalled frames can be handed to ``connection`` as one write (``ChannelWriter``'s direct path):
    an open, tuned pika connection with ``_adapter_emit_data``, ``_body_max_length`` and the sent counters."""
    return (callable(getattr(connection, "_adapter_emit_data", None))
            and isinstance(getattr(connection, "_body_max_length", None), int) and _ints(connection, _COUNTERS_OUT))


def body_max_length(connection: Any) -> int:
    """The largest body frame payload the connection was tuned to (pika splits bodies at this size)."""
    return int(connection._body_max_length)


def can_write_to_socket(connection: Any) -> bool:
    """Whether ``write_frames`` can try the socket first: a plain-TCP pika transport with the attributes it reads.
    False over TLS (pika's buffered write then takes every byte)."""
    transport = getattr(connection, "_transport", None)
    return (_PLAIN_TRANSPORT is not None and isinstance(transport, _PLAIN_TRANSPORT)
            and hasattr(transport, "_sock") and hasattr(transport, "_state") and hasattr(transport, "_STATE_ACTIVE")
            and callable(getattr(transport, "get_write_buffer_size", None)))


def write_frames(connection: Any, data: bytes, frames: int) -> int:
    """Send ``data`` (``frames`` whole marshalled frames) on ``connection`` after anything pika still holds, and
    count it as pika counts its own writes; returns how many bytes went straight to the socket (the rest, if any,
    went through pika's buffered write)."""
    connection.bytes_sent += len(data)
    connection.frames_sent += frames
    sent = _send_now(getattr(connection, "_transport", None), data)
    if sent < len(data):
        connection._adapter_emit_data(data[sent:] if sent else data)
    return sent


def _send_now(transport: Any, data: bytes) -> int:
    """Write ``data`` to a plain-TCP pika transport's socket at once when nothing is queued before it; returns the
    bytes the socket took (0: nothing sent, pika's buffered path takes the whole write).

    pika's transport only buffers a write and registers a writability watcher; the bytes leave on a later turn of
    the loop and the watcher is removed again: two ``epoll_ctl`` calls and a loop turn per write, which asyncio's
    own transports avoid by trying the socket first. Errors are left to pika: on any, nothing is sent here and
    pika's path meets the same error and closes the connection its usual way. TLS transports are left alone."""
    if _PLAIN_TRANSPORT is None or not isinstance(transport, _PLAIN_TRANSPORT):
        return 0
    sock = getattr(transport, "_sock", None)
    if sock is None or getattr(transport, "_state", None) != getattr(transport, "_STATE_ACTIVE", object()):
        return 0
    if transport.get_write_buffer_size():
        return 0  # keep the order: earlier bytes are still waiting
    try:
        return int(sock.send(data))
    except OSError:  # EAGAIN and EINTR included: pika's path retries, or meets the error and closes
        return 0


# --- reading: DeliveryReader and the read slice ----------------------------------------------------------------


def can_parse_deliveries(connection: Any) -> bool:
    """Whether a reader can stand in front of ``connection``'s frame parser (``DeliveryReader``'s direct path):
    ``_on_data_available``, a ``_frame_buffer`` of bytes and the received counters."""
    return (callable(getattr(connection, "_on_data_available", None))
            and isinstance(getattr(connection, "_frame_buffer", None), bytes | bytearray)
            and _ints(connection, _COUNTERS_IN))


def take_over_reads(connection: Any, data_received: Callable[[bytes], None]) -> tuple[Callable[[bytes], None], bytes]:
    """Make ``data_received`` the receiver of every byte read on ``connection``. Returns pika's own parser (hand it
    whole frames only, in order) and the bytes of a frame pika had started reading (they come first)."""
    to_pika: Callable[[bytes], None] = connection._on_data_available
    pending = connection._frame_buffer
    connection._frame_buffer = type(pending)()  # the same type: pika's main branch trims a bytearray in place
    connection._on_data_available = data_received
    return to_pika, bytes(pending)


def count_received(connection: Any, nbytes: int, frames: int) -> None:
    """Count bytes and frames parsed outside pika, as pika counts its own (the heartbeat checker reads these)."""
    connection.bytes_received += nbytes
    connection.frames_received += frames


def cancelled_tags(channel: Any) -> set[str] | None:
    """The channel's live set of cancelled consumer tags (pika adds a tag on ``basic_cancel`` and rejects its later
    deliveries), or None when this pika has no such set: then deliveries are left to pika."""
    cancelled = getattr(channel, "_cancelled", None)
    return cancelled if isinstance(cancelled, set) else None


def read_slice(connection: Any) -> int | None:
    """How many bytes one readable event reads before the loop runs anything else, or None if unknown."""
    value = getattr(getattr(connection, "_transport", None), "_MAX_CONSUME_BYTES", None)
    return value if isinstance(value, int) else None


def set_read_slice(connection: Any, nbytes: int) -> bool:
    """Hand the loop back after ``nbytes`` read per readable event (pika: 100 KB); False when not possible."""
    if read_slice(connection) is None:
        return False
    connection._transport._MAX_CONSUME_BYTES = nbytes
    return True


# --- qdeck's own per-connection state ---------------------------------------------------------------------------


def per_connection(connection: Any, name: str, make: Callable[[], T]) -> T:
    """qdeck's object ``name`` for ``connection``, made on first use. Kept as an attribute of the pika connection
    (it has no ``__slots__``) so that it lives and dies with it."""
    attr = f"_qdeck_{name}"
    found: T | None = getattr(connection, attr, None)
    if found is None:
        found = make()
        setattr(connection, attr, found)
    return found


# --- all together ----------------------------------------------------------------------------------------------


def fast_paths(connection: Any, channel: Any = None) -> dict[str, bool]:
    """Each fast path and whether it applies to ``connection`` (an open pika connection on the asyncio adapter)
    and, when given, ``channel``. The socket write is listed for plain TCP only (over TLS it is pika's by design)."""
    paths = {"write frames": can_write_frames(connection), "parse deliveries": can_parse_deliveries(connection),
             "read slice": read_slice(connection) is not None}
    params = getattr(connection, "params", None)
    if getattr(params, "ssl_options", None) is None:
        paths["write to socket"] = can_write_to_socket(connection)
    if channel is not None:
        paths["cancelled consumers"] = cancelled_tags(channel) is not None
    return paths


def fast_path_ok(connection: Any, channel: Any = None) -> bool:
    """Whether every fast path of ``fast_paths`` applies: what a test asserts on a real connection."""
    return all(fast_paths(connection, channel).values())
