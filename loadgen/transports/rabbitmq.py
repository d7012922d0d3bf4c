"""RabbitMQ transport on pika's asyncio adapter: publish to the request queue, consume an exclusive reply queue.

pika was measured against aio-pika on this request/reply path (``bench/rabbitmq_clients.py``, figures in
``bench/RESULTS.md``) and kept. Publisher confirms stay off on this path: with them a reply channel is ~50× slower;
a message the broker refuses shows up as a timeout, never as a silent loss.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from loadgen.amqp import AmqpLink, ChannelWriter, amqp_error
from loadgen.amqp_deliveries import DeliveryReader
from loadgen.transports.base import ReplyHandler
from probes.urls import BrokerTarget

SLICE = 32  # replies handled between two yields to the loop


class RabbitMQTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue = target, queue
        self.reply_to = f"qdeck.reply.{run_id}"
        self.link: AmqpLink | None = None
        self.writer: ChannelWriter | None = None
        self._handler: ReplyHandler | None = None
        self._inbox: deque[tuple[bytes, int]] = deque()
        self._draining = False

    async def start(self, on_reply: ReplyHandler) -> None:
        self._handler = on_reply
        self.link = link = await AmqpLink.open(self.target)
        await link.ensure_queue(self.queue)
        await link.declare(self.reply_to, durable=False, exclusive=True, auto_delete=True)
        DeliveryReader.of(link.connection).consume(link.channel, self.reply_to, self._on_reply, auto_ack=True)
        self.writer = ChannelWriter(link.channel)

    def _on_reply(self, body: bytes, _tag: int, _props: Any) -> None:
        # One socket read brings many replies (hundreds at high rates), all parsed in one go; the
        # replies are handled in slices, the loop given back in between, so the sender is not held up meanwhile.
        self._inbox.append((body, time.time_ns()))
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
        if link.closed.done():
            raise amqp_error(self.target, link.closed.result(), f"publishing to {self.queue!r}")
        queue = self.queue
        writer.publish([(queue, body) for body in bodies])  # one write for the batch

    async def aclose(self) -> None:
        if self.link is not None:
            await self.link.aclose()  # the exclusive reply queue goes with the connection
