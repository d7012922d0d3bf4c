"""Paged peeks: which broker takes which start (one rule, for the CLI, the console and every probe), and the page
cursor as a token a person can paste (``--after``).

A token reads ``KIND,q=TAG[,newest][,shown=N][,total=N][,pending=G][,p=P:LOW:HIGH]...[,low=ID][,high=ID][,skip=N]``:
only letters, digits and ``,=:%._-`` (ids and group names are percent-encoded), so a shell takes it unquoted.
"""

from __future__ import annotations

import re
import zlib
from urllib.parse import quote, unquote

from probes.errors import ConfigError, Unsupported
from probes.models import KafkaRange, PeekCursor, PeekFrom

RABBITMQ_NEWEST_MAX = 1000
"""Newest first on RabbitMQ reads the whole queue from the head (its management API cannot read from the tail):
refused above this many ready messages."""

# option -> the broker kinds that take it ("memory" is the in-process fake: it pages, it cannot seek)
_TAKES = {
    "partition": ("kafka",),
    "offset": ("kafka",),
    "since": ("kafka", "redis"),
    "group": ("kafka", "redis"),
    "pending": ("redis",),
}
_FLAG = {"partition": "--partition", "offset": "--offset", "since": "--since", "group": "--group",
         "pending": "--pending", "newest": "--newest"}
_KIND_WORDS = {"kafka": "Kafka", "redis": "Redis", "rabbitmq": "RabbitMQ", "memory": "the in-memory fake broker"}
_TOKEN = re.compile(r"^[A-Za-z0-9,=:%._~-]+$")


def queue_tag(queue: str) -> str:
    """A short checksum of a queue's name: a cursor carries it so it pages only the queue it came from."""
    return f"{zlib.crc32(queue.encode('utf-8', 'surrogatepass')):08x}"


def _set(start: PeekFrom) -> list[str]:
    return [name for name in _TAKES if getattr(start, name) is not None]


def start_problem(kind: str, queue: str, start: PeekFrom) -> str | None:
    """Why ``start`` cannot page ``queue`` on a ``kind`` broker (one line, naming the CLI option), or None."""
    given = _set(start)
    if start.after is not None:
        if given or start.newest:
            flags = ", ".join(_FLAG[n] for n in (*given, *(["newest"] if start.newest else [])))
            return f"--after continues an earlier peek, whose start and order it already fixes: drop {flags}"
        if start.after.kind != kind:
            return (f"--after: that cursor is from a {_KIND_WORDS.get(start.after.kind, start.after.kind)} peek, "
                    f"not {_KIND_WORDS.get(kind, kind)}")
        if start.after.queue_tag != queue_tag(queue):
            return "--after: that cursor is from a peek of another queue"
        return None
    for name in given:
        if kind not in _TAKES[name]:
            where = " and ".join(_KIND_WORDS[k] + (" streams" if k == "redis" else "") for k in _TAKES[name])
            return f"{_FLAG[name]} is for {where}, not {_KIND_WORDS.get(kind, kind)}"
    starts = [n for n in ("offset", "since", "group") if n in given]
    if len(starts) > 1:
        return f"{' and '.join(_FLAG[n] for n in starts)} each say where to start: give one"
    if start.pending is not None:
        if start.group is not None:
            return "--pending already names the group: drop --group"
        if start.newest:
            return "--pending lists oldest first only (Redis's XPENDING has no reverse): drop --newest"
    if start.partition is not None and start.partition < 0:
        return f"--partition {start.partition}: partitions count from 0"
    for name in ("group", "pending"):
        value = getattr(start, name)
        if value is not None and not value:
            return f"{_FLAG[name]}: the group name is empty"
    return None


def check_start(kind: str, queue: str, start: PeekFrom) -> None:
    """``start_problem`` as an error: ``ConfigError`` for a cursor that is not this queue's, else ``Unsupported``."""
    problem = start_problem(kind, queue, start)
    if problem is not None:
        raise (ConfigError if problem.startswith("--after") else Unsupported)(problem)


