from __future__ import annotations

from probes.lag import lag_rows
from probes.models import BrokerOverview, BrokerSnapshot, GroupLag, QueueStats


def _snap(t: float, groups: tuple[GroupLag, ...] = (), queues: tuple[QueueStats, ...] = (),
          kind: str = "kafka") -> BrokerSnapshot:
    ov = BrokerOverview("b", kind, None, None, None, 0, 0, 0, 0, 0, None, None, None)
    return BrokerSnapshot("b", kind, t, 0.0, ov, queues, groups=groups)


def _q(name: str, depth: int, rate: float | None = None) -> QueueStats:
    return QueueStats("b", name, "queue", depth, 0, 1, None, rate, None, False)


def test_group_rate_from_committed_offsets_gives_seconds_to_drain() -> None:
    before = _snap(100.0, (GroupLag("b", "g", "t", lag=1000, consumed=5000),))
    after = _snap(110.0, (GroupLag("b", "g", "t", lag=900, consumed=5500),))
    (row,) = lag_rows(after, before)
    assert row.consume_rate == 50.0 and row.rate_basis == "committed offsets"
    # 500 consumed and 400 produced in 10 s (lag 1000 → 900): it drains at 10/s net, not 50/s
    assert row.produce_rate == 40.0 and row.net_rate == 10.0
    assert row.seconds_to_drain == 900 / 10.0 and row.trend == "draining"


def test_without_a_second_snapshot_or_rate_drain_is_unknown() -> None:
    (row,) = lag_rows(_snap(1.0, (GroupLag("b", "g", "t", lag=10, consumed=None),)))
    assert row.consume_rate is None and row.seconds_to_drain is None
    (empty,) = lag_rows(_snap(1.0, (GroupLag("b", "g", "t", lag=0),)))
    assert empty.seconds_to_drain == 0.0


def test_queue_backlog_uses_broker_rate_then_net_drain() -> None:
    rows = lag_rows(_snap(2.0, queues=(_q("a", 100, rate=10.0), _q("b", 50)), kind="rabbitmq"),
                    _snap(0.0, queues=(_q("a", 120), _q("b", 70)), kind="rabbitmq"))
    by_name = {r.source: r for r in rows}
    # no publish rate from the broker: the backlog's own change (120 → 100 in 2 s) is the net rate
    assert by_name["a"].rate_basis == "net drain" and by_name["a"].seconds_to_drain == 10.0
    assert by_name["a"].consume_rate == 10.0
    assert by_name["b"].rate_basis == "net drain" and by_name["b"].net_rate == 10.0
    assert [r.source for r in rows] == ["a", "b"]  # largest backlog first


def test_redis_62_group_falls_back_to_net_drain() -> None:
    before = _snap(0.0, (GroupLag("b", "g", "s", lag=60, consumed=None),), kind="redis")
    after = _snap(3.0, (GroupLag("b", "g", "s", lag=30, consumed=None),), kind="redis")
    (row,) = lag_rows(after, before)
    assert row.rate_basis == "net drain" and row.net_rate == 10.0 and row.seconds_to_drain == 3.0
