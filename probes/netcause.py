"""The root cause of a connection failure in a few words, whatever driver wrapped it."""

from __future__ import annotations

import errno
import socket
import ssl


def connection_cause(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "unknown host"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failed: {seen.reason or seen}"
        if isinstance(seen, TimeoutError):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    text = (str(exc) or type(exc).__name__).splitlines()[0][:200]
    lowered = text.lower()
    if "refused" in lowered or "error 111 " in lowered or text == "All connection attempts failed":
        return "connection refused"
    if "name or service not known" in lowered or "temporary failure in name resolution" in lowered:
        return "unknown host"
    if "timeout" in lowered or "timed out" in lowered:
        return "timed out"
    return text