def rabbitmq_fetch_count(limit: int, start: PeekFrom | None) -> int:
    """How many messages a RabbitMQ page takes and requeues: RabbitMQ cannot seek, so page N reads every message
    before it again, plus one to learn whether another page follows; newest first reads the whole queue (up to
    ``RABBITMQ_NEWEST_MAX``, plus one to learn it is all). The console's dialog says this figure before asking."""
    cursor = start.after if start is not None else None
    newest = cursor.newest if cursor is not None else bool(start and start.newest)
    if newest:
        return RABBITMQ_NEWEST_MAX + 1
    return (cursor.skip or 0 if cursor is not None else 0) + limit + 1


# ---- the token ------------------------------------------------------------------------------------------------
def _q(text: str) -> str:
    return quote(text, safe="")


def cursor_token(cursor: PeekCursor) -> str:
    parts = [cursor.kind, f"q={cursor.queue_tag}"]
    if cursor.newest:
        parts.append("newest")
    parts.append(f"shown={cursor.shown}")
    if cursor.total is not None:
        parts.append(f"total={cursor.total}")
    if cursor.pending is not None:
        parts.append(f"pending={_q(cursor.pending)}")
    parts += [f"p={r.partition}:{r.low}:{r.high}" for r in cursor.ranges]
    for name in ("low", "high"):
        value = getattr(cursor, name)
        if value is not None:
            parts.append(f"{name}={_q(value)}")
    if cursor.skip is not None:
        parts.append(f"skip={cursor.skip}")
    return ",".join(parts)


def _count(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise ValueError(f"{name}={value}")
    return int(value)


def parse_cursor(token: str) -> PeekCursor:
    """The cursor ``cursor_token`` wrote; a ``ConfigError`` naming ``--after`` for anything else."""
    text = token.strip()
    try:
        if not _TOKEN.match(text):
            raise ValueError("characters")
        kind, *rest = text.split(",")
        if kind not in _KIND_WORDS or not rest or not rest[0].startswith("q="):
            raise ValueError("kind")
        tag = rest[0][2:]
        if not re.fullmatch(r"[0-9a-f]{8}", tag):
            raise ValueError("tag")
        fields: dict[str, object] = {}
        ranges: list[KafkaRange] = []
        for part in rest[1:]:
            name, sep, value = part.partition("=")
            if name in fields:
                raise ValueError(f"{name} twice")
            if name == "newest" and not sep:
                fields[name] = True
            elif name in ("shown", "total", "skip") and sep:
                fields[name] = _count(name, value)
            elif name in ("pending", "low", "high") and sep and value:
                fields[name] = unquote(value, errors="strict")
            elif name == "p" and sep:
                p, low, high = value.split(":")
                rng = KafkaRange(_count("p", p), _count("p", low), _count("p", high))
                if rng.low > rng.high or any(r.partition == rng.partition for r in ranges):
                    raise ValueError("range")
                ranges.append(rng)
            else:
                raise ValueError(part)
        if "shown" not in fields:
            raise ValueError("shown")
    except (ValueError, UnicodeDecodeError):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ConfigError(f"--after: {shown!r} is not a page cursor qdeck printed (copy the whole 'next page: "
                          "--after ...' value)") from None
    return PeekCursor(kind=kind, queue_tag=tag, newest="newest" in fields, shown=int(str(fields["shown"])),
                      total=_opt_int(fields.get("total")), pending=_opt_str(fields.get("pending")),
                      ranges=tuple(ranges), low=_opt_str(fields.get("low")), high=_opt_str(fields.get("high")),
                      skip=_opt_int(fields.get("skip")))


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["RABBITMQ_NEWEST_MAX", "check_start", "cursor_token", "parse_cursor", "queue_tag",
           "rabbitmq_fetch_count", "start_problem"]
