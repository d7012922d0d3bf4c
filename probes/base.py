"""The probe protocol and the lazy backend table (backends are imported only when a URL of theirs is used)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from probes.errors import ConfigError
from probes.models import PEEK_BODY_BYTES, BrokerSnapshot, ConsumerInfo, PeekFrom, PeekResult
from probes.urls import BrokerTarget

# kind -> "module:Class"; importing a backend pulls in its driver, so nothing here imports them eagerly.
BACKENDS: dict[str, str] = {
    "rabbitmq": "probes.rabbitmq.probe:RabbitMQProbe",
    "redis": "probes.redis_streams:RedisProbe",
    "kafka": "probes.kafka_probe:KafkaProbe",
    "memory": "probes.fake:FakeProbe",
}


@runtime_checkable
class Probe(Protocol):
    target: BrokerTarget

    async def snapshot(self) -> BrokerSnapshot:
        """One poll of the broker. Raises ``ProbeError`` only."""
        ...

    async def consumers(self, queue: str | None = None) -> Sequence[ConsumerInfo]: ...

    async def peek(self, queue: str, limit: int, *, force: bool = False,
                   body_bytes: int | None = PEEK_BODY_BYTES, start: PeekFrom | None = None) -> PeekResult:
        """Read up to ``limit`` messages without consuming them; ``force`` accepts a stated side effect; each body
        is cut to ``body_bytes`` (None: whole; ``size`` is always the whole size). ``start`` says where and which
        way (None: oldest first from the start); the result's ``next`` continues the walk as ``PeekFrom(after=...)``.
        A start the broker cannot take raises ``Unsupported`` (``probes.paging.start_problem`` says which)."""
        ...

    async def aclose(self) -> None: ...


def open_probe(target: BrokerTarget, **options: Any) -> Probe:
    """Build the probe for ``target``'s kind. Connection happens lazily, on the first call."""
    spec = BACKENDS.get(target.kind)
    if spec is None:
        raise ConfigError(f"no probe for {target.kind} brokers yet ({target.display})")
    module_name, _, class_name = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    probe: Probe = cls(target, **options)
    return probe
