"""RabbitMQ source (pika): manual acks only after the reply is published; prefetch sized to the batch.

Replies go through the default exchange to the request's ``reply_to`` queue; dead letters are published to
``<queue>.dlq`` (declared durable) with ``reason``/``source``/``attempts``/``failed_at`` headers and then the original
is acked. Prefetch is ``max_batch × (concurrency + 1)``: every model slot's batch plus the next one waiting.
A batch's replies and acks leave in one write; its acks are one ``multiple`` ack where that is safe (``AckPlan``).
Deliveries are parsed by ``DeliveryReader`` (pika's parser was a third of the worker's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pika

from loadgen.amqp import AckPlan, AmqpLink, ChannelWriter, amqp_error
from loadgen.amqp_deliveries import DeliveryReader
from loadgen.worker.source import DeadLetter, Delivery
from probes.errors import ProbeError
from probes.urls import BrokerTarget

_PERSISTENT = pika.BasicProperties(delivery_mode=2)


class RabbitMQSource:
    def __init__(self, target: BrokerTarget, queue: str, *, prefetch: int, dead_letter: str | None = None) -> None:
        self.target, self.queue, self.prefetch = target, queue, prefetch
        self.dead_letter_name = dead_letter or f"{queue}.dlq"
        self.link: AmqpLink | None = None
        self.writer: ChannelWriter | None = None
        self._buffer: asyncio.Queue[Delivery] = asyncio.Queue()
        self._consumer_tag: str | None = None
        self._acks = AckPlan()

    async def start(self) -> None:
        self.link = link = await AmqpLink.open(self.target)
        await link.ensure_queue(self.queue)
        await link.declare(self.dead_letter_name)
        await link.call(link.channel.basic_qos, prefetch_count=self.prefetch, what="basic.qos")
        self._consumer_tag = DeliveryReader.of(link.connection).consume(link.channel, self.queue, self._on_message,
                                                                        auto_ack=False)
        self.writer = ChannelWriter(link.channel)

    def _on_message(self, body: bytes, delivery_tag: int, properties: Any) -> None:
        self._acks.received(delivery_tag)
        self._buffer.put_nowait(Delivery(body, (delivery_tag, properties)))

    def _check(self) -> AmqpLink:
        assert self.link is not None, "start() first"
        if self.link.closed.done():
            raise amqp_error(self.target, self.link.closed.result(), f"consuming {self.queue!r}")
        return self.link

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        self._check()
        out: list[Delivery] = []
        if self._buffer.empty():
            if timeout_s <= 0:
                return out
            try:
                out.append(await asyncio.wait_for(self._buffer.get(), timeout_s))
            except TimeoutError:
                return out
        while len(out) < max_items and not self._buffer.empty():
            out.append(self._buffer.get_nowait())
        now = time.time_ns()
        for d in out:
            d.dequeued_ns = now
        return out

    async def settle(self, replies: list[tuple[str, bytes]], dead: list[DeadLetter], done: list[Delivery]) -> None:
        link = self._check()
        ch = link.channel
        assert self.writer is not None
        acks = self._acks.acks([delivery.handle[0] for delivery in done])
        if not dead:
            self.writer.publish(replies, acks)  # one write: the batch's replies, then its acks
            return
        self.writer.publish(replies)
        for d in dead:
            _tag, props = d.delivery.handle
            headers = dict(getattr(props, "headers", None) or {})
            headers.update(d.fields(self.queue))
            ch.basic_publish("", self.dead_letter_name, d.delivery.body,
                             pika.BasicProperties(delivery_mode=2, headers=headers,
                                                  content_type=getattr(props, "content_type", None)))
        self.writer.ack(acks)  # after the dead letters: a message leaves the queue only once it is safe elsewhere

    async def stop_fetching(self) -> list[Delivery]:
        link = self.link
        if link is not None and self._consumer_tag and not link.closed.done():
            with contextlib.suppress(ProbeError):  # a dead channel has no consumer left to cancel
                await link.call(link.channel.basic_cancel, self._consumer_tag, what="basic.cancel")
        left: list[Delivery] = []
        while not self._buffer.empty():
            left.append(self._buffer.get_nowait())
        return left

    async def release(self, deliveries: list[Delivery]) -> None:
        link = self.link
        if link is None or link.closed.done():
            return  # the broker requeues unacked messages of a closed channel by itself
        tags = [d.handle[0] for d in deliveries]
        self._acks.forget(tags)
        for tag in tags:
            link.channel.basic_nack(tag, requeue=True)

    async def aclose(self) -> None:
        if self.link is not None:
            await self.link.aclose()
