"""An in-process store (``memory://NAME``) for unit tests of the engine, the CLI and the console; never for
testing a broker's store. ``MEMORY[NAME][queue]`` holds the records; ``REFUSE[NAME]`` names places whose publish
fails (an unroutable queue)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from probes.dlq.model import Place, Record
from probes.dlq.provenance import QDECK_HEADERS, REDRIVE_COUNT, REDRIVE_ID, parked_name, parse_count, parse_id
from probes.dlq.writes import require_write
from probes.errors import NotFound
from probes.urls import BrokerTarget

MEMORY: dict[str, dict[str, list[Record]]] = {}
REFUSE: dict[str, set[str]] = {}
CONSUMERS: dict[str, set[str]] = {}  # queues with a consumer (the pre-flight's "nobody consumes it")


class MemoryStore:
    atomic = True

    def __init__(self, target: BrokerTarget, source: str, **options: Any) -> None:
        self.target, self.source = target, source
        self.queues = MEMORY.setdefault(target.host, {})

    async def __aenter__(self) -> MemoryStore:
        if self.source not in self.queues:
            raise NotFound(f"queue {self.source!r} not found on {self.target.label}")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def count(self) -> int | None:
        return len(self.queues[self.source])

    async def read(self, batch: int) -> AsyncIterator[list[Record]]:
        held = list(self.queues[self.source])
        for i in range(0, len(held), batch):
            yield [_with_redrive(r) for r in held[i:i + batch]]

    def parked(self) -> Place | None:
        return Place("queue", parked_name(self.source))

    async def resolve(self, name: str) -> Place:
        return Place("queue", name)

    async def preflight(self, place: Place) -> list[str]:
        problems = []
        if place.name not in self.queues:
            problems.append("it does not exist")
        elif place.name not in CONSUMERS.get(self.target.host, set()) and not place.name.endswith(".parked"):
            problems.append("nobody consumes it")
        if place.name == self.source:
            problems.append("it is the source itself")
        return problems

    async def ensure(self, place: Place) -> None:
        require_write(self.target, f"create {place.name}")
        self.queues.setdefault(place.name, [])

    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        require_write(self.target, f"write to {', '.join(sorted({p.name for _r, p, _h in pairs}))}")
        out: list[str | None] = []
        for r, place, extra in pairs:
            if place.name in REFUSE.get(self.target.host, set()) or place.name not in self.queues:
                out.append(f"{place.name}: unroutable")
                continue
            headers = tuple((k, v) for k, v in r.headers if k not in extra) + tuple(extra.items())
            self.queues[place.name].append(replace(r, headers=headers, handle=None))
            self._drop(r)
            out.append(None)
        return out

    def _drop(self, r: Record) -> None:
        queue = self.queues[self.source]
        for i, held in enumerate(queue):
            if held.id == r.id:
                del queue[i]
                return

    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        for r in records:
            self._drop(r)
        return records

    async def delete(self, records: Sequence[Record]) -> None:
        require_write(self.target, f"delete messages in {self.source}")
        await self.remove(records)

    async def release(self, records: Sequence[Record]) -> None:
        return None

    async def write(self, place: Place, records: Sequence[Record]) -> list[str | None]:
        require_write(self.target, f"import into {place.name}")
        if place.name not in self.queues:
            return [f"{place.name}: does not exist"] * len(records)
        self.queues[place.name].extend(records)
        return [None] * len(records)


def _with_redrive(r: Record) -> Record:
    headers = dict(r.headers)
    if not any(k in headers for k in QDECK_HEADERS):
        return r
    return replace(r, redrives=parse_count(headers.get(REDRIVE_COUNT)), original_id=parse_id(headers.get(REDRIVE_ID)))
