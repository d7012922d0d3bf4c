"""What qdeck adds to a message it moves, and the loop guard.

A moved message keeps its own id, timestamp, properties and headers, and carries two headers of qdeck's, replaced
(never appended) at each hop so nothing grows per redrive:

- ``qdeck-redrive-id``: the message's id at its first redrive (consumers can de-duplicate on it);
- ``qdeck-redrive-count``: how many times qdeck has redriven it.

Past ``--max-redrives`` (default 3) a redrive parks the message in ``<source>.parked`` instead of sending it round
the loop again.
"""

from __future__ import annotations

from typing import Any

from probes.dlq.model import Place, Record

REDRIVE_ID = "qdeck-redrive-id"
REDRIVE_COUNT = "qdeck-redrive-count"
QDECK_HEADERS = (REDRIVE_ID, REDRIVE_COUNT)
DEFAULT_MAX_REDRIVES = 3


def parked_name(source: str) -> str:
    return f"{source}.parked"


def redrive_headers(r: Record, *, count: bool = True) -> dict[str, Any]:
    """The headers qdeck sets on ``r`` as it moves it (``count``: a redrive, which counts; a move keeps it)."""
    return {REDRIVE_ID: r.original_id or r.id, REDRIVE_COUNT: r.redrives + 1 if count else r.redrives}


def parse_count(value: Any) -> int:
    """``qdeck-redrive-count`` as any broker hands it back (int, text, bytes); 0 when absent or not a count."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    try:
        return max(int(str(value).strip()), 0)
    except ValueError:
        return 0


def parse_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def is_looping(r: Record, max_redrives: int) -> bool:
    """Whether a redrive should park ``r``: it has been redriven ``max_redrives`` times already."""
    return r.redrives >= max_redrives


def parked_place(source: Place) -> Place:
    return Place(source.kind if source.kind != "exchange" else "queue", parked_name(source.name))
