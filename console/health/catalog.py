"""The health rules qdeck knows: each rule's id, what its figure is, its unit and its built-in thresholds; and the
one way a figure is judged against thresholds (``judge``) and said in one line (``finding``).

A threshold is crossed when the figure is **at least** it (``dlq_not_empty`` warns at 1: one dead letter). CRIT is
tried before WARN; a rule may have either or both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from console.health.model import Finding, Level
from console.render import fmt_duration

Unit = Literal["messages", "seconds", "partitions", "alarms", "queues"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    warn: float | None = None
    crit: float | None = None


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    figure: str  # what the figure is, as the summary line says it
    unit: Unit
    default: Thresholds | None  # None: off unless a rules file turns it on
    help: str
    flag: bool = False  # an occurrence rule: the rules file may say "warn" / "crit" for { warn = 1 } / { crit = 1 }


RULES: dict[str, RuleInfo] = {r.id: r for r in (
    RuleInfo("dlq_not_empty", "dead letters", "messages", Thresholds(1, 1000),
             "a dead-letter queue holds messages (ready + unacked)"),
    RuleInfo("dlq_growing", "dead letters added", "messages", Thresholds(1, None),
             "a dead-letter queue grew over the window (first to last snapshot)"),
    RuleInfo("no_consumers", "messages with no consumer", "messages", Thresholds(1, None),
             "a queue (or consumer group) has messages waiting and no consumer"),
    RuleInfo("lag", "lag", "messages", Thresholds(1000, 10000),
             "messages not yet consumed: a queue's backlog, a consumer group's lag"),
    RuleInfo("drain_time", "time to drain", "seconds", Thresholds(300, 1800),
             "the backlog over the net drain rate, while it drains (needs two snapshots)"),
    RuleInfo("lag_growing", "lag growth", "messages", Thresholds(1, None),
             "the lag grew over the window and never shrank between two snapshots"),
    RuleInfo("pending_idle", "oldest pending entry idle", "seconds", Thresholds(60, 600),
             "Redis streams: the oldest delivered, unacknowledged entry has been idle this long"),
    RuleInfo("no_committed_offset", "partitions with no committed offset", "partitions", Thresholds(1, None),
             "Kafka: a group holds no committed offset on partitions that have records", flag=True),
    RuleInfo("offset_before_log_start", "messages lost unread", "messages", Thresholds(None, 1),
             "Kafka: a committed offset is older than the log start (retention deleted unread records)",
             flag=True),
    RuleInfo("node_alarm", "resource alarms", "alarms", Thresholds(None, 1),
             "RabbitMQ: a memory or disk alarm is in force (publishers are blocked)", flag=True),
    RuleInfo("missing_dead_letter_exchange", "missing dead-letter exchange", "queues", Thresholds(1, None),
             "RabbitMQ: a queue dead-letters to an exchange that does not exist (dead letters are dropped)",
             flag=True),
)}

UNREACHABLE = "unreachable"  # not a configurable rule: a broker that cannot be read is UNKNOWN


def judge(value: float, thresholds: Thresholds) -> tuple[Level, float | None]:
    """The level of ``value`` and the threshold it was judged against (the one crossed; WARN's when OK, else
    CRIT's)."""
    if thresholds.crit is not None and value >= thresholds.crit:
        return Level.CRIT, thresholds.crit
    if thresholds.warn is not None and value >= thresholds.warn:
        return Level.WARN, thresholds.warn
    return Level.OK, thresholds.warn if thresholds.warn is not None else thresholds.crit


def fmt_figure(value: float, unit: Unit) -> str:
    """A figure in its unit, as the summaries and the check table say it."""
    if unit == "seconds":
        return fmt_duration(value)
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def finding(rule: str, thresholds: Thresholds, value: float, *, broker: str, queue: str | None = None,
            group: str | None = None, detail: str | None = None, figure: str | None = None) -> Finding:
    """``value`` judged against ``thresholds``, with the one-line summary: ``dead letters 12 >= 1 (warn)``,
    ``lag 40 < 1,000``; ``detail`` follows after a semicolon."""
    info = RULES[rule]
    level, threshold = judge(value, thresholds)
    text = f"{figure or info.figure} {fmt_figure(value, info.unit)}"
    if threshold is not None:
        text += _against(threshold, info.unit, level)
    if detail:
        text += f"; {detail}"
    return Finding(rule=rule, level=level, broker=broker, queue=queue, group=group, value=float(value),
                   threshold=threshold, summary=text)


@functools.lru_cache(maxsize=1024)
def _against(threshold: float, unit: Unit, level: Level) -> str:
    """`` < 1,000`` or `` >= 1,000 (warn)``: a few thresholds, formatted once (a big broker has ~35,000 findings)."""
    if level is Level.OK:
        return f" < {fmt_figure(threshold, unit)}"
    return f" >= {fmt_figure(threshold, unit)} ({str(level).lower()})"
