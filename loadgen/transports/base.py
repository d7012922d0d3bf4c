"""The transport interface and the lazy table that picks one by the broker URL's kind."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol

from probes.errors import ConfigError, ProbeError
from probes.urls import BrokerTarget

ReplyHandler = Callable[[bytes, int], None]  # (reply body, received: time.perf_counter_ns(), the engine's clock)


class Transport(Protocol):
    reply_to: str

    async def start(self, on_reply: ReplyHandler) -> None:
        """Connect, make sure the request queue and the reply destination exist, start delivering replies."""
        ...

    async def send(self, bodies: list[bytes]) -> None:
        """Publish encoded requests to the request queue, in order (one round trip where the broker allows)."""
        ...

    def failure(self) -> ProbeError | None:
        """Why replies can no longer arrive (the reply reader or the connection died), or None while they can."""
        ...

    async def aclose(self) -> None:
        """Stop the reply reader, remove the run's private reply destination, disconnect."""
        ...


TRANSPORTS = {
    "redis": "loadgen.transports.redis_streams:RedisTransport",
    "rabbitmq": "loadgen.transports.rabbitmq:RabbitMQTransport",
    "kafka": "loadgen.transports.kafka:KafkaTransport",
    "memory": "loadgen.transports.memory:MemoryTransport",
}


def open_transport(target: BrokerTarget, queue: str, run_id: str, *, confirm: bool = False,
                   persistent: bool = False) -> Transport:
    """The transport for ``target``'s kind. ``confirm``: RabbitMQ's request channel in publisher-confirm mode (the
    other brokers confirm every write anyway: Redis answers each XADD, Kafka's producer reports each delivery).
    ``persistent``: RabbitMQ's requests published persistent (Redis and Kafka keep what they were given as their
    own configuration says)."""
    spec = TRANSPORTS.get(target.kind)
    if spec is None:
        raise ConfigError(f"no load-generator transport for {target.kind}:// brokers")
    module, _, cls = spec.partition(":")
    factory: Callable[[BrokerTarget, str, str], Transport] = getattr(importlib.import_module(module), cls)
    transport = factory(target, queue, run_id)
    if confirm and hasattr(transport, "confirm"):
        transport.confirm = True
    if persistent and hasattr(transport, "persistent"):
        transport.persistent = True
    return transport
