"""What a health rule says: a level (the Nagios exit codes) and a finding with its figure and threshold."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Level(IntEnum):
    """A finding's level; the value is the exit code Nagios, Icinga and Sensu expect of a check plugin."""

    OK = 0
    WARN = 1
    CRIT = 2
    UNKNOWN = 3

    def __str__(self) -> str:
        return self.name


SEVERITY = {Level.OK: 0, Level.WARN: 1, Level.UNKNOWN: 2, Level.CRIT: 3}
"""How bad each level is, for ``worst``: CRIT outranks UNKNOWN (as Nagios plugins order them: a broker that is down
must not hide one that is on fire), UNKNOWN outranks WARN (a check that cannot see is worse than a warning)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's verdict on one subject (a queue, a consumer group, a broker)."""

    rule: str  # "dlq_not_empty", "no_consumers", "lag", "drain_time", "lag_growing", "pending_idle",
    # "no_committed_offset", "offset_before_log_start", "node_alarm", "missing_dead_letter_exchange",
    # "dlq_growing", "unreachable"
    level: Level
    broker: str  # BrokerSnapshot.broker / BrokerTarget.label
    queue: str | None  # the queue / topic / stream it is about (None: the broker itself)
    group: str | None  # the consumer group, where the rule is per group
    value: float | None  # the figure judged (messages, seconds, ...)
    threshold: float | None  # the threshold it was judged against (the one it crossed, or the WARN one when OK)
    summary: str  # one line: "dead letters 12 > 0 (warn)", ...


def worst(findings: Iterable[Finding]) -> Level:
    """The worst level among ``findings`` in ``SEVERITY`` order (CRIT > UNKNOWN > WARN > OK); OK when empty."""
    return max((f.level for f in findings), key=SEVERITY.__getitem__, default=Level.OK)
