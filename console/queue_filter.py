"""Filtering and sorting of queue rows, shared by the CLI and the console."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from enum import StrEnum

from probes.models import QueueStats


class SortField(StrEnum):
    name = "name"
    depth = "depth"
    in_flight = "in_flight"
    consumers = "consumers"
    publish_rate = "publish_rate"
    deliver_rate = "deliver_rate"


def select_queues(queues: Iterable[QueueStats], pattern: str | None = None,
                  sort: SortField = SortField.name, reverse: bool = False) -> list[QueueStats]:
    """Rows whose name matches the glob ``pattern`` (case-insensitive), sorted: names A→Z, numbers largest first."""
    rows = [q for q in queues if not pattern or fnmatch.fnmatch(q.name.lower(), pattern.lower())]
    if sort is SortField.name:
        rows.sort(key=lambda q: q.name, reverse=reverse)
    else:
        field = sort.value
        rows.sort(key=lambda q: (getattr(q, field) or 0, q.name), reverse=not reverse)
    return rows
