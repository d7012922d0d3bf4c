"""The trend rules derive each snapshot's backlogs once while it is in the window: the console judges a big broker
again and again over mostly the same snapshots (a new window each judging, sharing one memo), and re-deriving
them every time was a fifth of a judging with 10,000 queues."""

from __future__ import annotations

from console.health.rules_file import RuleSet
from console.health.window import SnapshotWindow
from console.tui.health_state import STEP_S, BrokerHealth, judge
from probes import lag
from probes.models import BrokerSnapshot, QueueStats


def snapshot(at: float, depth: int) -> BrokerSnapshot:
    queues = tuple(QueueStats(broker="b", name=f"q{i}", kind="queue", depth=depth + i, in_flight=0, consumers=1,
                              publish_rate=None, deliver_rate=None, dead_letter_target=None,
                              is_dead_letter=i == 0) for i in range(5))
    return BrokerSnapshot("b", "memory", at, 0.01, None, queues)  # type: ignore[arg-type]


def test_each_kept_snapshot_is_derived_once_across_judgings(monkeypatch) -> None:
    calls: list[int] = []
    real = lag.backlogs

    def counted(snap: BrokerSnapshot) -> dict:
        calls.append(id(snap))
        return real(snap)

    monkeypatch.setattr("console.health.trend_rules.backlogs", counted)
    health = BrokerHealth(RuleSet())
    snaps = [snapshot(1000 + STEP_S * i, 10 * i) for i in range(6)]
    for s in snaps:
        health.keep(s)
    first, _levels, _s = judge(health.rules, health.window(snaps[-1]))
    assert len(calls) == len(snaps)
    again, _levels, _s = judge(health.rules, health.window(snaps[-1]))
    assert len(calls) == len(snaps)  # nothing derived again
    assert [f.summary for f in again] == [f.summary for f in first]
    growing = [f for f in again if f.rule == "lag_growing" and f.queue == "q1"]
    assert growing and growing[0].value == 50  # 11 -> 61 over the window


def test_a_window_forgets_what_it_derived_from_snapshots_it_dropped() -> None:
    window = SnapshotWindow(span_s=10.0)
    old, mid, new = snapshot(0.0, 1), snapshot(5.0, 2), snapshot(20.0, 3)
    for s in (old, mid):
        window.add(s)
        window.derived(s, "backlogs", lag.backlogs)
    assert len(window.memo) == 2
    window.add(new)  # old is out of the 10 s span (mid, the newest one at least 10 s old, stays)
    assert list(window.snapshots) == [mid, new]
    assert {key[0] for key in window.memo} == {id(mid)}
