"""RabbitMQ source (pika): manual acks only after the reply is published; prefetch sized to the batch.

Replies go through the default exchange to the request's ``reply_to`` queue, persistent when the request was (so a
restart of the broker keeps what it would have kept of the request), without confirms (a confirm channel is 50×
slower); a destination no routing key can name (over 255 bytes, not UTF-8) is a dead letter instead. Dead
letters are published to ``<queue>.dlq`` (declared durable) with ``reason``/``source``/``attempts``/``failed_at``
headers, mandatory, on a second channel in confirm mode, and the original is acked only once the broker confirmed
its dead letter; a returned one (someone deleted the queue) has its queue declared again and is sent once more, and
one still not confirmed is nacked back onto the request queue (``held``). Prefetch is ``max_batch × (concurrency +
1)``: every model slot's batch plus the next one waiting. A batch's replies and acks leave in one write; its acks
are one ``multiple`` ack where that is safe (``AckPlan``).
Deliveries are parsed by ``DeliveryReader`` (pika's parser was a third of the worker's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import pika
from pika.spec import PERSISTENT_DELIVERY_MODE

from loadgen.brokers.amqp import AckPlan, AmqpLink, ChannelWriter, ConfirmedPublisher, amqp_error
from loadgen.worker.source import (
    DeadLetter,
    Delivery,
    Outgoing,
    Settlement,
    merge_reply_failures,
    reply_failed,
    summarise,
)
from probes.errors import ConnectionLost, ProbeError
from probes.rabbitmq.amqp_close import connection_dropped, describe_close
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from probes.urls import BrokerTarget


class RabbitMQSource:
    def __init__(self, target: BrokerTarget, queue: str, *, prefetch: int, dead_letter: str | None = None) -> None:
        self.target, self.queue, self.prefetch = target, queue, prefetch
        self.dead_letter_name = dead_letter or f"{queue}.dlq"
        self.link: AmqpLink | None = None
        self.writer: ChannelWriter | None = None
        self.confirmed: ConfirmedPublisher | None = None
        # Deliveries received and not yet fetched; a fetch waiting for one waits on _arrived (no task, no
        # wait_for: a worker under steady load waits once per batch, and asyncio.Queue.get under wait_for made a
        # task and a timer handle each time).
        self._buffer: deque[Delivery] = deque()
        self._arrived: asyncio.Future[None] | None = None
        self._consumer_tag: str | None = None
        self._acks = AckPlan()

    async def start(self) -> None:
        self.link = link = await AmqpLink.open(self.target)
        await link.ensure_queue(self.queue)
        await link.declare(self.dead_letter_name)
        await link.call(link.channel.basic_qos, prefetch_count=self.prefetch, what="basic.qos")
        self.confirmed = await ConfirmedPublisher.open(link.connection)  # dead letters' channel, before any delivery
        self._consumer_tag = DeliveryReader.of(link.connection).consume(link.channel, self.queue, self._on_message,
                                                                        auto_ack=False)
        self.writer = ChannelWriter(link.channel)

    def _on_message(self, body: bytes, delivery_tag: int, properties: Any) -> None:
        self._acks.received(delivery_tag)
        self._buffer.append(Delivery(body, (delivery_tag, properties)))
        arrived = self._arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)

    def _check(self) -> AmqpLink:
        assert self.link is not None, "start() first"
        if self.link.closed.done():
            reason = self.link.closed.result()
            if connection_dropped(reason):
                raise ConnectionLost(f"RabbitMQ at {self.target.host}:{self.target.port}: {describe_close(reason)}")
            raise amqp_error(self.target, reason, f"consuming {self.queue!r}")
        return self.link

    async def reconnect(self) -> None:
        """A new connection, queues declared and consuming again. Deliveries of the old connection that were not
        acked are requeued by the broker (delivered again, marked redelivered); those still buffered are dropped."""
        for closing in (self.confirmed, self.link):
            if closing is not None:
                with contextlib.suppress(ProbeError):
                    await closing.aclose()
        self._buffer = deque()
        self._acks = AckPlan()
        await self.start()

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        self._check()
        if not self._buffer:
            if timeout_s <= 0:
                return []
            loop = asyncio.get_running_loop()
            self._arrived = arrived = loop.create_future()
            timer = loop.call_later(timeout_s, _wake, arrived)
            try:
                await arrived
            finally:
                timer.cancel()
                if self._arrived is arrived:  # not a later fetch's (one at a time is the rule, not a guarantee)
                    self._arrived = None
        buffer = self._buffer  # after a wait: the one reconnect() may have put in place meanwhile
        out = [buffer.popleft() for _ in range(min(max_items, len(buffer)))]
        now = time.time_ns()
        for d in out:
            d.dequeued_ns = now
        return out

    async def settle(self, replies: list[Outgoing], dead: list[DeadLetter], done: list[Delivery]) -> Settlement:
        self._check()
        writer = self.writer
        assert writer is not None
        out = Settlement()
        sendable: list[tuple[str, bytes]] = []
        persistent: list[tuple[str, bytes]] = []  # replies to persistent requests are persistent too
        refused: list[DeadLetter] = []
        for r in replies:
            problem = writer.route_problem(r.destination)
            if problem is not None:
                refused.append(reply_failed(r, problem))
            elif getattr(r.delivery.handle[1], "delivery_mode", None) == PERSISTENT_DELIVERY_MODE:
                persistent.append((r.destination, r.body))
            else:
                sendable.append((r.destination, r.body))
        out.replied, out.reply_failures = len(sendable) + len(persistent), len(refused)
        if refused:
            out.problems.append(summarise(f"{len(refused)} replies could not be published, dead-lettering them "
                                          "instead", [f.reason for f in refused]))
            dead = merge_reply_failures(dead, refused)
        tags = [delivery.handle[0] for delivery in done]
        if not dead:
            writer.publish(sendable, self._acks.acks(tags), persistent=persistent)  # one write: replies, then acks
            return out
        writer.publish(sendable, persistent=persistent)
        try:
            failures = await self._dead_letter(dead)
        except ProbeError as exc:  # the queue could not be declared again: none of them is safe
            failures = {id(d.delivery): f"dead letter to {self.dead_letter_name!r}: {exc}" for d in dead}
        out.dead_lettered = len(dead) - len(failures)
        # Acks only now: until its dead letter is confirmed a message stays unacked, and no multiple ack of a
        # later batch can cover it (AckPlan acks below the oldest delivery in hand only).
        held = [d.handle[0] for d in done if id(d) in failures]
        if held:
            self._acks.forget(held)
            for tag in held:  # back onto the request queue, to be tried again
                self._check().channel.basic_nack(tag, requeue=True)
            out.held = len(held)
            out.problems.append(summarise(f"{len(held)} dead letters not confirmed, requests requeued",
                                          list(failures.values())))
        writer.ack(self._acks.acks([t for t in tags if t not in set(held)]))
        return out

    async def _dead_letter(self, dead: list[DeadLetter]) -> dict[int, str]:
        """Publish ``dead`` letters and wait for their confirms; the ones not confirmed (by id of their delivery)
        with the reason. A returned dead letter (its queue is gone) has the queue declared again and is re-sent."""
        assert self.confirmed is not None
        messages = [(self.dead_letter_name, d.delivery.body, self._properties(d)) for d in dead]
        outcome = await self.confirmed.publish(messages)
        if any(o is not None and "returned" in o for o in outcome):
            link = self._check()
            await link.declare(self.dead_letter_name)
            again = [i for i, o in enumerate(outcome) if o is not None]
            retried = await self.confirmed.publish([messages[i] for i in again])
            for i, o in zip(again, retried, strict=True):
                outcome[i] = o
        return {id(d.delivery): f"dead letter to {self.dead_letter_name!r}: {o}"
                for d, o in zip(dead, outcome, strict=True) if o is not None}

    def _properties(self, d: DeadLetter) -> pika.BasicProperties:
        _tag, props = d.delivery.handle
        headers = dict(getattr(props, "headers", None) or {})
        headers.update(d.fields(self.queue))
        return pika.BasicProperties(delivery_mode=2, headers=headers, content_type=getattr(props, "content_type", None))

    async def stop_fetching(self) -> list[Delivery]:
        link = self.link
        if link is not None and self._consumer_tag and not link.closed.done():
            with contextlib.suppress(ProbeError):  # a dead channel has no consumer left to cancel
                await link.call(link.channel.basic_cancel, self._consumer_tag, what="basic.cancel")
        left = list(self._buffer)
        self._buffer.clear()
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
        if self.confirmed is not None:
            await self.confirmed.aclose()
        if self.link is not None:
            await self.link.aclose()


def _wake(arrived: asyncio.Future[None]) -> None:
    """A fetch's wait is over (its time is up): it returns what has come, perhaps nothing."""
    if not arrived.done():
        arrived.set_result(None)
