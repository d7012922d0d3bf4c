"""Dead-letter facts from RabbitMQ payloads: x-death headers, and which queue dead-letters where."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from probes.models import DeathRecord


@dataclass(frozen=True, slots=True)
class DeadLetterConfig:
    """A queue's effective dead-letter settings: queue arguments win over a policy, as in RabbitMQ."""

    exchange: str
    routing_key: str | None
    source: str  # "arguments" | "policy NAME" | "operator policy NAME"

    @property
    def target(self) -> str:
        exchange = self.exchange or "(default exchange)"
        return f"{exchange} → {self.routing_key}" if self.routing_key else exchange


def dead_letter_config(queue: Mapping[str, Any]) -> DeadLetterConfig | None:
    args = queue.get("arguments") or {}
    if "x-dead-letter-exchange" in args:
        key = args.get("x-dead-letter-routing-key")
        return DeadLetterConfig(str(args["x-dead-letter-exchange"]), None if key is None else str(key), "arguments")
    effective = queue.get("effective_policy_definition") or {}
    if isinstance(effective, Mapping) and "dead-letter-exchange" in effective:
        key = effective.get("dead-letter-routing-key")
        policy = queue.get("policy") or queue.get("operator_policy") or "?"
        return DeadLetterConfig(str(effective["dead-letter-exchange"]), None if key is None else str(key),
                                f"policy {policy}")
    return None


def delivery_limit(queue: Mapping[str, Any], broker_version: str | None) -> int | None:
    """A quorum queue's delivery limit (peeks count as deliveries). RabbitMQ ≥ 4.0 defaults it to 20."""
    if queue.get("type") != "quorum":
        return None
    args = queue.get("arguments") or {}
    effective = queue.get("effective_policy_definition") or {}
    policy_limit = effective.get("delivery-limit") if isinstance(effective, Mapping) else None
    for value in (args.get("x-delivery-limit"), policy_limit):
        if isinstance(value, int) and value >= 0:
            return value
    major = _major(broker_version)
    return 20 if major is not None and major >= 4 else None


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def routed_queues(exchange_type: str, bindings: Iterable[Mapping[str, Any]], routing_key: str | None) -> list[str]:
    """Queues a dead-lettered message reaches through one exchange (``routing_key`` None: the original keys,
    unknown in advance, so every queue bound to a direct or topic exchange may receive some)."""

    def reaches(binding_key: str) -> bool:
        if exchange_type in ("fanout", "headers") or routing_key is None:
            return True
        if exchange_type == "topic":
            return topic_matches(binding_key, routing_key)
        return binding_key == routing_key

    return sorted({str(b["destination"]) for b in bindings
                   if b.get("destination_type") == "queue" and reaches(str(b.get("routing_key", "")))})


def topic_matches(pattern: str, key: str) -> bool:
    return _topic(pattern.split("."), key.split("."))


def _topic(p: Sequence[str], k: Sequence[str]) -> bool:
    if not p:
        return not k
    if p[0] == "#":
        return any(_topic(p[1:], k[i:]) for i in range(len(k) + 1))
    if not k:
        return False
    return (p[0] == "*" or p[0] == k[0]) and _topic(p[1:], k[1:])


def parse_deaths(headers: Mapping[str, Any]) -> tuple[tuple[DeathRecord, ...], str | None, str | None, str | None]:
    """x-death entries (most recent first) and the x-first-death-{reason,queue,exchange} headers."""
    deaths = []
    for entry in headers.get("x-death") or ():
        if not isinstance(entry, Mapping):
            continue
        keys = entry.get("routing-keys") or ()
        deaths.append(DeathRecord(
            queue=_str(entry.get("queue")),
            reason=_str(entry.get("reason")),
            count=int(entry.get("count") or 0),
            exchange=_str(entry.get("exchange")),
            routing_keys=tuple(str(k) for k in keys) if isinstance(keys, list | tuple) else (str(keys),),
            time=_timestamp(entry.get("time")),
        ))
    return (tuple(deaths), _str(headers.get("x-first-death-reason")), _str(headers.get("x-first-death-queue")),
            _str(headers.get("x-first-death-exchange")))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
