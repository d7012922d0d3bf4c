"""The pre-flight of a Redis destination (``RedisStore.preflight``): what would go wrong writing dead letters there,
one line each, read-only."""

from __future__ import annotations

from typing import Any

from probes.dlq.model import Place
from probes.redis_celery import BINDING_PREFIX, celery_bound
from probes.redis_rq import Call, RqLayout
from probes.redis_scan import ScanBudget, scan_type
from probes.urls import BrokerTarget


async def preflight(client: Any, call: Call, target: BrokerTarget, source: str, place: Place) -> list[str]:
    """Why writing to ``place`` would be wrong: it is the source, it does not exist (a list Redis deleted when it
    emptied is fine when it is a known queue), nobody consumes the stream, it is another type of key."""
    problems = []
    if place.name == source:
        problems.append("it is the source itself: the messages would come straight back")
    t = _s(await call(client.type(place.name)))
    if t == "none":
        if place.kind == "list":
            if not await _known_list(client, call, target, place.name):
                problems.append("it does not exist (Redis deletes an empty list; --force writes to it anyway)")
        else:
            problems.append("it does not exist (--force creates it)")
    elif t == "stream":
        groups = await call(client.xinfo_groups(place.name))
        if not groups:
            problems.append("nobody consumes it: the stream has no consumer group")
        elif not any(int(g.get("consumers", 0)) for g in groups):
            names = ", ".join(sorted(_s(g.get("name")) for g in groups))
            problems.append(f"nobody consumes it: its consumer groups ({names}) have no consumers")
    elif t != "list":
        problems.append(f"it is a Redis {t}, not a stream or a list")
    return problems


async def _known_list(client: Any, call: Call, target: BrokerTarget, name: str) -> bool:
    """A missing list that is a queue all the same: an RQ queue in rq:queues, or a Celery queue kombu binds."""
    rq = RqLayout(target.param("rq_prefix") or "rq")
    if await rq.registered(client, call, name):
        return True

    async def bindings() -> list[bytes]:
        keys, _complete = await call(scan_type(client, "set", ScanBudget(), 100, match=BINDING_PREFIX + "*"))
        return list(keys)

    return await celery_bound(client, call, name, bindings)


def _s(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
