"""Which queue rows to show and in what order, and which are dead-letter queues: one rule each, shared by the CLI
and the console."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from enum import StrEnum

from probes.models import QueueStats

FILTER_HELP = ("Only queues whose name matches: a glob when it has * ? or [ (e.g. 'work.*'), else a substring; "
               "case-insensitive.")


class SortField(StrEnum):
    name = "name"
    broker = "broker"
    kind = "kind"
    depth = "depth"
    in_flight = "in_flight"
    consumers = "consumers"
    publish_rate = "publish_rate"
    deliver_rate = "deliver_rate"
    lag = "lag"
    dlq = "dlq"


NUMERIC = frozenset({"depth", "in_flight", "consumers", "publish_rate", "deliver_rate", "lag"})


class Only(StrEnum):
    """The quick filters (``qdeck queues --only``, ``!`` in the console): what an on-call engineer looks for."""

    dead_letters = "dead-letters"  # dead-letter queues holding messages
    lagging = "lagging"  # a backlog: a consumer group behind (topics, streams), else messages waiting
    no_consumers = "no-consumers"  # messages waiting and nobody consuming them


def only(q: QueueStats, which: str | None) -> bool:
    """Whether ``q`` is in the quick filter ``which`` (None: every queue)."""
    if which is None:
        return True
    if which == Only.dead_letters:
        return q.is_dead_letter and q.depth + q.in_flight > 0
    if which == Only.lagging:
        return (q.lag or 0) > 0 if q.lag is not None else q.depth > 0
    if which == Only.no_consumers:
        return q.consumers == 0 and q.depth + q.in_flight > 0
    raise ValueError(f"unknown quick filter {which!r}")


def name_matches(name: str, pattern: str | None) -> bool:
    """A glob when ``pattern`` has wildcards, else a substring; case-insensitive; no pattern matches everything."""
    if not pattern:
        return True
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatch(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def _text_key(column: str, broker: str, q: QueueStats) -> tuple[object, ...]:
    if column == "broker":
        return (broker, q.name)
    if column == "kind":
        return (q.kind, q.name, broker)
    if column == "dlq":
        return (not q.is_dead_letter, q.dead_letter_target or "", q.name, broker)
    return (q.name, broker)


def select_entries(entries: Iterable[tuple[str, QueueStats]], pattern: str | None = None,
                   sort: str = SortField.name, reverse: bool = False,
                   which: str | None = None) -> list[tuple[str, QueueStats]]:
    """(broker, queue) pairs whose name matches ``pattern`` (and in the quick filter ``which``), sorted by ``sort``:
    names A→Z, numbers largest first (``reverse`` flips either); a missing number (a broker that does not report
    it) always sorts last."""
    rows = [e for e in entries if name_matches(e[1].name, pattern) and only(e[1], which)]
    column = str(sort)
    if column not in NUMERIC:
        rows.sort(key=lambda e: _text_key(column, e[0], e[1]), reverse=reverse)
        return rows
    present = [e for e in rows if getattr(e[1], column) is not None]
    missing = [e for e in rows if getattr(e[1], column) is None]
    present.sort(key=lambda e: (getattr(e[1], column), e[1].name, e[0]), reverse=not reverse)
    missing.sort(key=lambda e: (e[1].name, e[0]))
    return present + missing


def select_queues(queues: Iterable[QueueStats], pattern: str | None = None,
                  sort: str = SortField.name, reverse: bool = False, which: str | None = None) -> list[QueueStats]:
    """``select_entries`` for rows that carry their broker (``QueueStats.broker``)."""
    return [q for _b, q in select_entries(((q.broker, q) for q in queues), pattern, sort, reverse, which)]


def dead_letter_queues(entries: Iterable[tuple[str, QueueStats]]) -> tuple[
        list[tuple[str, QueueStats]], dict[tuple[str, str], list[str]]]:
    """The dead-letter queues among (broker, queue) pairs, fullest first, and for each (broker, name) the queues
    that dead-letter into it. A feeder is a queue whose dead letters are routed to that queue
    (``dead_letter_queues``); an exchange name in ``dead_letter_target`` is not a queue and feeds nothing."""
    pairs = list(entries)
    feeders: dict[tuple[str, str], list[str]] = {}
    for broker, q in pairs:
        for target in q.dead_letter_queues:
            feeders.setdefault((broker, target), []).append(q.name)
    for names in feeders.values():
        names.sort()
    dlqs = [(b, q) for b, q in pairs if q.is_dead_letter or (b, q.name) in feeders]
    dlqs.sort(key=lambda e: (-(e[1].depth + e[1].in_flight), e[1].name, e[0]))
    return dlqs, feeders
