"""Read-only unless allowed: every write to a broker (redrive, move, purge, delete, import) asks here first.

A broker is writable only through a profile that says ``allow_write = true``; a bare URL, or any broker with
``--read-only``, is read-only, and the refusal is one line (exit 2). Stores call ``require_write`` before their
first write, so no front end can forget it.
"""

from __future__ import annotations

from probes.errors import ReadOnly
from probes.urls import BrokerTarget

__all__ = ["ReadOnly", "require_write"]


def require_write(target: BrokerTarget, what: str) -> None:
    if target.read_only:
        raise ReadOnly(f"refusing to {what} on {target.label}: --read-only is set")
    if not target.allow_write:
        where = f"profile {target.name!r}" if target.name else "a profile (a bare --broker URL is read-only)"
        raise ReadOnly(f"refusing to {what} on {target.label}: it is read-only; add allow_write = true to "
                       f"{where} in the profile file to allow writes")
