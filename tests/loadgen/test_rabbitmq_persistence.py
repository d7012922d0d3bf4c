"""RabbitMQ restarts lose nothing queued (issue 15, the restart fault bench's two losses): the run's reply queue
outlives a dropped connection, ``--persistent`` requests survive a broker restart, and the worker's replies keep
the request's delivery mode. The restart is of a private node of this module's own; the shared broker is only used
through a test vhost."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pika
import pytest

from loadgen.envelope import Request, encode_request
from loadgen.transports import open_transport
from loadgen.transports.rabbitmq import RabbitMQTransport
from probes.urls import parse_broker_url
from tests.rabbit import wait_sync
from tests.workers import worker

pytestmark = pytest.mark.rabbitmq


async def test_replies_published_while_the_generator_reconnects_wait_for_it(vhost: Any) -> None:
    """The broker closes the generator's connection (an admin, a node shutting down); a worker replies before the
    generator is back. The reply waits in the run's reply queue and arrives once it is (an exclusive queue died with
    the connection, and the reply with it: a timeout in the fault bench). The run deletes the queue at its end."""
    transport = open_transport(parse_broker_url(vhost.url), "replies-wait-q", "replywait1")
    assert isinstance(transport, RabbitMQTransport)
    got: list[bytes] = []
    await transport.start(lambda body, _ns: got.append(body))
    gate = asyncio.Event()
    connect = transport._connect

    async def held_back() -> None:  # fault injection: the reconnect waits until the reply was published
        await gate.wait()
        await connect()

    transport._connect = held_back  # type: ignore[method-assign]
    try:
        def ours() -> list[str]:
            return [c["name"] for c in vhost.api.get("/connections").json() if c.get("vhost") == vhost.name]

        await asyncio.to_thread(wait_sync, lambda: bool(ours()), 15, "the generator's connection in the API")
        for name in await asyncio.to_thread(ours):
            await asyncio.to_thread(vhost.api.delete, f"/connections/{name}", headers={"X-Reason": "qdeck test"})
        deadline = time.monotonic() + 10
        while transport._lost is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert transport._lost is not None, "the connection did not drop"
        channel = vhost.channel()
        channel.confirm_delivery()
        channel.basic_publish("", transport.reply_to, b"a reply while the generator was away", mandatory=True)
        channel.close()
        gate.set()
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert got == [b"a reply while the generator was away"]
        assert transport.reconnects == 1
    finally:
        gate.set()
        await transport.aclose()
    assert vhost.api.get(f"/queues/{vhost.path}/{transport.reply_to}").status_code == 404  # gone with the run


def test_the_workers_reply_keeps_the_requests_delivery_mode(vhost: Any, tmp_path: Path) -> None:
    """A persistent request gets a persistent reply (a broker restart keeps it), a transient one a transient reply
    (no disk write the client did not ask for)."""
    channel = vhost.channel()
    channel.queue_declare("mirror-q", durable=True)
    channel.queue_declare("mirror-replies", durable=True)
    now = time.time_ns()
    for seq, mode in ((1, 2), (2, 1)):
        body = encode_request(Request("mirror", seq, now, now, "mirror-replies", "default", "x"))
        channel.basic_publish("", "mirror-q", body, pika.BasicProperties(delivery_mode=mode))
    with worker(vhost.url, "mirror-q", "--model", "echo", tmp_path=tmp_path) as w:
        wait_sync(lambda: vhost.exact_depth("mirror-replies") == 2, 30, "two replies: " + w.log()[-500:])
    modes = {}
    for _ in range(2):
        _method, props, body = channel.basic_get("mirror-replies", auto_ack=True)
        modes[json.loads(body)["seq"]] = props.delivery_mode
    assert modes == {1: 2, 2: None}


@pytest.mark.slow
def test_persistent_requests_survive_a_broker_restart_and_transient_ones_do_not(private_rabbit: Any) -> None:
    """`--persistent`: the requests queued when the node restarts (``stop_app`` / ``start_app``, as a rolling
    upgrade does) are still there after it; without it RabbitMQ drops them (in the fault bench: timeouts, lost)."""
    node = private_rabbit
    target = parse_broker_url(node.url)

    async def send(persistent: bool, bodies: list[bytes]) -> None:
        transport = open_transport(target, "restart-persist-q", f"persist{int(persistent)}", persistent=persistent)
        await transport.start(lambda _body, _ns: None)
        await transport.send(bodies)
        await transport.aclose()

    asyncio.run(send(True, [b"p1", b"p2", b"p3"]))
    asyncio.run(send(False, [b"t1", b"t2"]))

    def depth() -> int:
        conn = pika.BlockingConnection(pika.URLParameters(node.url))
        try:
            return int(conn.channel().queue_declare("restart-persist-q", passive=True).method.message_count)
        finally:
            conn.close()

    wait_sync(lambda: depth() == 5, 10, "five requests queued")
    assert node.stop_app() == ""
    assert node.start_app() == ""
    node.wait_ready()
    assert depth() == 3
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    try:
        channel = conn.channel()
        bodies = [channel.basic_get("restart-persist-q", auto_ack=True)[2] for _ in range(3)]
    finally:
        conn.close()
    assert bodies == [b"p1", b"p2", b"p3"]
