"""RabbitMQ transport on pika's asyncio adapter: publish to the request queue, consume an exclusive reply queue.

pika was measured against aio-pika on this request/reply path (``bench/rabbitmq_clients.py``, figures in
``bench/RESULTS.md``) and kept. Publisher confirms stay off on this path: with them a reply channel is ~50× slower;
a message the broker refuses shows up as a timeout, never as a silent loss.
"""

from __future__ import annotations

import time
from typing import Any

from loadgen.amqp import AmqpLink, amqp_error
from loadgen.transports.base import ReplyHandler
from probes.urls import BrokerTarget


class RabbitMQTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.target, self.queue = target, queue
        self.reply_to = f"qdeck.reply.{run_id}"
        self.link: AmqpLink | None = None
        self._handler: ReplyHandler | None = None

    async def start(self, on_reply: ReplyHandler) -> None:
        self._handler = on_reply
        self.link = link = await AmqpLink.open(self.target)
        await link.ensure_queue(self.queue)
        await link.declare(self.reply_to, durable=False, exclusive=True, auto_delete=True)
        link.channel.basic_consume(self.reply_to, self._on_reply, auto_ack=True)

    def _on_reply(self, _ch: Any, _method: Any, _props: Any, body: bytes) -> None:
        assert self._handler is not None
        self._handler(body, time.time_ns())

    async def send(self, bodies: list[bytes]) -> None:
        link = self.link
        assert link is not None, "start() first"
        if link.closed.done():
            raise amqp_error(self.target, link.closed.result(), f"publishing to {self.queue!r}")
        publish = link.channel.basic_publish
        for body in bodies:
            publish("", self.queue, body)

    async def aclose(self) -> None:
        if self.link is not None:
            await self.link.aclose()  # the exclusive reply queue goes with the connection
