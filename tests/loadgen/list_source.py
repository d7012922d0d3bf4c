"""A worker source for in-process worker tests: hands out prepared requests, keeps what the worker publishes,
acknowledges and releases, and can fail its first settles as a dropped link does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from loadgen.envelope import decode_reply
from loadgen.worker.source import Delivery, Settlement
from probes.errors import BrokerUnreachable


class ListSource:
    queue, dead_letter_name = "q", "q.dlq"

    def __init__(self, bodies: list[bytes], ready: Callable[[], bool] = lambda: True, fail_settles: int = 0) -> None:
        """``ready``: whether to hand requests out yet; ``fail_settles``: how many settles fail first."""
        self._left = [Delivery(b, i) for i, b in enumerate(bodies)]
        self.ready, self.fail_settles = ready, fail_settles
        self.settles = 0
        self.published: list[Any] = []  # every reply and chunk published, decoded
        self.acked: list[Any] = []  # handles of the deliveries acknowledged
        self.released: list[Any] = []  # handles of the deliveries given back

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def stop_fetching(self) -> list[Any]:
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        self.released += [d.handle for d in deliveries]

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        if self._left and self.ready():
            out, self._left = self._left[:max_items], self._left[max_items:]
            for d in out:
                d.dequeued_ns = time.time_ns()
            return out
        await asyncio.sleep(0.005)
        return []

    async def settle(self, replies: list[Any], dead: list[Any], done: list[Delivery]) -> Settlement:
        self.settles += 1
        if self.settles <= self.fail_settles:
            raise BrokerUnreachable("the link dropped")
        self.published += [decode_reply(r.body) for r in replies]
        self.acked += [d.handle for d in done]
        return Settlement(replied=len(replies))
