"""RabbitMQ transport on pika's asyncio adapter: publish to the request queue, consume the run's reply queue.

pika was measured against aio-pika on this request/reply path (``bench/rabbitmq_clients.py``, figures in
``bench/RESULTS.md``) and kept. Nothing waits on a publisher confirm (a channel that waits on each is ~50× slower).
With ``confirm`` (``qdeck load run --confirm``) the request channel is in confirm mode and the confirms are
counted: when the connection drops, the requests written last that the broker never confirmed are known, and the
engine ends them at once as not confirmed instead of letting them time out. It is off by default because it is
load on the system under test that real clients rarely add: the broker's confirm work, and a confirm frame back per
few requests (one A/B pair of ceiling searches: 22.6k/s with it, 27.4k/s without, ``bench/RESULTS.md``).
Without it, a request lost in a dropped connection is a timeout; never a silent loss either way.

A dropped connection (a broker restart, an admin closing it) is re-made in the background: sends meanwhile raise
``ConnectionLost`` (the engine counts those requests unsent and reports the outage), and the request and reply
queues are declared again.

The reply queue outlives a dropped connection, so that replies the workers publish meanwhile wait for the run: it
is durable, neither exclusive nor auto-delete, and expires ``REPLY_EXPIRES_MS`` after its last use (a run killed
with SIGKILL leaves it that long); the run deletes it when it ends. Across a broker restart RabbitMQ keeps only
persistent messages: with ``persistent`` (``qdeck load run --persistent``) requests are published with delivery
mode 2 and the worker's replies mirror it, so a graceful restart loses none; without it the requests and replies
queued at the restart are dropped by the broker and end as timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from loadgen.brokers.amqp import AmqpLink, ChannelWriter, amqp_error
from loadgen.transports.base import ReplyHandler
from probes.errors import ConnectionLost, ProbeError
from probes.rabbitmq.amqp_close import connection_dropped, describe_close
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from probes.urls import BrokerTarget

SLICE = 32  # replies handled between two yields to the loop
REPLY_EXPIRES_MS = 300_000  # an unused reply queue (its run is gone) is removed by the broker after 5 minutes


class RabbitMQTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue = target, queue
        self.reply_to = f"qdeck.reply.{run_id}"
        self.link: AmqpLink | None = None
        self.writer: ChannelWriter | None = None
        self._handler: ReplyHandler | None = None
        self._inbox: deque[tuple[bytes, int]] = deque()
        self._draining = False
        self._fatal: ProbeError | None = None  # the broker refused something: ends the run
        self._lost: ConnectionLost | None = None  # set while the connection is down and being re-made
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        self.reconnects = 0
        self._published = 0  # requests written on the current channel (its delivery tags are 1..published)
        self._confirmed = 0  # every tag up to this one confirmed (acked or nacked: the broker decided)
        self._early: set[int] = set()  # tags confirmed singly, above _confirmed
        self._unconfirmed = 0
        self.confirm = False  # publisher-confirm mode on the request channel (open_transport sets it)
        self.persistent = False  # requests published with delivery mode 2 (open_transport sets it)

    async def start(self, on_reply: ReplyHandler) -> None:
        self._handler = on_reply
        await self._connect()

    async def _connect(self) -> None:
        link = await AmqpLink.open(self.target)
        try:
            await link.ensure_queue(self.queue)
            await link.declare(self.reply_to, arguments={"x-expires": REPLY_EXPIRES_MS})  # durable, outlives us
            reader = DeliveryReader.of(link.connection)
            reader.consume(link.channel, self.reply_to, self._on_reply, auto_ack=True)
            # Confirms, not waited for: they only tell, when the connection drops, how many of the requests written
            # last the broker never took (they end at once as not confirmed, instead of timing out). The reader
            # parses them off the socket; pika's callback is there for when it cannot.
            self._published = self._confirmed = 0
            self._early.clear()
            if self.confirm:
                await link.call(link.channel.confirm_delivery, self._on_pika_confirm, what="confirm.select")
                reader.confirms(link.channel, self._on_confirm)
        except BaseException:
            await link.aclose()
            raise
        self.link, self.writer = link, ChannelWriter(link.channel)
        link.closed.add_done_callback(lambda done: self._on_closed(link, done.result()))

    def _on_closed(self, link: AmqpLink, reason: BaseException) -> None:
        """The connection or channel closed under us: a refusal ends the run; a dropped connection is re-made."""
        if self._closing or link is not self.link or self._lost is not None:
            return
        if connection_dropped(reason):
            if self.confirm:
                self._unconfirmed += max(self._published - self._confirmed - len(self._early), 0)
            self._published = self._confirmed = 0
            self._early.clear()
            self._lost = ConnectionLost(f"RabbitMQ at {self.target.host}:{self.target.port}: {describe_close(reason)}"
                                        "; reconnecting")
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(),
                                                                        name="qdeck-rabbitmq-reconnect")
        else:
            self._fatal = amqp_error(self.target, reason, f"publishing to {self.queue!r}")

    async def _reconnect(self) -> None:
        """Open a new connection, re-declare the request queue and the reply queue, consume again; back off ×2 from
        50 ms to 1 s between tries. Replies the workers published meanwhile waited in the reply queue."""
        old = self.link
        if old is not None:
            await old.aclose()
        delay = 0.05
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._connect()
            except ProbeError:
                delay = min(delay * 2, 1.0)
                continue
            self.reconnects += 1
            self._lost = None
            return

    def _on_pika_confirm(self, frame: Any) -> None:
        self._on_confirm(int(frame.method.delivery_tag), bool(frame.method.multiple))

    def _on_confirm(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._confirmed = max(self._confirmed, tag)
        else:
            self._early.add(tag)
        while self._confirmed + 1 in self._early:
            self._confirmed += 1
            self._early.discard(self._confirmed)
        if self._early and min(self._early) <= self._confirmed:
            self._early = {t for t in self._early if t > self._confirmed}

    def take_unconfirmed(self) -> int:
        """Requests written just before the connection dropped that the broker never confirmed (see engine)."""
        n, self._unconfirmed = self._unconfirmed, 0
        return n

    def _on_reply(self, body: bytes, _tag: int, _props: Any) -> None:
        # One socket read brings many replies (hundreds at high rates), all parsed in one go; the
        # replies are handled in slices, the loop given back in between, so the sender is not held up meanwhile.
        self._inbox.append((body, time.perf_counter_ns()))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        handler, inbox = self._handler, self._inbox
        assert handler is not None
        for _ in range(min(SLICE, len(inbox))):
            handler(*inbox.popleft())
        if inbox:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._draining = False

    async def send(self, bodies: list[bytes]) -> None:
        link, writer = self.link, self.writer
        assert link is not None and writer is not None, "start() first"
        if self._fatal is None and self._lost is None and link.closed.done():
            self._on_closed(link, link.closed.result())  # closed since the last turn of the loop
        if self._fatal is not None:
            raise self._fatal
        if self._lost is not None:
            raise self._lost
        queue = self.queue
        if self.persistent:
            writer.publish((), persistent=[(queue, body) for body in bodies])  # one write for the batch
        else:
            writer.publish([(queue, body) for body in bodies])
        self._published += len(bodies)

    def failure(self) -> ProbeError | None:
        return self._fatal

    async def aclose(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        link = self.link
        if link is None:
            return
        if not link.closed.done():
            with contextlib.suppress(ProbeError):  # replies still on the way are not wanted any more
                await link.call(link.channel.queue_delete, self.reply_to, what=f"delete queue {self.reply_to!r}")
        await link.aclose()
