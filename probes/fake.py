"""An in-process probe (``memory://NAME``) for unit tests of the CLI and console; never for testing adapters.

State lives in ``FAKE_BROKERS[NAME]``; tests put queues and messages there, or inject an error to raise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from probes.errors import NotFound, ProbeError
from probes.models import (
    PEEK_BODY_BYTES,
    BrokerOverview,
    BrokerSnapshot,
    ConsumerInfo,
    PeekCursor,
    PeekedMessage,
    PeekFrom,
    PeekResult,
    QueueStats,
    cut_body,
)
from probes.paging import check_start, queue_tag
from probes.urls import BrokerTarget


@dataclass
class FakeBroker:
    queues: list[QueueStats] = field(default_factory=list)
    messages: dict[str, list[PeekedMessage]] = field(default_factory=dict)
    consumers: list[ConsumerInfo] = field(default_factory=list)
    fail_with: ProbeError | None = None  # raised by every call while set
    polls: int = 0


FAKE_BROKERS: dict[str, FakeBroker] = {}


class FakeProbe:
    def __init__(self, target: BrokerTarget, *, broker: FakeBroker | None = None) -> None:
        self.target = target
        self.state = broker if broker is not None else FAKE_BROKERS.setdefault(target.host, FakeBroker())

    def _check(self) -> None:
        if self.state.fail_with is not None:
            raise self.state.fail_with

    async def snapshot(self) -> BrokerSnapshot:
        self._check()
        self.state.polls += 1
        queues = tuple(sorted(self.state.queues, key=lambda q: q.name))
        overview = BrokerOverview(
            broker=self.target.label, kind="memory", version="fake", node=self.target.host, cluster=None,
            queues=len(queues), messages=sum(q.depth + q.in_flight for q in queues),
            ready=sum(q.depth for q in queues), unacked=sum(q.in_flight for q in queues),
            consumers=sum(q.consumers for q in queues), connections=None, publish_rate=None, deliver_rate=None)
        return BrokerSnapshot(broker=self.target.label, kind="memory", taken_at=time.time(), duration_s=0.0,
                              overview=overview, queues=queues)

    async def consumers(self, queue: str | None = None) -> Sequence[ConsumerInfo]:
        self._check()
        return [c for c in self.state.consumers if queue is None or c.queue == queue]

    async def peek(self, queue: str, limit: int, *, force: bool = False,
                   body_bytes: int | None = PEEK_BODY_BYTES, start: PeekFrom | None = None) -> PeekResult:
        """Pages by position, oldest or newest first; it cannot seek (like RabbitMQ)."""
        self._check()
        start = start or PeekFrom()
        check_start("memory", queue, start)
        if queue not in self.state.messages and all(q.name != queue for q in self.state.queues):
            raise NotFound(f"queue {queue!r} not found")
        newest = start.after.newest if start.after is not None else start.newest
        skip = (start.after.skip or 0) if start.after is not None else 0
        held = self.state.messages.get(queue, [])
        ordered = list(reversed(held)) if newest else list(held)
        messages = []
        for i, m in enumerate(ordered[skip:skip + limit]):
            body, cut = cut_body(m.body, body_bytes)
            messages.append(dataclasses.replace(m, body=body, body_truncated=m.body_truncated or cut,
                                                position=skip + i))
        more = len(ordered) > skip + limit
        cursor = PeekCursor("memory", queue_tag(queue), newest, skip + len(messages), skip=skip + len(messages))
        return PeekResult(self.target.label, queue, tuple(messages), first=skip, total=len(held),
                          next=cursor if more else None, order="newest first" if newest else "oldest first")

    async def aclose(self) -> None:
        return None
