"""What the worker needs from a broker: fetch deliveries, and settle a batch (replies, dead letters, acks).

Settling keeps one rule (DESIGN, house rule 15): a request is acknowledged only once its outcome is durable, a
reply published or a dead letter confirmed. A reply the broker refuses outright (a destination it cannot name: a Redis
key of another type, an AMQP routing key over 255 bytes, an invalid Kafka topic, text no UTF-8 spells) becomes a dead
letter with the reason; a request whose dead letter cannot be made durable either is not acknowledged: it is left to
the broker (pending, requeued, uncommitted) to be delivered again, and counted as ``held``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

CLAIM_IDLE_S = 5.0
"""Redis: how long an entry stays pending with one consumer before another takes it over. Below the load generator's
default reply timeout (10 s), so a crashed worker's requests are answered in time to count; a live worker keeps the
entries it works on fresh, however long its batch takes."""

DEFAULT_GROUP = "qdeck-workers"


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


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A reply to publish: the request it answers, where it goes, and the encoded reply."""

    delivery: Delivery
    destination: str
    body: bytes


@dataclass(slots=True)
class Settlement:
    """What became of a settled batch."""

    replied: int = 0
    dead_lettered: int = 0  # dead letters the broker confirmed
    reply_failures: int = 0  # replies the broker refused, dead-lettered instead
    held: int = 0  # neither replied nor durably dead-lettered: not acknowledged, to be delivered again
    problems: list[str] = field(default_factory=list)  # one line each, for the log

    def add(self, other: Settlement) -> None:
        self.replied += other.replied
        self.dead_lettered += other.dead_lettered
        self.reply_failures += other.reply_failures
        self.held += other.held
        self.problems.extend(other.problems)


def shown(destination: str) -> str:
    """A destination as a reason quotes it: repr (controls and lone surrogates escaped), long ones cut."""
    if len(destination) <= 80:
        return repr(destination)
    return f"{destination[:60]!r}… ({len(destination)} characters)"


def reply_failed(reply: Outgoing, why: str) -> DeadLetter:
    return DeadLetter(reply.delivery, f"reply to {shown(reply.destination)} failed: {why}"[:500], attempts=1)


def exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def summarise(what: str, reasons: list[str]) -> str:
    """One log line for ``len(reasons)`` like problems: the first reason, and how many more."""
    if not reasons:
        return what
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"{what}: {reasons[0]}{more}"


def merge_reply_failures(dead: list[DeadLetter], failures: list[DeadLetter]) -> list[DeadLetter]:
    """The dead letters to write once some replies failed: a request already dead-lettered (its error reply is what
    failed) keeps its one dead letter, its reason extended; the others get theirs."""
    by_delivery = {id(d.delivery): i for i, d in enumerate(dead)}
    out = list(dead)
    for f in failures:
        i = by_delivery.get(id(f.delivery))
        if i is None:
            out.append(f)
        else:
            first = out[i]
            out[i] = DeadLetter(first.delivery, f"{first.reason}; {f.reason}"[:1000], first.attempts, first.failed_at)
    return out


class Source(Protocol):
    queue: str
    dead_letter_name: str

    async def start(self) -> None: ...

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        """Up to ``max_items`` deliveries; waits at most ``timeout_s`` for the first one, returns [] if none came."""
        ...

    async def settle(self, replies: list[Outgoing], dead: list[DeadLetter], done: list[Delivery]) -> Settlement:
        """Publish ``replies`` and confirm ``dead`` letters (a refused reply becomes a dead letter too), then
        acknowledge those of ``done`` whose outcome is durable; the rest are left to be delivered again."""
        ...

    async def stop_fetching(self) -> list[Delivery]:
        """Stop taking new messages; return deliveries already received but not yet fetched (to be released)."""
        ...

    async def release(self, deliveries: list[Delivery]) -> None:
        """Give unprocessed deliveries back to the broker so another worker gets them."""
        ...

    async def reconnect(self) -> None:
        """After ``fetch`` raised ``BrokerUnreachable`` (the connection dropped): make a new connection and
        re-declare what must exist (queue, group, dead-letter destination). Raises ``ProbeError`` while the broker
        is still away. Deliveries in hand on the old connection are the broker's again (redelivered or reclaimed)."""
        ...

    async def aclose(self) -> None: ...
