"""One walk of a RabbitMQ queue for the dead-letter actions: every message it held at the start, once, each held
(unacked) until it is settled, and what is left in place requeued only at the end.

- Deliveries come to consumers with manual acks on one channel, parsed off the socket with their property bytes
  as they came (``probes.rabbitmq.amqp_deliveries``, raw: a redrive writes them back unchanged). A consumer's
  prefetch is fixed when it starts (per-consumer qos cannot change later, and quorum queues have no channel-wide
  qos), so when the messages left in place fill the room, another consumer on the same channel adds room: the
  window keeps flowing however many are held, and memory stays bounded by the window, not by the queue.
- The walk ends after the count it started with (the consumers are cancelled at the delivery that completes it; a
  message published meanwhile and delivered before the cancel is sent straight back), or when nothing arrives for
  ``idle_s`` (someone else took the rest).
- Settling: acks after their confirms, one ``multiple`` ack for those in front of the oldest still held, single
  ones behind it, and a round trip on the channel so that "removed" means the broker has the acks (``ack``).
  At the end the consumers are cancelled first, then everything still held is requeued: a classic
  queue puts requeued messages back in their places (one multiple nack); a quorum queue appends them to its returns
  in the order the nacks reach it (see ``_requeue_in_order``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import pika.exceptions as pexc

from probes.errors import NotFound, ProbeError
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from probes.rabbitmq.amqp_link import AmqpConnection, Chan, amqp_error

MAX_PREFETCH = 65535  # basic.qos prefetch-count is a short
WINDOW_BATCHES = 2  # the prefetch window, in batches
REQUEUE_CHUNK = 16  # quorum requeues between round trips (see Walk._requeue_in_order)
Convert = Callable[[int, bytes, bytes], Any]  # (delivery tag, property bytes, body) -> what a batch holds


class Walk:
    """``convert`` turns each delivery into what ``next_batch`` returns as it arrives (while the caller waits for
    the broker, not after)."""

    def __init__(self, link: AmqpConnection, chan: Chan, queue: str, start: int, batch: int, convert: Convert, *,
                 first_prefetch: int | None = None, classic: bool = False, idle_s: float = 1.0,
                 linger_s: float = 0.02) -> None:
        self.link, self.chan, self.channel, self.queue = link, chan, chan.channel, queue
        self.convert = convert
        self.start, self.batch, self.classic = start, batch, classic
        self.idle_s, self.linger_s = idle_s, linger_s
        # room beyond what is held, for deliveries to flow while the caller publishes and settles a batch
        self.window = min(MAX_PREFETCH, max(WINDOW_BATCHES * batch, 100))
        self.first_prefetch = min(MAX_PREFETCH, start, max(first_prefetch or 0, self.window))
        self.buffer: list[Any] = []
        self.received = 0
        self.held = 0  # left in place (released): unacked until the walk ends
        self.room = 0  # the prefetch of every consumer, together
        self.qos = 0
        self.tags: list[str] = []  # the live consumers' tags
        self.consumers = 0  # every consumer started
        self.name = uuid.uuid4().hex[:12]
        self.done = False  # every message of the walk arrived, or the consumers were cancelled
        self.broken: BaseException | None = None
        self.wake = asyncio.Event()
        self.want = batch
        self.last_tag = 0
        self.order: deque[int] = deque()  # delivery tags not settled, in delivery order
        self.gone: set[int] = set()  # settled tags still in ``order``
        self.finished = False
        chan.closed.add_done_callback(self._on_closed)

    # ---- deliveries ----------------------------------------------------------------------------------------------
    def _on_closed(self, fut: asyncio.Future[BaseException]) -> None:
        if not self.finished and not fut.cancelled():
            self.broken = fut.result()
            self.wake.set()

    def _on_message(self, body: bytes, tag: int, props: bytes) -> None:
        if self.done:  # published after the walk started, delivered before the cancel: not this walk's
            with contextlib.suppress(Exception):  # a closing channel requeues it anyway
                self.channel.basic_nack(tag, requeue=True)
            return
        try:
            self.buffer.append(self.convert(tag, props, body))
        except Exception as exc:  # a converter bug must not vanish inside pika's callback: the walk stops on it
            self.broken = exc
            self.wake.set()
        self.order.append(tag)
        self.last_tag = tag
        self.received += 1
        if self.received >= self.start:
            self.done = True
            self._cancel()
            self.wake.set()
        elif len(self.buffer) >= self.want:
            self.wake.set()

    def _on_cancelled(self, _frame: Any) -> None:
        if not self.done:
            self.broken = NotFound(f"queue {self.queue!r} was deleted (or its consumer cancelled by the broker) "
                                   "while it was read")
            self.wake.set()

    async def begin(self) -> None:
        self.channel.add_on_cancel_callback(self._on_cancelled)
        await self._add_consumer(self.first_prefetch)

    async def _add_consumer(self, prefetch: int) -> None:
        await self.link.call(self.chan, self.channel.basic_qos, prefetch_count=prefetch, what="basic.qos")
        self.qos = prefetch  # what the channel gives consumers started later: the acks' round trip repeats it
        self.room += prefetch
        # tags that sort in the order the consumers start: where RabbitMQ groups a quorum queue's returns by
        # consumer, it takes them in tag order, oldest consumer (oldest messages) first
        tag = f"qdeck-dlq-{self.name}-{self.consumers:05d}"
        self.consumers += 1
        reader = DeliveryReader.of(self.link.connection)
        self.tags.append(reader.consume(self.channel, self.queue, self._on_message, auto_ack=False, consumer_tag=tag,
                                        raw=True))

    def _cancel(self) -> None:
        for tag in self.tags:
            with contextlib.suppress(Exception):
                self.channel.basic_cancel(tag)
        self.tags.clear()

    async def hold(self, n: int) -> None:
        """``n`` more messages stay unacked until the end: add a consumer when they leave too little room."""
        self.held += n
        if not self.done and self.room - self.held < self.window and self.chan.is_open:
            await self._add_consumer(min(MAX_PREFETCH, max(self.window, self.held)))

    async def next_batch(self) -> list[Any]:
        """Up to ``batch`` deliveries: at once when that many are here; else what comes before the deliveries pause
        for ``linger_s``; [] when the walk is over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.idle_s
        while not self.buffer:
            self._check()
            if self.done:
                return []
            self.wake.clear()
            self.want = 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(deadline - loop.time(), 0))
            self._check()
            if not self.buffer and loop.time() >= deadline:
                return []  # nothing for idle_s: the rest of the count is someone else's now
        while len(self.buffer) < self.batch and not self.done and not self._stalled():
            seen = self.received
            self.wake.clear()
            self.want = self.batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.linger_s)
            self._check()
            if self.received == seen:
                break
        taken = self.buffer[:self.batch]
        del self.buffer[:self.batch]
        return taken

    def _stalled(self) -> bool:
        """Whether the consumers' prefetch is full: nothing more comes before something is acked."""
        return len(self.order) - len(self.gone) >= self.room

    def _check(self) -> None:
        if self.broken is None:
            return
        if isinstance(self.broken, ProbeError | pexc.AMQPError | OSError):
            raise amqp_error(self.link.target, self.broken, f"reading {self.queue!r}")
        raise self.broken  # not the broker's doing: a bug, shown as one

    # ---- settling ------------------------------------------------------------------------------------------------
    async def ack(self, tags: list[int]) -> None:
        """Ack settled deliveries: one ``multiple`` ack for those in front of the oldest unsettled one, single acks
        for the rest (a multiple ack would take held ones with it); returns once the broker has taken the acks.
        An ack has no answer, and pika writes it out on a later turn of the loop: without the round trip (the
        broker handles a channel's frames in order) a journal could say "removed" of a message whose ack a kill -9
        never let out, and the next run would send it again, uncounted."""
        if not self.chan.is_open:
            raise amqp_error(self.link.target, self.broken or self.link.lost or ProbeError("the channel closed"),
                             f"acking messages of {self.queue!r}")
        settled = sorted(tags)
        self.gone.update(settled)
        order, gone = self.order, self.gone
        while order and order[0] in gone:
            gone.discard(order.popleft())
        oldest = order[0] if order else None
        below = [t for t in settled if oldest is None or t < oldest]
        if below:
            self.channel.basic_ack(below[-1], multiple=len(below) > 1)
        for t in settled[len(below):]:
            self.channel.basic_ack(t)
        await self.link.call(self.chan, self.channel.basic_qos, prefetch_count=self.qos, what="acking (basic.qos)")

    async def finish(self) -> None:
        """Cancel the consumers, then requeue every message still held, in order, and close the channel."""
        if self.finished:
            return
        self.finished = True
        try:
            if self.chan.is_open:
                for tag in list(self.tags):
                    with contextlib.suppress(ProbeError):
                        await self.link.call(self.chan, self.channel.basic_cancel, tag, what="basic.cancel")
                self.tags.clear()
                self.done = True
                held = [t for t in self.order if t not in self.gone]
                if held and self.chan.is_open:
                    if self.classic:
                        self.channel.basic_nack(self.last_tag, multiple=True, requeue=True)
                    else:
                        await self._requeue_in_order(held)
                    # a round trip before the channel closes: closing returns what it still holds its own way
                    with contextlib.suppress(ProbeError):
                        await self.link.call(self.chan, self.channel.basic_qos, prefetch_count=1, what="basic.qos")
                    if not self.classic:
                        await self._until_back(len(held))
        finally:
            self.buffer.clear()
            self.chan.close()

    async def _until_back(self, n: int, timeout: float = 2.0) -> None:
        """Wait (a little) until the queue counts the ``n`` requeued messages as ready: a quorum queue applies
        returns through its log, a moment after the nacks, and a walk started right after this one (a dry run,
        then the real one) would otherwise count fewer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(ProbeError):
            while (await self.link.queue_state(self.queue)).ready < n and loop.time() < deadline:
                await asyncio.sleep(0.01)

    async def _requeue_in_order(self, held: list[int]) -> None:
        """Requeue on a quorum queue (or one of unknown type), oldest first, as well as RabbitMQ lets a client: its
        channel sends each return to the queue at once while fewer than 32 are pending, and past that buffers
        them grouped by consumer (the queue then takes one consumer's messages before another's, so messages where
        two consumers' deliveries interleaved can come back out of order). One nack each, in chunks paced by a
        round trip; the store starts one consumer with room for the whole walk where memory allows, and then
        nothing interleaves."""
        for i in range(0, len(held), REQUEUE_CHUNK):
            for t in held[i:i + REQUEUE_CHUNK]:
                self.channel.basic_nack(t, requeue=True)
            if i + REQUEUE_CHUNK < len(held):
                await self.link.call(self.chan, self.channel.basic_qos, prefetch_count=1, what="basic.qos")
