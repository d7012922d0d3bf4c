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
    overrides: str | None = None  # "policy NAME" whose dead-letter-exchange the queue arguments override

    @property
    def target(self) -> str:
        exchange = self.exchange or "(default exchange)"
        return f"{exchange} → {self.routing_key}" if self.routing_key else exchange


def _policy_name(queue: Mapping[str, Any]) -> str:
    if queue.get("policy"):
        return f"policy {queue['policy']}"
    return f"operator policy {queue['operator_policy']}" if queue.get("operator_policy") else "policy ?"


def _effective(queue: Mapping[str, Any]) -> Mapping[str, Any]:
    effective = queue.get("effective_policy_definition") or {}
    return effective if isinstance(effective, Mapping) else {}


def dead_letter_config(queue: Mapping[str, Any]) -> DeadLetterConfig | None:
    args = queue.get("arguments") or {}
    effective = _effective(queue)
    if "x-dead-letter-exchange" in args:
        key = args.get("x-dead-letter-routing-key")
        overrides = _policy_name(queue) if "dead-letter-exchange" in effective else None
        return DeadLetterConfig(str(args["x-dead-letter-exchange"]), None if key is None else str(key), "arguments",
                                overrides)
    if "dead-letter-exchange" in effective:
        key = effective.get("dead-letter-routing-key")
        return DeadLetterConfig(str(effective["dead-letter-exchange"]), None if key is None else str(key),
                                _policy_name(queue))
    return None


def message_ttl(queue: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """The message TTL in ms that applies and where it comes from. With both a queue argument and a policy,
    RabbitMQ applies the lower of the two (unlike the dead-letter exchange, where the argument wins)."""
    arg = (queue.get("arguments") or {}).get("x-message-ttl")
    pol = _effective(queue).get("message-ttl")
    arg = arg if isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0 else None
    pol = pol if isinstance(pol, int) and not isinstance(pol, bool) and pol >= 0 else None
    if arg is not None and pol is not None:
        if arg == pol:
            return arg, f"argument and {_policy_name(queue)}"
        if arg < pol:
            return arg, f"argument, lower than {_policy_name(queue)}'s {pol} ms"
        return pol, f"{_policy_name(queue)}, lower than the argument's {arg} ms"
    if arg is not None:
        return arg, "argument"
    if pol is not None:
        return pol, _policy_name(queue)
    return None, None


DEFAULT_DELIVERY_LIMIT_4 = 20


def delivery_limit(queue: Mapping[str, Any], broker_version: str | None) -> int | None:
    """A quorum queue's delivery limit (peeks count as deliveries); None: no limit.

    RabbitMQ ≥ 4.0 (rabbit_quorum_queue ``resolve_delivery_limit``): argument and policy together give the lower,
    unless one is negative, then the higher; the result negative means *no limit*; neither set means the default, 20.
    RabbitMQ 3.x takes the lower of the two and has no default; a negative limit there is not "unlimited": a
    3.10 quorum queue with ``x-delivery-limit: -1`` drops (or dead-letters) a message at its first requeue, so it is
    returned as is and a peek is refused (measured, tests/probes/test_rabbitmq_issue16.py)."""
    if queue.get("type") != "quorum":
        return None
    reported = queue.get("delivery_limit")  # RabbitMQ 4.x reports the limit in force ("unlimited" or a number)
    if reported == "unlimited":
        return None
    if isinstance(reported, int) and not isinstance(reported, bool):
        return reported if reported >= 0 else None
    arg = (queue.get("arguments") or {}).get("x-delivery-limit")
    pol = _effective(queue).get("delivery-limit")
    values = [v for v in (arg, pol) if isinstance(v, int) and not isinstance(v, bool)]
    major = _major(broker_version)
    if major is not None and major >= 4:
        if not values:
            return DEFAULT_DELIVERY_LIMIT_4
        resolved = max(values) if any(v < 0 for v in values) else min(values)
        return None if resolved < 0 else resolved
    return min(values) if values else None


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
