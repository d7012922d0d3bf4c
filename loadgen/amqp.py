"""pika on the asyncio loop: a connection and channel opened as awaitables, their failures as ``ProbeError``s.

pika's ``AsyncioConnection`` runs its callbacks on the running loop, so publishing, consuming and acking cost no
thread hops. Both the worker's RabbitMQ source and the load generator's RabbitMQ transport stand on this.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import pika
import pika.exceptions as pexc
from pika import frame as pframe
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PlainTransport
from pika.channel import Channel

from probes.errors import AuthFailed, BrokerUnreachable, NotFound, ProbeError
from probes.netcause import connection_cause
from probes.redact import redact_text
from probes.urls import BrokerTarget


def connection_parameters(target: BrokerTarget, *, heartbeat: int = 30) -> pika.ConnectionParameters:
    creds = pika.PlainCredentials(target.username or "guest", target.password or "guest")
    ssl_options = pika.SSLOptions(ssl.create_default_context(), target.host) if target.tls else None
    return pika.ConnectionParameters(host=target.host, port=target.port, virtual_host=target.path or "/",
                                     credentials=creds, heartbeat=heartbeat, ssl_options=ssl_options,
                                     connection_attempts=1, socket_timeout=5, stack_timeout=8,
                                     blocked_connection_timeout=30)


def amqp_error(target: BrokerTarget, exc: BaseException, what: str = "") -> ProbeError:
    where = f"RabbitMQ at {target.host}:{target.port}"
    if isinstance(exc, pexc.ProbableAuthenticationError | pexc.AuthenticationError):
        return AuthFailed(f"authentication failed at {where}: check the user name and password")
    if isinstance(exc, pexc.ProbableAccessDeniedError):
        return AuthFailed(f"access denied at {where} (vhost {target.path!r})")
    if isinstance(exc, pexc.ChannelClosedByBroker) and exc.reply_code == 404:
        return NotFound(redact_text(f"{what or 'not found'} at {where}: {exc.reply_text}", target.secrets))
    if isinstance(exc, pexc.AMQPConnectionError | AMQPConnectorException | OSError):
        inner = next((e for e in getattr(exc, "exceptions", ()) if isinstance(e, BaseException)), exc)
        return BrokerUnreachable(f"broker unreachable: {where}: {_diagnose(target, inner)}"[:300])
    return ProbeError(redact_text(f"RabbitMQ error at {where}{' (' + what + ')' if what else ''}: {exc}"[:300],
                                  target.secrets))


class AmqpLink:
    """One AMQP connection with one channel, on the running asyncio loop."""

    def __init__(self, target: BrokerTarget, connection: AsyncioConnection, channel: Channel) -> None:
        self.target, self.connection, self.channel = target, connection, channel
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        channel.add_on_close_callback(self._on_channel_closed)

    def _on_channel_closed(self, _channel: Channel, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)

    @classmethod
    async def open(cls, target: BrokerTarget, *, timeout: float = 10.0) -> AmqpLink:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()

        def ok(conn: Any) -> None:
            _resolve(opened, conn)

        def failed(_conn: Any, exc: BaseException) -> None:
            if not opened.done():
                opened.set_exception(exc if isinstance(exc, BaseException) else pexc.AMQPConnectionError(exc))

        conn = AsyncioConnection(connection_parameters(target), on_open_callback=ok, on_open_error_callback=failed,
                                 on_close_callback=failed, custom_ioloop=loop)
        try:
            await asyncio.wait_for(opened, timeout)
            channel = await callback_call(lambda cb: conn.channel(on_open_callback=cb))
        except TimeoutError:
            # No close() here: closing while pika's connection workflow runs trips an assertion inside pika
            # (printed by the loop as a traceback). stack_timeout (8 s) ends the workflow on its own.
            raise BrokerUnreachable(f"broker unreachable: RabbitMQ at {target.host}:{target.port}: "
                                    f"no answer in {timeout:.0f} s") from None
        except (pexc.AMQPError, AMQPConnectorException, OSError) as exc:
            _quiet_close(conn)
            raise amqp_error(target, exc) from None
        _share_the_loop(conn)
        return cls(target, conn, channel)

    async def call(self, fn: Callable[..., Any], *args: Any, what: str = "", **kwargs: Any) -> Any:
        """Run a callback-style channel method (``callback=``) and await its reply, or the channel's closing."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        fn(*args, callback=lambda frame: _resolve(done, frame), **kwargs)
        waiter = asyncio.ensure_future(asyncio.shield(self.closed))
        try:
            finished, _ = await asyncio.wait({done, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if done in finished:
            return done.result()
        raise amqp_error(self.target, self.closed.result(), what)

    async def declare(self, queue: str, *, durable: bool = True, exclusive: bool = False,
                      auto_delete: bool = False) -> int:
        """Declare ``queue`` if missing (an existing queue is used as it is); returns its depth."""
        frame = await self.call(self.channel.queue_declare, queue, passive=False, durable=durable,
                                exclusive=exclusive, auto_delete=auto_delete, what=f"declare queue {queue!r}")
        return int(frame.method.message_count)

    async def ensure_queue(self, queue: str) -> None:
        """Use ``queue`` if it exists (whatever its type and arguments), else declare a durable classic queue."""
        probe = await AmqpLink.open(self.target)
        try:
            await probe.call(probe.channel.queue_declare, queue, passive=True, what=f"queue {queue!r}")
        except NotFound:
            await self.declare(queue)
        finally:
            await probe.aclose()

    async def aclose(self) -> None:
        if self.connection.is_closed or self.connection.is_closing:
            return
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        self.connection.add_on_close_callback(lambda *_: _resolve(closed, None))
        self.connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed, 5.0)


_FRAME_HEAD = struct.Struct(">BHI")
_ACK = struct.Struct(">BHIIQB")
_FRAME_END = bytes((spec.FRAME_END,))
_CACHE_MAX = 1024


class ChannelWriter:
    """Publishes and acks many messages on a pika channel as one write.

    pika marshals each publish as three frames and hands each to the socket with its own ``send()``, and each ack
    as one more; on the request/reply path that was a fifth of the load generator's CPU. Here a batch is marshalled
    into one buffer (the Basic.Publish frame once per routing key, the content header once per body size; bodies
    split at the connection's frame size as pika splits them) and written through the same pika connection, so the
    connection's state, framing limits and counters stay pika's. Frames are byte-for-byte pika's (tests compare).
    Properties are the defaults (none); a message that needs headers goes through ``basic_publish``."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.connection = channel.connection
        # pika internals used here (present since pika 1.0); without them every message goes through pika's API.
        self._direct = hasattr(self.connection, "_adapter_emit_data") and hasattr(self.connection,
                                                                                   "_body_max_length")
        self._methods: dict[str, bytes] = {}
        self._headers: dict[int, bytes] = {}

    def _check_open(self) -> None:
        if not self.channel.is_open:
            raise pexc.ChannelWrongStateError("Channel is closed.")

    def _emit(self, parts: list[bytes]) -> None:
        data = b"".join(parts)
        conn = self.connection
        conn.bytes_sent += len(data)
        conn.frames_sent += len(parts)
        sent = _send_now(getattr(conn, "_transport", None), data)
        if sent < len(data):
            conn._adapter_emit_data(data[sent:] if sent else data)

    def publish(self, messages: Iterable[tuple[str, bytes]], acks: Iterable[tuple[int, bool]] = ()) -> None:
        """Publish ``(queue, body)`` pairs through the default exchange, in order, then ack ``(delivery_tag,
        multiple)`` pairs: all in one write."""
        self._check_open()
        if not self._direct:
            for key, body in messages:
                self.channel.basic_publish("", key, body)
            for tag, multiple in acks:
                self.channel.basic_ack(tag, multiple=multiple)
            return
        parts = self._publish_parts(messages)
        self._ack_parts(acks, parts)
        if parts:
            self._emit(parts)

    def ack(self, acks: Iterable[tuple[int, bool]]) -> None:
        """Ack ``(delivery_tag, multiple)`` pairs, in order, in one write."""
        self.publish((), acks)

    def _publish_parts(self, messages: Iterable[tuple[str, bytes]]) -> list[bytes]:
        number = self.channel.channel_number
        max_len = self.connection._body_max_length
        methods, headers = self._methods, self._headers
        parts: list[bytes] = []
        for key, body in messages:
            method = methods.get(key)
            if method is None:
                if len(methods) >= _CACHE_MAX:
                    methods.clear()
                publish = spec.Basic.Publish(exchange="", routing_key=key)
                method = methods[key] = pframe.Method(number, publish).marshal()
            size = len(body)
            header = headers.get(size)
            if header is None:
                if len(headers) >= _CACHE_MAX:
                    headers.clear()
                header = headers[size] = pframe.Header(number, size, spec.BasicProperties()).marshal()
            parts.append(method)
            parts.append(header)
            for start in range(0, size, max_len):
                chunk = body[start:start + max_len]
                parts.append(_FRAME_HEAD.pack(spec.FRAME_BODY, number, len(chunk)) + chunk + _FRAME_END)
        return parts

    def _ack_parts(self, acks: Iterable[tuple[int, bool]], parts: list[bytes]) -> None:
        number = self.channel.channel_number
        pack = _ACK.pack
        for tag, multiple in acks:
            parts.append(pack(spec.FRAME_METHOD, number, 13, spec.Basic.Ack.INDEX, tag, 1 if multiple else 0)
                         + _FRAME_END)


class AckPlan:
    """Turns a channel's settled deliveries into as few acks as are safe: one ``multiple`` ack for every settled
    delivery below the oldest one still in hand, single acks for the rest.

    A ``multiple`` ack at tag T settles every unacked delivery up to T on the channel, so it is only safe below the
    oldest delivery not yet settled (with concurrent batches, another batch may still be in the model). Each tag
    is acked (or nacked) exactly once: a second ack of a tag is a channel error in AMQP."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()  # delivery tags as received
        self._gone: set[int] = set()  # settled tags still in _order

    def received(self, tag: int) -> None:
        self._order.append(tag)

    def forget(self, tags: Iterable[int]) -> None:
        """Tags settled another way (nacked, requeued): no ack will cover them."""
        self._gone.update(tags)

    def acks(self, tags: Iterable[int]) -> list[tuple[int, bool]]:
        """The ``(tag, multiple)`` acks that settle ``tags`` (each received, none settled before)."""
        settled = sorted(tags)
        gone, order = self._gone, self._order
        gone.update(settled)
        while order and order[0] in gone:
            gone.discard(order.popleft())
        oldest = order[0] if order else None
        below = [t for t in settled if oldest is None or t < oldest]
        out: list[tuple[int, bool]] = []
        if below:
            out.append((below[-1], len(below) > 1))
        out.extend((t, False) for t in settled[len(below):])
        return out

    @property
    def in_hand(self) -> int:
        return len(self._order) - len(self._gone)


async def callback_call(start: Callable[[Callable[[Any], None]], Any], timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    start(lambda value: _resolve(done, value))
    return await asyncio.wait_for(done, timeout)


def _diagnose(target: BrokerTarget, exc: BaseException) -> str:
    """pika's asyncio adapter often reports a failed connect as a bare AMQPConnectionError; a plain TCP connect
    then tells refused from unknown host from timeout."""
    if isinstance(exc, OSError):
        return connection_cause(exc)
    try:
        socket.create_connection((target.host, target.port), timeout=3).close()
    except OSError as probe:
        return connection_cause(probe)
    return "the server accepted TCP but the AMQP handshake failed (is this port RabbitMQ's AMQP port?)"


def _send_now(transport: Any, data: bytes) -> int:
    """Write ``data`` to a plain-TCP pika transport's socket at once when nothing is queued before it; returns the
    bytes the socket took (0: nothing sent, pika's buffered path takes the whole write).

    pika's transport only buffers a write and registers a writability watcher; the bytes leave on a later turn of
    the loop and the watcher is removed again: two ``epoll_ctl`` calls and a loop turn per write, the way asyncio's
    own transports avoid by trying the socket first. Errors are left to pika: on any, nothing is sent here and
    pika's path meets the same error and closes the connection its usual way. TLS transports are left alone."""
    if not isinstance(transport, _PlainTransport) or transport._state != transport._STATE_ACTIVE:
        return 0
    if transport.get_write_buffer_size():
        return 0  # keep the order: earlier bytes are still waiting
    try:
        return int(transport._sock.send(data))
    except OSError:  # EAGAIN and EINTR included: pika's path retries, or meets the error and closes
        return 0


READ_SLICE_BYTES = 8 * 1024


def _share_the_loop(conn: AsyncioConnection) -> None:
    """pika handles up to 100 KB per readable event (hundreds of deliveries, milliseconds of Python) before the
    loop runs anything else; a load generator's sender then falls behind its schedule. Handing the loop back
    after 8 KB costs nothing in throughput (the socket stays readable) and keeps each turn short."""
    transport = getattr(conn, "_transport", None)
    if transport is not None and hasattr(transport, "_MAX_CONSUME_BYTES"):
        transport._MAX_CONSUME_BYTES = READ_SLICE_BYTES


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _quiet_close(conn: AsyncioConnection) -> None:
    try:
        if not (conn.is_closed or conn.is_closing):
            conn.close()
    except Exception:  # closing a half-open connection may raise inside pika; nothing to clean up then
        pass
