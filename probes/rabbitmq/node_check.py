"""Does the URL's AMQP port speak AMQP, and is it the cluster whose management API qdeck reads?

qdeck reads RabbitMQ through the management API, which is found apart from the AMQP port (``?management_url=`` or
host:15672). Without a check, an AMQP port of a second node, of Redis or of an HTTP server reads the queues of
whatever answers on 15672, with exit 0. The check sends the AMQP 0-9-1 protocol header and reads the server's
``Connection.Start`` (no credentials are sent; the socket is closed right after), then compares its
``cluster_name`` with ``/api/overview``'s. Probes run it once and cache the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Mapping
from typing import Any

from pika import frame as pframe
from pika import spec
from pika.exceptions import InvalidFrameError

from probes.errors import BrokerUnreachable, ProbeError
from probes.netcause import connection_cause
from probes.urls import BrokerTarget

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE


class WrongBroker(ProbeError):
    """The AMQP port is not AMQP, or not the cluster the management API answers for."""


async def server_properties(target: BrokerTarget, *, timeout: float = 5.0,
                            answer_timeout: float = 3.0) -> dict[str, Any]:
    """``Connection.Start``'s server properties from the URL's AMQP port; raises ``BrokerUnreachable`` when nothing
    answers there and ``WrongBroker`` when what answers is not AMQP 0-9-1."""
    where = f"{target.host}:{target.port}"
    context: ssl.SSLContext | None = None
    if target.tls:
        context = ssl.create_default_context()
        if target.param("verify", "true") == "false":
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, ssl=context), timeout)
    except (TimeoutError, OSError) as exc:
        raise BrokerUnreachable(f"broker unreachable: nothing answers at {where} (AMQP): "
                                f"{connection_cause(exc)}") from None
    try:
        writer.write(PROTOCOL_HEADER)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(7), answer_timeout)
        if head.startswith(b"AMQP"):
            raise WrongBroker(f"{where} speaks another AMQP version than 0-9-1 (it answered with its own protocol "
                              "header): is it an AMQP 1.0 port?")
        kind, channel, size = struct.unpack(">BHI", head)
        if kind != spec.FRAME_METHOD or channel != 0 or size > 1 << 20:
            raise WrongBroker(f"{where} does not speak AMQP: it answered the AMQP protocol header with "
                              f"{_sample(head)}")
        rest = await asyncio.wait_for(reader.readexactly(size + 1), answer_timeout)
        _consumed, decoded = pframe.decode_frame(head + rest)
        method = getattr(decoded, "method", None)
        if rest[-1] != FRAME_END or not isinstance(method, spec.Connection.Start):
            raise WrongBroker(f"{where} does not speak AMQP 0-9-1: its first frame is not Connection.Start")
        return dict(method.server_properties or {})
    except (TimeoutError, asyncio.IncompleteReadError):
        raise WrongBroker(f"{where} does not speak AMQP: no Connection.Start in answer to the AMQP protocol header "
                          f"within {answer_timeout:g} s") from None
    except (InvalidFrameError, struct.error, ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError):
        # pika's decoder meets a short or garbled frame with whatever its struct calls raise
        raise WrongBroker(f"{where} does not speak AMQP 0-9-1: its answer is not an AMQP frame") from None
    except OSError as exc:
        raise WrongBroker(f"{where} does not speak AMQP: the connection failed after the protocol header "
                          f"({connection_cause(exc)})") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _sample(data: bytes) -> str:
    text = data.decode("ascii", "replace")
    return repr("".join(ch if ch.isprintable() else "." for ch in text))


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def check_same_cluster(target: BrokerTarget, props: Mapping[str, Any], overview: Mapping[str, Any],
                       management: str) -> None:
    """Refuse (``WrongBroker``) when the AMQP port's server is not RabbitMQ or not the management API's cluster."""
    where = f"{target.host}:{target.port}"
    product = _text(props.get("product"))
    if product is not None and "rabbitmq" not in product.lower():
        raise WrongBroker(f"{where} speaks AMQP but is {product!r}, not RabbitMQ")
    amqp_cluster = _text(props.get("cluster_name"))
    api_cluster = _text(overview.get("cluster_name"))
    if amqp_cluster is not None and api_cluster is not None and amqp_cluster != api_cluster:
        raise WrongBroker(
            f"AMQP at {where} is RabbitMQ cluster {amqp_cluster!r} but the management API at {management} is "
            f"cluster {api_cluster!r} (node {_text(overview.get('node'))!r}): point ?management_url= at the "
            "management API of the cluster you mean")


def cluster_nodes(overview: Mapping[str, Any]) -> int:
    """How many nodes ``/api/overview``'s listeners name (1 when it does not say)."""
    nodes = {str(item.get("node")) for item in overview.get("listeners") or () if isinstance(item, Mapping)}
    return max(1, len(nodes))
