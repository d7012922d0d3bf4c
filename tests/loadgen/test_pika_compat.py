"""On a real RabbitMQ connection, the pika fast paths (``probes.rabbitmq.pika_compat``) are the ones in use.

The unit tests of ``ChannelWriter`` and ``DeliveryReader`` run on fakes that define pika's internals themselves, so
they stay green whatever pika does; this test fails instead when a pika upgrade removes or renames one of them
and qdeck would quietly fall back to pika's slower public API."""

from __future__ import annotations

import asyncio
from typing import Any

import pika
import pytest

from loadgen.brokers.amqp import READ_SLICE_BYTES, AmqpLink, ChannelWriter
from probes.rabbitmq import pika_compat
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from probes.urls import parse_broker_url
from tests.workers import unique

pytestmark = pytest.mark.rabbitmq


async def test_the_fast_paths_are_active_and_carry_messages_both_ways(rabbitmq_url: str) -> None:
    link = await AmqpLink.open(parse_broker_url(rabbitmq_url))
    try:
        conn, channel = link.connection, link.channel
        paths = pika_compat.fast_paths(conn, channel)
        assert set(paths) == {"write frames", "parse deliveries", "read slice", "write to socket",
                              "cancelled consumers"}
        assert all(paths.values()), f"pika {pika.__version__}: fast paths off: {paths}"
        assert pika_compat.fast_path_ok(conn, channel)
        assert pika_compat.read_slice(conn) == READ_SLICE_BYTES  # set by AmqpLink.open

        writer, reader = ChannelWriter(channel), DeliveryReader.of(conn)
        assert writer.direct and reader.direct

        queue = unique("qdeck-test-pika-compat")
        await link.declare(queue, durable=False, exclusive=True)
        n = 5
        # With at most n unacked deliveries, the second batch arrives only if the writer's acks reached the broker.
        await link.call(channel.basic_qos, prefetch_count=n, what="qos")
        got: list[tuple[bytes, int, Any]] = []
        arrived = asyncio.Event()

        def on_delivery(body: bytes, tag: int, props: Any) -> None:
            got.append((body, tag, props))
            arrived.set()

        async def wait_for(count: int) -> None:
            async with asyncio.timeout(10):
                while len(got) < count:
                    arrived.clear()
                    await arrived.wait()

        reader.consume(channel, queue, on_delivery, auto_ack=False)
        # pika sends Basic.Consume on a later turn of the loop; a write goes straight to the socket only when
        # nothing is queued before it. One round trip later pika's queue is empty.
        await link.declare(queue, durable=False, exclusive=True)
        # Bodies split into several frames (the frame size is pika's tuned one) and an empty body included.
        big = bytes(range(256)) * (pika_compat.body_max_length(conn) // 256 * 2 + 3)
        first = [b'{"seq":1}', b"", big, "ünï".encode(), b'{"seq":5}']
        received_before = conn.frames_received
        writer.publish([(queue, body) for body in first])
        assert writer.socket_bytes > 0, "nothing went straight to the socket"
        await wait_for(n)
        assert [body for body, _t, _p in got] == first
        assert reader.parsed == n, "deliveries went through pika's parser"
        assert conn.frames_received >= received_before + 3 * n  # the heartbeat checker sees the traffic

        writer.ack([(got[-1][1], True)])
        second = [f"second {i}".encode() for i in range(n - 1)]
        writer.publish([(queue, body) for body in second])
        # A message with properties, published through pika's own API, is parsed here too.
        channel.basic_publish("", queue, b"with headers",
                              pika.BasicProperties(headers={"reason": "x"}, content_type="application/json"))
        await wait_for(2 * n)
        assert [body for body, _t, _p in got[n:]] == [*second, b"with headers"]
        props = got[-1][2]
        assert props.headers == {"reason": "x"} and props.content_type == "application/json"
        assert reader.parsed == 2 * n
        writer.ack([(tag, False) for _b, tag, _p in got[n:]])
        assert await link.declare(queue, durable=False, exclusive=True) == 0
    finally:
        await link.aclose()


async def test_publisher_confirms_are_parsed_off_the_socket(rabbitmq_url: str) -> None:
    """The load generator's request channel is in confirm mode: its acks are parsed by the reader, not by pika."""
    link = await AmqpLink.open(parse_broker_url(rabbitmq_url))
    try:
        channel = link.channel
        via_pika: list[Any] = []
        confirmed: list[tuple[int, bool]] = []
        await link.call(channel.confirm_delivery, via_pika.append, what="confirm.select")
        reader = DeliveryReader.of(link.connection)
        assert reader.confirms(channel, lambda tag, multiple: confirmed.append((tag, multiple)))
        queue = unique("qdeck-test-confirms")
        await link.declare(queue, durable=False, exclusive=True)
        n = 200
        ChannelWriter(channel).publish([(queue, b"x")] * n)
        async with asyncio.timeout(10):
            while not confirmed or max(tag for tag, _m in confirmed) < n:
                await asyncio.sleep(0.01)
        assert via_pika == [] and reader.confirms_parsed == len(confirmed)
        assert await link.declare(queue, durable=False, exclusive=True) == n
    finally:
        await link.aclose()


async def test_the_request_channel_is_in_confirm_mode_only_when_asked(rabbitmq_url: str) -> None:
    """``load run --confirm``: RabbitMQ's publisher confirms, counted; without it the broker does no confirm work (it
    costs ~20 % of the highest sustainable rate on a small machine: load that real clients rarely add)."""
    from loadgen.transports import open_transport

    for confirm in (False, True):
        queue = unique("qdeck-test-confirm-mode")
        transport = open_transport(parse_broker_url(rabbitmq_url), queue, unique("run"), confirm=confirm)
        await transport.start(lambda _body, _at: None)
        try:
            await transport.send([b"{}"] * 50)
            reader = DeliveryReader.of(transport.link.connection)  # type: ignore[attr-defined]
            async with asyncio.timeout(10):
                while confirm and transport._confirmed < 50:  # type: ignore[attr-defined]
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            assert (reader.confirms_parsed > 0) is confirm
            # off: no confirm came back at all, through the reader or through pika's callback (no confirm.select)
            assert (transport._confirmed == 50) is confirm  # type: ignore[attr-defined]
        finally:
            link = transport.link  # type: ignore[attr-defined]
            await link.call(link.channel.queue_delete, queue, what="queue.delete")
            await transport.aclose()
