"""Load-generator transports: send requests to a broker queue, hand replies back (one module per broker)."""

from __future__ import annotations

from loadgen.transports.base import ReplyHandler, Transport, open_transport

__all__ = ["ReplyHandler", "Transport", "open_transport"]
