"""``amqp_error``: one implementation (probes.rabbitmq.amqp_link) for the probes and the load generator, and the one
line each failure to connect or each closing becomes. Real sockets and the real shared RabbitMQ; the pika exceptions
built by hand stand for closings a healthy broker does not make on request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pika.exceptions as pexc
import pytest

from console.embedded_redis import free_port
from loadgen.brokers import amqp as loadgen_amqp
from probes import parse_broker_url
from probes.errors import BrokerUnreachable, ConnectionLost, ProbeError
from probes.rabbitmq import amqp_link
from probes.rabbitmq.amqp_link import AmqpConnection, amqp_error
from probes.urls import BrokerTarget

OPENERS: dict[str, Callable[[BrokerTarget], Awaitable[Any]]] = {
    "probes": lambda target: AmqpConnection.open(target),
    "loadgen": lambda target: loadgen_amqp.AmqpLink.open(target),
}


async def _open_error(opener: str, url: str) -> ProbeError:
    target = parse_broker_url(url)
    with pytest.raises(ProbeError) as caught:
        link = await OPENERS[opener](target)
        await link.aclose()
    return caught.value


@pytest.fixture
async def not_amqp() -> AsyncIterator[int]:
    """A TCP server that accepts and hangs up at once (what a port of some other service looks like to pika)."""

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def test_the_load_generator_uses_the_probes_amqp_error() -> None:
    assert loadgen_amqp.amqp_error is amqp_link.amqp_error
    assert not hasattr(loadgen_amqp, "_diagnose")


@pytest.mark.parametrize("opener", sorted(OPENERS))
async def test_a_port_that_is_not_amqp_is_named(opener: str, not_amqp: int) -> None:
    """pika says IncompatibleProtocolError with its own words; a plain TCP connect tells what the user can act on."""
    error = await _open_error(opener, f"amqp://guest:hunter2pw@127.0.0.1:{not_amqp}/")
    assert isinstance(error, BrokerUnreachable) and not isinstance(error, ConnectionLost)
    assert str(error) == (f"broker unreachable: RabbitMQ at 127.0.0.1:{not_amqp}: the server accepted TCP but the "
                          "AMQP handshake failed (is this port RabbitMQ's AMQP port?)")


@pytest.mark.parametrize("opener", sorted(OPENERS))
async def test_refused_is_named(opener: str) -> None:
    port = free_port()
    error = await _open_error(opener, f"amqp://guest:hunter2pw@127.0.0.1:{port}/")
    assert isinstance(error, BrokerUnreachable)
    assert str(error) == f"broker unreachable: RabbitMQ at 127.0.0.1:{port}: connection refused"


@pytest.mark.rabbitmq
@pytest.mark.parametrize("opener", sorted(OPENERS))
async def test_tls_to_a_plain_amqp_port_says_tls_failed(opener: str, rabbitmq_url: str) -> None:
    """The socket's own error (an SSLError pika keeps inside its connection workflow's exceptions) is the cause, not a
    TCP connect that would succeed and blame the handshake."""
    t = parse_broker_url(rabbitmq_url)
    error = await _open_error(opener, f"amqps://{t.username}:{t.password}@{t.host}:{t.port}/?verify=false")
    assert isinstance(error, BrokerUnreachable)
    assert str(error).startswith(f"broker unreachable: RabbitMQ at {t.host}:{t.port}: TLS failed: "), str(error)
    assert "\n" not in str(error) and (t.password or "guest") not in str(error)


def test_a_connection_the_broker_closes_for_good_is_not_a_lost_connection() -> None:
    """A connection-level refusal (530 NOT_ALLOWED) is not a drop: the load generator ends its run on it rather than
    counting an outage it never reconnects from; a forced close (320) is a drop. The reply text is redacted."""
    target = parse_broker_url("amqp://guest:hunter2pw@127.0.0.1:5672/")
    refused = amqp_error(target, pexc.ConnectionClosedByBroker(530, "NOT_ALLOWED - hunter2pw"), "publishing")
    assert type(refused) is BrokerUnreachable
    assert str(refused) == ("RabbitMQ at 127.0.0.1:5672: the broker closed the connection (530 NOT_ALLOWED - ***) "
                            "during publishing")
    forced = amqp_error(target, pexc.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"), "publishing")
    assert isinstance(forced, ConnectionLost)
    assert "320" in str(forced) and "during publishing" in str(forced)


def test_a_probe_error_passes_through() -> None:
    target = parse_broker_url("amqp://127.0.0.1:5672/")
    same = ProbeError("already said")
    assert amqp_error(target, same) is same
