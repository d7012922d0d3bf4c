"""The health rules on built snapshots (fast): each rule's figure, level and threshold, OK findings included; the
window; the order of levels. The same rules on real brokers: test_check_*.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from console.health.evaluate import evaluate, unreachable
from console.health.model import Finding, Level, worst
from console.health.rules_file import parse_rules
from console.health.window import SnapshotWindow
from probes.models import BrokerOverview, BrokerSnapshot, GroupLag, NodeAlarm, PartitionLag, QueueStats

B = "test-broker"


def queue(name: str, depth: int = 0, *, in_flight: int = 0, consumers: int = 0, kind: Any = "queue",
          **extra: Any) -> QueueStats:
    return QueueStats(broker=B, name=name, kind=kind, depth=depth, in_flight=in_flight, consumers=consumers,
                      publish_rate=None, deliver_rate=None, dead_letter_target=extra.pop("dead_letter_target", None),
                      is_dead_letter=extra.pop("is_dead_letter", False), **extra)


def snap(queues: tuple[QueueStats, ...] = (), *, at: float = 1000.0, kind: str = "rabbitmq",
         groups: tuple[GroupLag, ...] = (), alarms: tuple[NodeAlarm, ...] | None = (),
         notes: tuple[str, ...] = ()) -> BrokerSnapshot:
    overview = BrokerOverview(broker=B, kind=kind, version=None, node=None, cluster=None, queues=len(queues),
                              messages=0, ready=0, unacked=0, consumers=0, connections=None, publish_rate=None,
                              deliver_rate=None, alarms=alarms)
    return BrokerSnapshot(broker=B, kind=kind, taken_at=at, duration_s=0.0, overview=overview, queues=queues,
                          groups=groups, notes=notes)


def window(*snapshots: BrokerSnapshot, span_s: float = 300.0) -> SnapshotWindow:
    w = SnapshotWindow(span_s)
    for s in snapshots:
        w.add(s)
    return w


def judged(snapshots: list[BrokerSnapshot] | BrokerSnapshot, rules: str = "", **kw: Any) -> list[Finding]:
    import tomllib

    many = snapshots if isinstance(snapshots, list) else [snapshots]
    return evaluate(parse_rules(tomllib.loads(rules)), window(*many, **kw))


def only(findings: list[Finding], rule: str, queue: str | None = None, group: str | None = None) -> Finding:
    hits = [f for f in findings if f.rule == rule and (queue is None or f.queue == queue)
            and (group is None or f.group == group)]
    assert len(hits) == 1, (rule, queue, group, findings)
    return hits[0]


def rules_of(findings: list[Finding], queue: str) -> set[str]:
    return {f.rule for f in findings if f.queue == queue}


# ---- levels and the window ----------------------------------------------------------------------------------------

def test_worst_orders_crit_above_unknown_above_warn() -> None:
    def f(level: Level) -> Finding:
        return Finding("lag", level, B, "q", None, 1.0, 1.0, "s")

    assert worst([]) is Level.OK
    assert worst([f(Level.WARN), f(Level.UNKNOWN)]) is Level.UNKNOWN
    assert worst([f(Level.UNKNOWN), f(Level.CRIT), f(Level.WARN)]) is Level.CRIT
    assert [int(lv) for lv in Level] == [0, 1, 2, 3] and str(Level.CRIT) == "CRIT"


def test_window_keeps_the_span_and_the_newest_snapshot_older_than_it() -> None:
    w = window(*(snap(at=t) for t in (0, 10, 20, 30, 40)), span_s=15)
    assert [s.taken_at for s in w.snapshots] == [20, 30, 40]  # 20 is the newest at least 15 s before 40
    assert w.latest is not None and w.latest.taken_at == 40 and w.previous is not None and w.previous.taken_at == 30
    assert w.covered_s == 20
    w.add(snap(at=35))  # out of order: ignored
    assert w.latest.taken_at == 40
    assert evaluate(parse_rules({}), SnapshotWindow()) == []


def test_unreachable_is_unknown_with_the_reason() -> None:
    f = unreachable(B, "broker unreachable:\nnothing answers")
    assert (f.rule, f.level, f.queue, f.value) == ("unreachable", Level.UNKNOWN, None, None)
    assert f.summary == "broker unreachable: nothing answers"


# ---- queue rules --------------------------------------------------------------------------------------------------

def test_dlq_not_empty_warns_then_crits_and_counts_unacked() -> None:
    def level(depth: int, unacked: int = 0) -> Finding:
        return only(judged(snap((queue("work.dlq", depth, in_flight=unacked, is_dead_letter=True),))),
                    "dlq_not_empty")

    assert level(0).level is Level.OK and level(0).threshold == 1
    assert level(0, 1).level is Level.WARN and level(0, 1).value == 1
    crit = level(999, 1)
    assert (crit.level, crit.value, crit.threshold) == (Level.CRIT, 1000, 1000)
    assert crit.summary.startswith("dead letters 1,000 >= 1,000 (crit)")


def test_dlq_of_a_stream_counts_its_length_once() -> None:
    f = only(judged(snap((queue("s.dlq", 5, in_flight=5, kind="stream", is_dead_letter=True),), kind="redis")),
             "dlq_not_empty")
    assert f.value == 5  # pending entries are part of a stream's length


def test_no_consumers_on_queues_and_groups_not_on_lists_or_delay_queues() -> None:
    s = snap((queue("idle", 3), queue("served", 3, consumers=2), queue("empty"),
              queue("delay", 9, message_ttl_ms=5000, dead_letter_target="retry"),
              queue("jobs", 7, kind="list")))
    found = judged(s)
    assert only(found, "no_consumers", "idle").level is Level.WARN
    assert only(found, "no_consumers", "idle").value == 3
    assert only(found, "no_consumers", "served").level is Level.OK
    assert only(found, "no_consumers", "empty").level is Level.OK
    assert "no_consumers" not in rules_of(found, "delay") and "lag" not in rules_of(found, "delay")
    assert "no_consumers" not in rules_of(found, "jobs")  # Redis cannot tell a list's consumers
    assert "lag" in rules_of(found, "jobs")
    group = GroupLag(broker=B, group="g", source="t", lag=40, members=0)
    assert only(judged(snap(kind="kafka", groups=(group,))), "no_consumers", "t", "g").level is Level.WARN


def test_lag_levels_and_a_lower_bound() -> None:
    def lag(n: int, exact: bool = True) -> Finding:
        g = GroupLag(broker=B, group="g", source="s", lag=n, members=1, lag_exact=exact)
        return only(judged(snap(kind="redis", groups=(g,))), "lag", "s", "g")

    assert [lag(n).level for n in (999, 1000, 10_000)] == [Level.OK, Level.WARN, Level.CRIT]
    assert "lower bound" in lag(20_000, exact=False).summary


def test_drain_time_needs_two_snapshots_and_judges_only_a_draining_backlog() -> None:
    def groups(lag: int, consumed: int) -> tuple[GroupLag, ...]:
        return (GroupLag(broker=B, group="g", source="s", lag=lag, members=1, consumed=consumed),)

    one = judged(snap(kind="redis", groups=groups(1000, 0)))
    assert "drain_time" not in {f.rule for f in one}
    # 100 consumed in 10 s, nothing produced: 10/s; 900 left: 90 s to drain
    two = judged([snap(kind="redis", at=0, groups=groups(1000, 0)), snap(kind="redis", at=10, groups=groups(900, 100))],
                 "[defaults]\ndrain_time = { warn = 60, crit = 120 }")
    f = only(two, "drain_time")
    assert (f.level, f.value, f.threshold) == (Level.WARN, pytest.approx(90.0), 60)
    growing = judged([snap(kind="redis", at=0, groups=groups(1000, 0)),
                      snap(kind="redis", at=10, groups=groups(1100, 0))])
    assert "drain_time" not in {x.rule for x in growing}  # never drains: lag_growing's to judge


def test_missing_dead_letter_exchange() -> None:
    s = snap((queue("a", dead_letter_target="gone", dead_letter_exchange_missing=True),
              queue("b", dead_letter_target="there")))
    found = judged(s)
    assert only(found, "missing_dead_letter_exchange", "a").level is Level.WARN
    assert "does not exist" in only(found, "missing_dead_letter_exchange", "a").summary
    assert only(found, "missing_dead_letter_exchange", "b").level is Level.OK
    crit = judged(s, "[defaults]\nmissing_dead_letter_exchange = \"crit\"")
    assert only(crit, "missing_dead_letter_exchange", "a").level is Level.CRIT


# ---- group rules --------------------------------------------------------------------------------------------------

def test_pending_idle_in_seconds() -> None:
    def idle(ms: int | None, pending: int = 2) -> list[Finding]:
        g = GroupLag(broker=B, group="g", source="s", lag=0, members=1, pending=pending, oldest_pending_idle_ms=ms)
        return judged(snap(kind="redis", groups=(g,)))

    assert only(idle(59_000), "pending_idle").level is Level.OK
    assert only(idle(60_000), "pending_idle").level is Level.WARN
    f = only(idle(600_000), "pending_idle")
    assert (f.level, f.value, f.threshold) == (Level.CRIT, 600.0, 600)
    assert only(idle(None, pending=0), "pending_idle").value == 0


def test_kafka_no_committed_offset_counts_partitions_with_records() -> None:
    parts = (PartitionLag(0, None, 0, 10, 10), PartitionLag(1, None, 0, 0, 0), PartitionLag(2, 5, 0, 10, 5))
    g = GroupLag(broker=B, group="g", source="t", lag=15, members=1, partitions=parts)
    f = only(judged(snap(kind="kafka", groups=(g,))), "no_committed_offset")
    assert (f.level, f.value) == (Level.WARN, 1)  # partition 1 is empty: nothing is at stake there
    committed = dataclasses.replace(g, partitions=(PartitionLag(0, 10, 0, 10, 0),))
    assert only(judged(snap(kind="kafka", groups=(committed,))), "no_committed_offset").level is Level.OK


def test_kafka_offset_before_log_start_is_critical_and_counts_lost_records() -> None:
    parts = (PartitionLag(0, 2, 5, 10, 8), PartitionLag(1, 7, 5, 10, 3))
    g = GroupLag(broker=B, group="g", source="t", lag=11, members=1, partitions=parts)
    f = only(judged(snap(kind="kafka", groups=(g,))), "offset_before_log_start")
    assert (f.level, f.value, f.threshold) == (Level.CRIT, 3, 1)
    assert "partition 0: 3" in f.summary
    ok = dataclasses.replace(g, partitions=(PartitionLag(0, 5, 5, 10, 5),))
    assert only(judged(snap(kind="kafka", groups=(ok,))), "offset_before_log_start").level is Level.OK


# ---- trend rules --------------------------------------------------------------------------------------------------

def _lags(*values: int, source: str = "s") -> list[BrokerSnapshot]:
    return [snap(kind="redis", at=10.0 * i, groups=(GroupLag(broker=B, group="g", source=source, lag=v, members=1),))
            for i, v in enumerate(values)]


def test_lag_growing_only_when_it_never_shrank() -> None:
    assert "lag_growing" not in {f.rule for f in judged(_lags(5))}  # one snapshot: no trend
    f = only(judged(_lags(5, 5, 9, 12)), "lag_growing")
    assert (f.level, f.value) == (Level.WARN, 7) and "over 30s" in f.summary
    wobbly = only(judged(_lags(5, 20, 9, 30)), "lag_growing")
    assert (wobbly.level, wobbly.value) == (Level.OK, 0) and "shrank" in wobbly.summary
    crit = only(judged(_lags(0, 50, 100), "[defaults]\nlag_growing = { warn = 10, crit = 100 }"), "lag_growing")
    assert crit.level is Level.CRIT


def test_dlq_growing_over_the_window() -> None:
    def dlq(n: int, at: float) -> BrokerSnapshot:
        return snap((queue("x.dlq", n, is_dead_letter=True),), at=at)

    assert only(judged([dlq(2, 0), dlq(5, 10)]), "dlq_growing").level is Level.WARN
    assert only(judged([dlq(5, 0), dlq(5, 10)]), "dlq_growing").level is Level.OK


# ---- broker rules and overrides -----------------------------------------------------------------------------------

def test_node_alarm_crit_and_unknown_when_alarms_cannot_be_read() -> None:
    alarm = NodeAlarm("rabbit@a", "memory", 2 << 30, 1 << 30)
    f = only(judged(snap(alarms=(alarm,))), "node_alarm")
    assert (f.level, f.queue, f.value) == (Level.CRIT, None, 1) and "memory alarm on rabbit@a" in f.summary
    assert only(judged(snap(alarms=())), "node_alarm").level is Level.OK
    why = "node alarms unknown: user 'x' may not read /api/nodes (it needs the 'monitoring' tag)"
    unknown = only(judged(snap(alarms=None, notes=(why,))), "node_alarm")
    assert unknown.level is Level.UNKNOWN and "monitoring" in unknown.summary and "off" in unknown.summary
    assert "node_alarm" not in {x.rule for x in judged(snap(alarms=None), "[defaults]\nnode_alarm = \"off\"")}
    assert "node_alarm" not in {x.rule for x in judged(snap(kind="redis", alarms=None))}


def test_overrides_last_matching_entry_wins_and_off_disables() -> None:
    rules = """
[defaults]
lag = { warn = 10, crit = 100 }
[[queue]]
match = "batch-*"
lag = { warn = 1000 }
no_consumers = "off"
[[queue]]
match = "batch-urgent"
lag = { crit = 5 }
"""
    s = snap((queue("batch-nightly", 500), queue("batch-urgent", 6), queue("orders", 50)))
    found = judged(s, rules)
    assert only(found, "lag", "batch-nightly").level is Level.OK  # warn 1000, no crit
    assert only(found, "lag", "batch-urgent").level is Level.CRIT
    assert only(found, "lag", "orders").level is Level.WARN
    assert "no_consumers" not in rules_of(found, "batch-nightly")
    assert only(found, "no_consumers", "orders").level is Level.WARN
