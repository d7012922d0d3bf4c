"""What the worker needs from a broker: fetch deliveries, and settle a batch (replies, dead letters, acks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(slots=True)
class Delivery:
    """One message taken from the request queue, with the broker's handle to acknowledge it."""

    body: bytes
    handle: Any
    dequeued_ns: int = 0
    problem: str | None = None  # set when the broker message itself is unusable (no body field, ...)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery: Delivery
    reason: str
    attempts: int
    failed_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def fields(self, source: str) -> dict[str, str]:
        """The dead-letter record convention that ``qdeck dlq peek`` reads (probes/death_fields.py)."""
        return {"reason": self.reason, "source": source, "attempts": str(self.attempts), "failed_at": self.failed_at}


class Source(Protocol):
    queue: str
    dead_letter_name: str

    async def start(self) -> None: ...

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to ``max_items`` deliveries; waits at most ``timeout_s`` for the first one, returns [] if none came."""
        ...

    async def settle(self, replies: list[tuple[str, bytes]], dead: list[DeadLetter], done: list[Delivery]) -> None:
        """Publish ``replies`` (destination, body) and ``dead`` letters, then acknowledge ``done``, in that order."""
        ...

    async def stop_fetching(self) -> list[Delivery]:
        """Stop taking new messages; return deliveries already received but not yet fetched (to be released)."""
        ...

    async def release(self, deliveries: list[Delivery]) -> None:
        """Give unprocessed deliveries back to the broker so another worker gets them."""
        ...

    async def aclose(self) -> None: ...
