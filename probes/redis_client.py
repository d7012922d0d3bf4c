"""The redis-py asyncio client for a ``redis://`` target, and its errors as one-line ``ProbeError``s.

Shared by the Redis probe and the load generator's Redis transport and worker source.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from probes.errors import AuthFailed, BrokerUnreachable, NotFound, ProbeError
from probes.netcause import connection_cause
from probes.redact import redact_text
from probes.urls import BrokerTarget

T = TypeVar("T")


def redis_client(target: BrokerTarget, *, timeout: float = 10.0, read_timeout: float | None = None) -> aioredis.Redis:
    """No retries (a failure is reported, not hidden); ``read_timeout=None`` suits blocking reads (XREAD BLOCK)."""
    return aioredis.Redis(host=target.host, port=target.port, db=int(target.path or 0), username=target.username,
                          password=target.password, ssl=target.tls, socket_connect_timeout=min(timeout, 5.0),
                          socket_timeout=read_timeout, decode_responses=False, retry=Retry(NoBackoff(), 0))


def redis_error(target: BrokerTarget, exc: BaseException) -> ProbeError:
    where = f"Redis at {target.host}:{target.port}"
    if isinstance(exc, rexc.AuthenticationError):  # before ConnectionError: it is one
        return AuthFailed(f"authentication failed at {where}: check the password (and username)")
    if isinstance(exc, rexc.ResponseError):
        text = str(exc)
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return AuthFailed(f"authentication failed at {where}: {text.split('.')[0]}")
        if "no such key" in text:
            return NotFound(f"no such key at {where}")
        return ProbeError(redact_text(f"error from {where}: {text}"[:300], target.secrets))
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
        return BrokerUnreachable(redact_text(f"broker unreachable: {where}: {connection_cause(exc)}"[:300],
                                             target.secrets))
    return ProbeError(redact_text(f"error from {where}: {exc}"[:300], target.secrets))


async def checked(target: BrokerTarget, aw: Awaitable[T]) -> T:
    """Await a redis-py call; any redis or socket error comes back as a ``ProbeError`` with no secret in it."""
    try:
        return await aw
    except (rexc.RedisError, OSError) as exc:
        raise redis_error(target, exc) from None
