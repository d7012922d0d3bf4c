"""pika on the running asyncio loop, for the probes layer: a connection whose channels open as awaitables, passive
queue checks on throwaway channels, and a publisher-confirm channel that says per message whether the broker took it.

Public pika API, but for the confirm channel's publishes: marshalled by ``probes.rabbitmq.publish_frames`` and
written many to a write (the pika internals that takes are in ``probes.rabbitmq.pika_compat``; without them,
``basic_publish``). Failures come out as ``ProbeError``s with one-line, credential-free messages.
(``loadgen.brokers.amqp`` has the load generator's own links, with their fast paths, on this module's
``connection_parameters`` and ``amqp_error``; probes may not import loadgen.)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from struct import error as struct_error
from typing import Any

import pika
import pika.exceptions as pexc
from pika import spec
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.channel import Channel

from probes.errors import AuthFailed, BrokerUnreachable, ConnectionLost, NotFound, ProbeError
from probes.netcause import connection_cause
from probes.rabbitmq.amqp_close import connection_dropped, describe_close
from probes.rabbitmq.publish_frames import PublishFrames
from probes.redact import redact_text
from probes.urls import BrokerTarget

CONFIRM_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 10.0
WRITE_BYTES = 64 << 10  # a batch of publishes goes out in writes of about this size: the broker starts on the first


def connection_parameters(target: BrokerTarget, *, heartbeat: int = 30,
                          blocked_connection_timeout: float = 60) -> pika.ConnectionParameters:
    """pika's parameters for ``target`` (TLS per the URL, ``verify=false`` honoured), for the probes, the dead-letter
    stores and the load generator's and worker's links (``loadgen.brokers.amqp``, which gives up on a connection the
    broker blocks after 30 s)."""
    creds = pika.PlainCredentials(target.username or "guest", target.password or "guest")
    ssl_options = None
    if target.tls:
        context = ssl.create_default_context()
        if target.param("verify", "true") == "false":
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        ssl_options = pika.SSLOptions(context, target.host)
    return pika.ConnectionParameters(host=target.host, port=target.port, virtual_host=target.path or "/",
                                     credentials=creds, heartbeat=heartbeat, ssl_options=ssl_options,
                                     connection_attempts=1, socket_timeout=5, stack_timeout=8,
                                     blocked_connection_timeout=blocked_connection_timeout)


def amqp_error(target: BrokerTarget, exc: BaseException, what: str = "") -> ProbeError:
    """``exc`` (a pika exception, or the reason a channel or connection closed) as one ProbeError line; the one
    translation for the probes and the load generator's and worker's links. A connection the broker closed is a
    ``ConnectionLost`` when reconnecting is the remedy (``connection_dropped``), else a ``BrokerUnreachable`` that
    says why; a connection that could not be made says what the socket said (``_diagnose``)."""
    if isinstance(exc, ProbeError):
        return exc
    where = f"RabbitMQ at {target.host}:{target.port}"
    during = f" during {what}" if what else ""
    if isinstance(exc, pexc.ProbableAuthenticationError | pexc.AuthenticationError):
        return AuthFailed(f"authentication failed at {where}: check the user name and password")
    if isinstance(exc, pexc.ProbableAccessDeniedError):
        return AuthFailed(f"access denied at {where} (vhost {target.path!r})")
    if isinstance(exc, pexc.ChannelClosedByBroker):
        text = f"{what or 'a request'} at {where}: {exc.reply_code} {exc.reply_text}"
        if exc.reply_code == 404:
            return NotFound(redact_text(text, target.secrets)[:300])
        if exc.reply_code == 403:
            return AuthFailed(redact_text(text, target.secrets)[:300])
        return ProbeError(redact_text(f"RabbitMQ refused {text}", target.secrets)[:300])
    if isinstance(exc, pexc.ConnectionClosedByBroker) and not connection_dropped(exc):
        return BrokerUnreachable(redact_text(f"{where}: {describe_close(exc)}{during}", target.secrets)[:300])
    if isinstance(exc, pexc.ConnectionClosedByBroker | pexc.StreamLostError | pexc.ConnectionWrongStateError):
        return ConnectionLost(redact_text(f"the connection to {where} was lost{during}: "
                                          f"{type(exc).__name__}: {exc}", target.secrets)[:300])
    if isinstance(exc, pexc.AMQPConnectionError | AMQPConnectorException | OSError):
        return BrokerUnreachable(redact_text(f"broker unreachable: {where}: {_diagnose(target, exc)}",
                                             target.secrets)[:300])
    return ProbeError(redact_text(f"RabbitMQ error at {where}{' (' + what + ')' if what else ''}: "
                                  f"{type(exc).__name__}: {exc}", target.secrets)[:300])


# Failures to open a connection that may come without the socket's error: a bare AMQPConnectionError, the connection
# workflow's own exceptions, and a server that is not AMQP (an incompatible protocol, an open aborted at stack_timeout).
_OPEN_FAILED = (pexc.ConnectionOpenAborted, pexc.IncompatibleProtocolError, AMQPConnectorException)


def _diagnose(target: BrokerTarget, exc: BaseException) -> str:
    """Why a connection failed, in a few words: the socket's error when pika kept one (refused, unknown host, TLS);
    for a failed open without one, a plain TCP connect tells refused from unknown host from timeout from a server that
    is not RabbitMQ's AMQP port; any other closing (heartbeats, a blocked-connection timeout) in its own words."""
    cause = _socket_error(exc)
    if cause is not None:
        return connection_cause(cause)
    if type(exc) is not pexc.AMQPConnectionError and not isinstance(exc, _OPEN_FAILED):
        return connection_cause(exc)
    try:
        socket.create_connection((target.host, target.port), timeout=3).close()
    except OSError as probe:
        return connection_cause(probe)
    return "the server accepted TCP but the AMQP handshake failed (is this port RabbitMQ's AMQP port?)"


