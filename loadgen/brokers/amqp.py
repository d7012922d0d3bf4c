"""pika on the asyncio loop: a connection and channel opened as awaitables, their failures as ``ProbeError``s.

pika's ``AsyncioConnection`` runs its callbacks on the running loop, so publishing, consuming and acking cost no
thread hops. Both the worker's RabbitMQ source and the load generator's RabbitMQ transport stand on this.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from pika.channel import Channel

from probes.errors import BrokerUnreachable, NotFound, ProbeError
from probes.rabbitmq import pika_compat
from probes.rabbitmq.amqp_link import amqp_error as amqp_error  # re-exported (transport, worker)
from probes.rabbitmq.amqp_link import connection_parameters as link_parameters
from probes.rabbitmq.publish_frames import FRAME_END, FRAME_HEAD, add_body
from probes.urls import BrokerTarget


def connection_parameters(target: BrokerTarget, *, heartbeat: int = 30) -> pika.ConnectionParameters:
    """The probes' parameters (one place for TLS and timeouts), giving up on a connection the broker blocks after
    30 s: a run or a worker stuck behind a memory alarm says so instead of waiting a minute."""
    return link_parameters(target, heartbeat=heartbeat, blocked_connection_timeout=30)


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
                      auto_delete: bool = False, arguments: dict[str, Any] | None = None) -> int:
        """Declare ``queue`` if missing (an existing queue is used as it is); returns its depth."""
        frame = await self.call(self.channel.queue_declare, queue, passive=False, durable=durable,
                                exclusive=exclusive, auto_delete=auto_delete, arguments=arguments,
                                what=f"declare queue {queue!r}")
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


_ACK = struct.Struct(">BHIIQB")
_CACHE_MAX = 1024
_PERSISTENT = spec.BasicProperties(delivery_mode=spec.PERSISTENT_DELIVERY_MODE)


class ChannelWriter:
    """Publishes and acks many messages on a pika channel as one write.

    pika marshals each publish as three frames and hands each to the socket with its own ``send()``, and each ack
    as one more; on the request/reply path that was a fifth of the load generator's CPU. Here a batch is marshalled
    into one buffer (the Basic.Publish frame once per routing key, the content header once per body size; bodies
    split at the connection's frame size as pika splits them) and written through the same pika connection, so the
    connection's state, framing limits and counters stay pika's. Frames are byte-for-byte pika's (tests compare).
    Properties are the defaults (none), or delivery mode 2 alone for a ``persistent`` batch; a message that needs
    headers goes through ``basic_publish``.

    The pika internals this needs are reached through ``pika_compat`` only; ``direct`` says whether they are there
    (without them every message goes through pika's API), ``socket_bytes`` counts the bytes that went straight to
    the socket rather than through pika's buffered write."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.connection = channel.connection
        self.direct = pika_compat.can_write_frames(self.connection)
        self.socket_bytes = 0
        self._methods: dict[str, bytes] = {}
        self._headers: dict[int, bytes] = {}  # content header by body size: transient
        self._persistent_headers: dict[int, bytes] = {}  # and delivery mode 2
        # A body in one frame (the common case): its method frame, content header and body-frame head as one
        # prefix, by (routing key, body size, persistent); the body and the frame end follow it.
        self._prefixes: dict[tuple[str, int, bool], bytes] = {}

    def _check_open(self) -> None:
        if not self.channel.is_open:
            raise pexc.ChannelWrongStateError("Channel is closed.")

    def _emit(self, parts: list[bytes]) -> None:
        self.socket_bytes += pika_compat.write_frames(self.connection, b"".join(parts), len(parts))

    def publish(self, messages: Iterable[tuple[str, bytes]], acks: Iterable[tuple[int, bool]] = (), *,
                persistent: Iterable[tuple[str, bytes]] = ()) -> None:
        """Publish ``persistent`` (delivery mode 2), then ``messages`` (transient): ``(queue, body)`` pairs through
        the default exchange, in order; then ack ``(delivery_tag, multiple)`` pairs: all in one write."""
        self._check_open()
        if not self.direct:
            for key, body in persistent:
                self.channel.basic_publish("", key, body, _PERSISTENT)
            for key, body in messages:
                self.channel.basic_publish("", key, body)
            for tag, multiple in acks:
                self.channel.basic_ack(tag, multiple=multiple)
            return
        parts = self._publish_parts(persistent, persistent=True) if persistent else []
        parts += self._publish_parts(messages)
        self._ack_parts(acks, parts)
        if parts:
            self._emit(parts)

    def ack(self, acks: Iterable[tuple[int, bool]]) -> None:
        """Ack ``(delivery_tag, multiple)`` pairs, in order, in one write."""
        self.publish((), acks)

    def route_problem(self, key: str) -> str | None:
        """Why nothing can be published to queue ``key`` through the default exchange (a routing key is an AMQP
        short string: at most 255 bytes of UTF-8), or None. Checked before a batch is written, so one bad
        destination never stops the batch's other messages."""
        if key in self._methods:
            return None
        publish = spec.Basic.Publish(exchange="", routing_key=key)
        try:
            method = pframe.Method(self.channel.channel_number, publish).marshal()
        except pexc.ShortStringTooLong:
            return f"ShortStringTooLong: a routing key is at most 255 bytes, this one is {len(key.encode())}"
        except UnicodeEncodeError as exc:
            return f"UnicodeEncodeError: {exc}"
        except Exception as exc:  # whatever else pika refuses to marshal
            return f"{type(exc).__name__}: {exc}"[:300]
        if len(self._methods) >= _CACHE_MAX:
            self._methods.clear()
        self._methods[key] = method
        return None

    def _publish_parts(self, messages: Iterable[tuple[str, bytes]], *, persistent: bool = False) -> list[bytes]:
        number = self.channel.channel_number
        max_len = pika_compat.body_max_length(self.connection)
        methods = self._methods
        headers = self._persistent_headers if persistent else self._headers
        properties = _PERSISTENT if persistent else spec.BasicProperties()
        prefixes = self._prefixes
        parts: list[bytes] = []
        for key, body in messages:
            size = len(body)
            prefix = prefixes.get((key, size, persistent))
            if prefix is not None:  # three parts for its three frames (_emit counts frames by parts)
                parts.append(prefix)
                parts.append(body)
                parts.append(FRAME_END)
                continue
            method = methods.get(key)
            if method is None:
                if len(methods) >= _CACHE_MAX:
                    methods.clear()
                publish = spec.Basic.Publish(exchange="", routing_key=key)
                method = methods[key] = pframe.Method(number, publish).marshal()
            header = headers.get(size)
            if header is None:
                if len(headers) >= _CACHE_MAX:
                    headers.clear()
                header = headers[size] = pframe.Header(number, size, properties).marshal()
            if 0 < size <= max_len:
                if len(prefixes) >= _CACHE_MAX:
                    prefixes.clear()
                prefixes[(key, size, persistent)] = method + header + FRAME_HEAD.pack(spec.FRAME_BODY, number, size)
            parts.append(method)
            parts.append(header)
            add_body(parts, number, body, max_len)
        return parts

    def _ack_parts(self, acks: Iterable[tuple[int, bool]], parts: list[bytes]) -> None:
        number = self.channel.channel_number
        pack = _ACK.pack
        for tag, multiple in acks:
            parts.append(pack(spec.FRAME_METHOD, number, 13, spec.Basic.Ack.INDEX, tag, 1 if multiple else 0)
                         + FRAME_END)


class ConfirmedPublisher:
    """A channel in publisher-confirm mode for the messages that must not be lost (dead letters): a batch is
    published ``mandatory`` and awaited until the broker has confirmed every message of it. A message the broker
    returns (no queue to route it to) or nacks, or whose confirm does not come in time, is reported failed.

    Batches go one at a time (a return names no publish sequence number, so a returned message is known by the
    batch it came in and its routing key). Confirms cost a disk write each: never on the reply path."""

    def __init__(self, channel: Channel, timeout: float = 30.0) -> None:
        self.channel, self.timeout = channel, timeout
        self._published = 0  # the last publish sequence number handed out
        self._pending: dict[int, asyncio.Future[bool]] = {}  # sequence number -> acked (True) or nacked (False)
        self._returned: set[str] = set()  # routing keys returned during the current batch
        self._lock = asyncio.Lock()
        self.closed: BaseException | None = None
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_close)

    @classmethod
    async def open(cls, connection: AsyncioConnection, timeout: float = 30.0) -> ConfirmedPublisher:
        try:
            channel = await callback_call(lambda cb: connection.channel(on_open_callback=cb))
            publisher = cls(channel, timeout)
            await callback_call(lambda cb: channel.confirm_delivery(publisher._on_confirm, callback=cb))
        except TimeoutError:
            raise ProbeError("RabbitMQ: a channel in confirm mode did not open in 10 s") from None
        return publisher

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, spec.Basic.Ack)
        tags = ([t for t in self._pending if t <= method.delivery_tag] if method.multiple
                else [method.delivery_tag])
        for tag in tags:
            fut = self._pending.pop(tag, None)
            if fut is not None:
                _resolve(fut, acked)

    def _on_return(self, _channel: Any, method: Any, _properties: Any, _body: bytes) -> None:
        self._returned.add(str(method.routing_key))

    def _on_close(self, _channel: Any, reason: BaseException) -> None:
        self.closed = reason
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(pexc.ChannelClosed(0, f"the confirm channel closed: {reason}"))
                fut.add_done_callback(_retrieve)
        self._pending.clear()

    async def publish(self, messages: list[tuple[str, bytes, pika.BasicProperties]]) -> list[str | None]:
        """Publish ``(queue, body, properties)`` through the default exchange, mandatory; per message, None once
        the broker confirmed it, else why it is not safe."""
        async with self._lock:
            if self.closed is not None or not self.channel.is_open:
                return [f"the confirm channel is closed: {self.closed}"] * len(messages)
            loop = asyncio.get_running_loop()
            self._returned.clear()
            waits: list[asyncio.Future[bool]] = []
            for key, body, props in messages:
                self._published += 1
                fut: asyncio.Future[bool] = loop.create_future()
                self._pending[self._published] = fut
                waits.append(fut)
                self.channel.basic_publish("", key, body, props, mandatory=True)
            done, late = await asyncio.wait(waits, timeout=self.timeout)
            for fut in late:  # no longer awaited: a confirm or a close that comes later changes nothing
                fut.cancel()
            out: list[str | None] = []
            for (key, _body, _props), fut in zip(messages, waits, strict=True):
                if fut not in done:
                    out.append(f"no confirm from the broker in {self.timeout:g} s")
                elif fut.exception() is not None:
                    out.append(str(fut.exception()))
                elif not fut.result():
                    out.append("the broker nacked it")
                elif key in self._returned:
                    out.append(f"the broker returned it: no queue {key!r}")
                else:
                    out.append(None)
            return out

    async def aclose(self) -> None:
        if self.channel.is_open:
            with contextlib.suppress(Exception):
                self.channel.close()


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


READ_SLICE_BYTES = 8 * 1024


def _share_the_loop(conn: AsyncioConnection) -> None:
    """pika handles up to 100 KB per readable event (hundreds of deliveries, milliseconds of Python) before the
    loop runs anything else; a load generator's sender then falls behind its schedule. Handing the loop back
    after 8 KB costs nothing in throughput (the socket stays readable) and keeps each turn short."""
    pika_compat.set_read_slice(conn, READ_SLICE_BYTES)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _quiet_close(conn: AsyncioConnection) -> None:
    try:
        if not (conn.is_closed or conn.is_closing):
            conn.close()
    except Exception:  # closing a half-open connection may raise inside pika; nothing to clean up then
        pass
