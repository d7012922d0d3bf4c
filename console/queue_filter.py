"""Which queue rows to show and in what order, and which are dead-letter queues: one rule each, shared by the CLI
and the console."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from enum import StrEnum

from probes.lag import LagRow
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
    rows = (list(entries) if not pattern and which is None
            else [e for e in entries if name_matches(e[1].name, pattern) and only(e[1], which)])
    column = str(sort)
    if column not in NUMERIC:
        rows.sort(key=lambda e: _text_key(column, e[0], e[1]), reverse=reverse)
        return rows
    # by name (then broker), then stably by the figure: what one sort on (figure, name, broker) gives, in two
    # sorts on plain keys (half the time on 10,000 rows, every poll of the console)
    rows.sort(key=_by_name_and_broker, reverse=not reverse)
    present = [e for e in rows if getattr(e[1], column) is not None]
    missing = [e for e in rows if getattr(e[1], column) is None]
    present.sort(key=lambda e: getattr(e[1], column), reverse=not reverse)
    if not reverse:  # missing figures sort last, A→Z
        missing.reverse()
    return present + missing


def _by_name_and_broker(e: tuple[str, QueueStats]) -> tuple[str, str]:
    return (e[1].name, e[0])


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


class LagSort(StrEnum):
    """What ``qdeck lag --sort`` and the console's lag view order by."""

    source = "source"
    broker = "broker"
    group = "group"
    backlog = "backlog"
    pending = "pending"
    consumers = "consumers"
    produce = "produce"
    rate = "rate"  # consumed per second
    net = "net"
    eta = "eta"  # time to drain; never (growing, stalled) counts as longest
    trend = "trend"


LAG_NUMERIC = frozenset({"backlog", "pending", "consumers", "produce", "rate", "net", "eta"})
_LAG_FIELD = {"produce": "produce_rate", "rate": "consume_rate", "net": "net_rate", "eta": "seconds_to_drain"}
_TREND_ORDER = {"growing": 0, "stalled": 1, "draining": 2, "idle": 3}  # A→Z on trend: the worst first


def _lag_number(row: LagRow, column: str) -> float | None:
    if column == "eta" and row.trend in ("growing", "stalled"):
        return float("inf")  # never drains: longer than any finite time
    value = getattr(row, _LAG_FIELD.get(column, column))
    return None if value is None else float(value)


def select_lag(rows: Iterable[LagRow], pattern: str | None = None, sort: str = LagSort.backlog,
               reverse: bool = False) -> list[LagRow]:
    """Lag rows whose source (queue, topic, stream) or group matches ``pattern`` (``name_matches``), sorted by
    ``sort``: numbers largest first (time to drain: never first), names A→Z, trend worst first; ``reverse`` flips
    either; a figure not known yet always sorts last."""
    chosen = [r for r in rows if name_matches(r.source, pattern) or name_matches(r.group or "", pattern)]
    column = str(sort)
    if column not in LAG_NUMERIC:
        def text_key(r: LagRow) -> tuple[object, ...]:
            if column == "trend":
                return (_TREND_ORDER.get(r.trend or "", 9), r.source, r.group or "", r.broker)
            lead = {"broker": r.broker, "group": r.group or ""}.get(column, r.source)
            return (lead, r.source, r.group or "", r.broker)
        chosen.sort(key=text_key, reverse=reverse)
        return chosen
    present = [r for r in chosen if _lag_number(r, column) is not None]
    missing = [r for r in chosen if _lag_number(r, column) is None]
    sign = 1.0 if reverse else -1.0  # largest first unless reversed; ties by name A→Z either way
    present.sort(key=lambda r: (sign * (_lag_number(r, column) or 0.0), r.source, r.group or "", r.broker))
    missing.sort(key=lambda r: (r.source, r.group or "", r.broker))
    return present + missing


class DeadLetterSort(StrEnum):
    """What ``qdeck dlq list --sort`` and the console's dead-letter view order by."""

    depth = "depth"  # messages held
    name = "name"
    broker = "broker"
    kind = "kind"
    feeders = "feeders"


def select_dead_letters(dlqs: Iterable[tuple[str, QueueStats]], feeders: dict[tuple[str, str], list[str]],
                        pattern: str | None = None, sort: str = DeadLetterSort.depth,
                        reverse: bool = False) -> list[tuple[str, QueueStats]]:
    """Dead-letter queues (``dead_letter_queues``) whose name, or the name of a queue feeding them, matches
    ``pattern``, sorted by ``sort``: messages held largest first, names A→Z (``reverse`` flips either)."""
    def fed(e: tuple[str, QueueStats]) -> list[str]:
        return feeders.get((e[0], e[1].name), [])

    chosen = [e for e in dlqs if name_matches(e[1].name, pattern) or any(name_matches(f, pattern) for f in fed(e))]
    column = str(sort)
    if column == DeadLetterSort.depth:
        chosen.sort(key=lambda e: (-(e[1].depth + e[1].in_flight), e[1].name, e[0]), reverse=reverse)
        return chosen

    def lead(e: tuple[str, QueueStats]) -> str:
        if column == DeadLetterSort.broker:
            return e[0]
        if column == DeadLetterSort.kind:
            return e[1].kind
        if column == DeadLetterSort.feeders:
            return ", ".join(fed(e)) or "\uffff"  # fed by nothing known: last
        return e[1].name

    chosen.sort(key=lambda e: (lead(e), e[1].name, e[0]), reverse=reverse)
    return chosen