def _socket_error(exc: BaseException) -> OSError | None:
    """The OSError inside ``exc``: pika wraps it in its connection workflow's exceptions (``args``, ``exceptions``,
    ``exception``), a few levels deep."""
    todo = [exc]
    for _ in range(16):
        if not todo:
            break
        seen = todo.pop(0)
        if isinstance(seen, OSError):
            return seen
        inner = (*seen.args, *(getattr(seen, "exceptions", None) or ()), getattr(seen, "exception", None))
        todo += [e for e in inner if isinstance(e, BaseException)]
    return None


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


@dataclass(frozen=True, slots=True)
class QueueState:
    """A passive ``queue.declare``'s answer: the authoritative ready count and consumer count."""

    name: str
    ready: int
    consumers: int


class Chan:
    """An open pika channel and the future its closing resolves (with the reason)."""

    __slots__ = ("channel", "closed")

    def __init__(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        channel.add_on_close_callback(lambda _ch, reason: _resolve(self.closed, reason))

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open) and not self.closed.done()

    def close(self) -> None:
        close_quietly(self.channel)


class AmqpConnection:
    """One AMQP connection on the running loop. ``channel()`` opens channels; ``call`` awaits an RPC's reply or
    its channel's closing; ``queue_state`` is a passive declare on a throwaway channel (a 404 closes it)."""

    def __init__(self, target: BrokerTarget, connection: AsyncioConnection) -> None:
        self.target, self.connection = target, connection
        self.lost: BaseException | None = None
        connection.add_on_close_callback(self._on_close)

    def _on_close(self, _conn: Any, reason: BaseException) -> None:
        self.lost = reason

    @classmethod
    async def open(cls, target: BrokerTarget, *, timeout: float = 10.0) -> AmqpConnection:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()

        def failed(_conn: Any, exc: BaseException) -> None:
            if not opened.done():
                opened.set_exception(exc if isinstance(exc, BaseException) else pexc.AMQPConnectionError(exc))

        conn = AsyncioConnection(connection_parameters(target), on_open_callback=lambda c: _resolve(opened, c),
                                 on_open_error_callback=failed, on_close_callback=failed, custom_ioloop=loop)
        try:
            await asyncio.wait_for(opened, timeout)
        except TimeoutError:
            # No close() here: closing while pika's connection workflow runs trips an assertion inside pika.
            raise BrokerUnreachable(f"broker unreachable: RabbitMQ at {target.host}:{target.port}: "
                                    f"no answer in {timeout:.0f} s") from None
        except (pexc.AMQPError, AMQPConnectorException, OSError) as exc:
            with contextlib.suppress(Exception):
                if not (conn.is_closed or conn.is_closing):
                    conn.close()
            raise amqp_error(target, exc) from None
        return cls(target, conn)

    def check_open(self, what: str) -> None:
        if self.lost is not None or not self.connection.is_open:
            raise amqp_error(self.target, self.lost or pexc.ConnectionWrongStateError("closed"), what)

    async def channel(self) -> Chan:
        self.check_open("opening a channel")
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Channel] = loop.create_future()
        try:
            self.connection.channel(on_open_callback=lambda ch: _resolve(opened, ch))
            return Chan(await asyncio.wait_for(opened, RPC_TIMEOUT_S), loop)
        except TimeoutError:
            raise ProbeError(f"RabbitMQ at {self.target.host}:{self.target.port}: a channel did not open in "
                             f"{RPC_TIMEOUT_S:g} s") from None
        except pexc.AMQPError as exc:
            raise amqp_error(self.target, self.lost or exc, "opening a channel") from None

    async def call(self, chan: Chan, fn: Callable[..., Any], *args: Any, what: str = "", **kwargs: Any) -> Any:
        """Run a callback-style channel method (``callback=``) and await its reply; a channel closed instead (a 404,
        a 406) raises its reason as a ProbeError."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            if not chan.is_open:
                raise chan.closed.result() if chan.closed.done() else pexc.ChannelWrongStateError("closed")
            fn(*args, callback=lambda frame: _resolve(done, frame), **kwargs)
        except pexc.AMQPError as exc:
            raise amqp_error(self.target, self.lost or exc, what) from None
        finished, _ = await asyncio.wait({done, chan.closed}, timeout=RPC_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        if done in finished:
            return done.result()
        if chan.closed in finished:
            raise amqp_error(self.target, self.lost or chan.closed.result(), what)
        raise ProbeError(f"RabbitMQ at {self.target.host}:{self.target.port}: no answer to {what or 'a request'} "
                         f"in {RPC_TIMEOUT_S:g} s")

    async def queue_state(self, queue: str) -> QueueState:
        """Passive declare of ``queue`` on a throwaway channel; ``NotFound`` when it does not exist."""
        chan = await self.channel()
        try:
            frame = await self.call(chan, chan.channel.queue_declare, queue, passive=True,
                                    what=f"queue {queue!r} in vhost {self.target.path or '/'!r}")
        finally:
            chan.close()
        return QueueState(queue, int(frame.method.message_count), int(frame.method.consumer_count))

    async def exchange_exists(self, exchange: str) -> bool:
        """Passive declare of ``exchange`` on a throwaway channel."""
        chan = await self.channel()
        try:
            await self.call(chan, chan.channel.exchange_declare, exchange, passive=True,
                            what=f"exchange {exchange!r}")
        except NotFound:
            return False
        finally:
            chan.close()
        return True

    async def declare(self, queue: str, *, durable: bool, arguments: dict[str, Any] | None = None) -> None:
        chan = await self.channel()
        try:
            await self.call(chan, chan.channel.queue_declare, queue, durable=durable, arguments=arguments,
                            what=f"declaring queue {queue!r}")
        finally:
            chan.close()

    async def aclose(self) -> None:
        conn = self.connection
        if conn.is_closed or conn.is_closing:
            return
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        conn.add_on_close_callback(lambda *_: _resolve(closed, None))
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed, 5.0)


def close_quietly(channel: Channel) -> None:
    with contextlib.suppress(Exception):
        if channel.is_open:
            channel.close()


class _Batch:
    """One ``ConfirmChannel.publish`` call in flight. Messages are indexed in the order given; ``index`` maps a
    publish sequence number (minus ``first``) to its message (a message refused while marshalling takes none)."""

    __slots__ = ("done", "first", "index", "keys", "open", "out")

    def __init__(self, first: int, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.first = first
        self.index: list[int] = []
        self.keys: list[tuple[str, str, bytes] | None] = [None] * n  # (exchange, routing key, body)
        self.out: list[str | bool | None] = [False] * n  # False: not settled; None: confirmed; str: why not
        self.open = 0  # published messages not settled yet
        self.done: asyncio.Future[None] = loop.create_future()


class ConfirmChannel:
    """A channel in publisher-confirm mode: ``publish`` writes a batch ``mandatory`` and returns, per message, None
    once the broker confirmed it, else why not (returned unroutable, nacked, the channel closed, no confirm in
    time). A basic.return names no sequence number: it is matched to the oldest message of the batch not yet
    settled with the same exchange, routing key and body (RabbitMQ sends a message's return before its ack, and
    returns in publish order), so identical messages are interchangeable and unlike ones are told apart exactly."""

    def __init__(self, link: AmqpConnection, chan: Chan) -> None:
        self.link, self.chan = link, chan
        self.frames = PublishFrames(chan.channel)
        self.seq = 0  # the last publish sequence number used
        self._batch: _Batch | None = None
        self._lock = asyncio.Lock()
        chan.channel.add_on_return_callback(self._on_return)
        chan.channel.add_on_close_callback(self._on_close)

    @classmethod
    async def open(cls, link: AmqpConnection) -> ConfirmChannel:
        chan = await link.channel()
        confirmer = cls(link, chan)
        await link.call(chan, chan.channel.confirm_delivery, confirmer._on_confirm, what="confirm.select")
        return confirmer

    @property
    def usable(self) -> bool:
        return self.chan.is_open

    def _settle(self, b: _Batch, j: int, outcome: str | None) -> None:
        i = b.index[j]
        if b.out[i] is False:
            b.out[i] = outcome
            b.open -= 1
            if b.open == 0:
                _resolve(b.done, None)

    def _on_confirm(self, frame: Any) -> None:
        b = self._batch
        if b is None:
            return
        method = frame.method
        outcome = None if isinstance(method, spec.Basic.Ack) else "the broker nacked it (not written)"
        last = int(method.delivery_tag) - b.first
        for j in range(0 if method.multiple else last, min(last, len(b.index) - 1) + 1):
            if j >= 0:
                self._settle(b, j, outcome)

    def _on_return(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        b = self._batch
        if b is None:
            return
        key = (str(method.exchange), str(method.routing_key), body)
        for j, i in enumerate(b.index):
            if b.out[i] is False and b.keys[i] == key:
                where = f"queue {method.routing_key!r}" if not method.exchange else \
                    f"exchange {method.exchange!r} with key {method.routing_key!r}"
                self._settle(b, j, f"unroutable: the broker returned it ({method.reply_code} {method.reply_text}: "
                                   f"no {where})")
                return

    def _on_close(self, _channel: Any, reason: BaseException) -> None:
        b = self._batch
        if b is not None:
            why = f"the confirm channel closed: {amqp_error(self.link.target, reason)}"
            for j in range(len(b.index)):
                self._settle(b, j, why)

    async def publish(self, messages: list[tuple[str, str, bytes, spec.BasicProperties | bytes]],
                      timeout: float = CONFIRM_TIMEOUT_S) -> list[str | None]:
        """Publish ``(exchange, routing key, body, properties)`` mandatory; per message None once confirmed.
        Properties are a ``BasicProperties`` or, as the content header carries them, bytes (written unchanged)."""
        async with self._lock:
            b = _Batch(self.seq + 1, len(messages), asyncio.get_running_loop())
            self._batch = b
            frames = self.frames if self.frames.direct else None
            parts: list[bytes] = []
            size = 0
            publish = self.chan.channel.basic_publish
            for i, (exchange, key, body, props) in enumerate(messages):
                if not self.usable:
                    b.out[i] = "the confirm channel is closed"
                    continue
                try:
                    if frames is None:
                        if isinstance(props, bytes):
                            props = spec.BasicProperties().decode(props)
                        publish(exchange, key, body, props, mandatory=True)
                    else:
                        raw = props if isinstance(props, bytes) else b"".join(props.encode())
                        frames.add(parts, exchange, key, body, raw, mandatory=True)
                except (pexc.AMQPError, ValueError, TypeError, OverflowError, UnicodeError, struct_error,
                        AssertionError) as exc:
                    # refused while marshalling: nothing was written, no sequence number used
                    b.out[i] = f"not publishable: {type(exc).__name__}: {exc}"[:300]
                    continue
                self.seq += 1
                b.index.append(i)
                b.keys[i] = (exchange, key, body)
                b.open += 1
                if frames is not None:
                    size += len(body) + len(raw)
                    if size >= WRITE_BYTES:
                        frames.write(parts)
                        parts, size = [], 0
            if frames is not None:
                frames.write(parts)
            if b.open:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(b.done), timeout)
            self._batch = None
            late = f"no confirm from the broker in {timeout:g} s (it may have been written)"
            return [late if o is False else o for o in b.out]  # type: ignore[misc]

    def close(self) -> None:
        self.chan.close()
