"""Budgeted key discovery: SCAN … TYPE, stopped by a call and time budget so a big keyspace never stalls Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScanBudget:
    max_calls: int = 100  # SCAN round trips per snapshot, over every pass
    count: int = 1000  # the COUNT hint per SCAN call
    max_seconds: float = 2.0
    calls: int = 0
    started: float = field(default_factory=time.perf_counter)

    def spent(self) -> bool:
        return self.calls >= self.max_calls or time.perf_counter() - self.started > self.max_seconds


async def scan_type(client: Any, key_type: str, budget: ScanBudget, limit_calls: int,
                    match: str | None = None) -> tuple[list[bytes], bool]:
    """Keys of ``key_type`` (and matching ``match``); returns (keys, complete). Uses at most ``limit_calls`` of the
    shared budget."""
    keys: list[bytes] = []
    cursor: int | str = 0
    calls = 0
    while True:
        if budget.spent() or calls >= limit_calls:
            return keys, False
        cursor, batch = await client.scan(cursor=cursor, match=match, count=budget.count, _type=key_type)
        budget.calls += 1
        calls += 1
        keys.extend(batch)
        if int(cursor) == 0:
            return keys, True
