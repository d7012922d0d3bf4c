"""Celery's Redis transport (kombu): queues found through kombu's binding tables, with priorities and unacked.

Keys: ``_kombu.binding.<exchange>`` (a set of ``routing_key\\x06\\x16pattern\\x06\\x16queue``) · ``<queue>`` (a list of
JSON messages) and ``<queue>\\x06\\x16<3|6|9>`` (the same queue's priority steps) · ``unacked`` (a hash: delivery tag →
JSON ``[message, exchange, routing_key]``) and ``unacked_index`` (a sorted set of delivery tags by time).
Celery's broadcast exchanges (``*.pidbox``, ``celeryev``) are PUB/SUB and hold no queue.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from probes.models import QueueStats

Call = Callable[[Awaitable[Any]], Awaitable[Any]]
BINDING_PREFIX = "_kombu.binding."
SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)  # kombu's default steps past 0 (0 is the queue's own list)
UNACKED, UNACKED_READ_LIMIT = "unacked", 10_000


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _broadcast(exchange: str) -> bool:
    return exchange.endswith(".pidbox") or exchange == "celeryev"


@dataclass
class CeleryQueues:
    rows: list[QueueStats] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)  # list keys these rows account for (not listed again)
    notes: list[str] = field(default_factory=list)


async def celery_queues(client: Any, call: Call, broker: str, binding_keys: list[bytes],
                        is_dlq: Callable[[str], bool] = lambda _name: False) -> CeleryQueues:
    routes: dict[tuple[str, str], str] = {}  # (exchange, routing key) → queue
    bound: dict[str, tuple[str, str]] = {}  # queue → (exchange, routing key)
    for key in sorted(_s(k) for k in binding_keys):
        exchange = key[len(BINDING_PREFIX):]
        if _broadcast(exchange):
            continue
        for member in await call(client.smembers(key)):
            routing_key, _pattern, queue = [*_s(member).split(SEP), "", ""][:3]
            if queue:
                routes[(exchange, routing_key)] = queue
                bound.setdefault(queue, (exchange, routing_key))
    found = CeleryQueues()
    if not bound:
        return found
    names = sorted(bound)
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in (name, *(f"{name}{SEP}{step}" for step in PRIORITY_STEPS)):
            pipe.llen(key)
    pipe.hlen(UNACKED)
    replies = await call(pipe.execute())
    unacked_total = int(replies[-1])
    in_flight = dict.fromkeys(names, 0)
    if 0 < unacked_total <= UNACKED_READ_LIMIT:
        for value in await call(client.hvals(UNACKED)):
            try:
                _message, exchange, routing_key = json.loads(value)
            except (ValueError, TypeError):
                continue
            owner = routes.get((str(exchange), str(routing_key)))
            if owner is None and str(routing_key) in in_flight:
                owner = str(routing_key)
            if owner is not None:
                in_flight[owner] += 1
    elif unacked_total:
        found.notes.append(f"kombu's unacked hash holds {unacked_total:,} deliveries: more than qdeck reads "
                           f"({UNACKED_READ_LIMIT:,}), so Celery queues show no in-flight count")
    width = 1 + len(PRIORITY_STEPS)
    for i, name in enumerate(names):
        exchange, routing_key = bound[name]
        found.keys.update((name, *(f"{name}{SEP}{step}" for step in PRIORITY_STEPS)))
        found.rows.append(QueueStats(
            broker=broker, name=name, kind="list", depth=sum(int(n) for n in replies[i * width:(i + 1) * width]),
            in_flight=in_flight[name], consumers=0, publish_rate=None, deliver_rate=None, dead_letter_target=None,
            is_dead_letter=is_dlq(name), queue_type="celery queue",
            dead_letter_source="name pattern" if is_dlq(name) else None,
            config={"exchange": exchange, "routing_key": routing_key}))
    return found


async def celery_bound(client: Any, call: Call, queue: str, scan: Callable[[], Awaitable[list[bytes]]]) -> bool:
    """Whether kombu's binding tables name ``queue`` (a Celery queue exists while its list is empty); ``scan``
    finds the binding keys."""
    for key in await scan():
        for member in await call(client.smembers(key)):
            if _s(member).rpartition(SEP)[2] == queue:
                return True
    return False


__all__ = ["BINDING_PREFIX", "CeleryQueues", "celery_bound", "celery_queues"]
