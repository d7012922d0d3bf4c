"""Splitting a run over agents and merging their results back (no broker, no Locust)."""

from __future__ import annotations

import itertools
import time

import pytest

from loadgen.distributed.shares import ShareError, share, spec_from_dict, spec_to_dict
from loadgen.envelope import Stamps
from loadgen.results.merge import merge_logs, merge_summaries, read_intervals
from loadgen.results.stages import STAGES, log_path
from loadgen.results.summary import build_summary, stage_histogram
from loadgen.run.engine import RunResult, RunSpec
from loadgen.run.recorder import Recorder
from loadgen.run.schedules import NS, Arrival, ClosedLoop, Constant, Poisson, Ramp, Steps, Trace


def _count(schedule, seed: int, seconds: float) -> int:
    return sum(1 for _ in itertools.takewhile(lambda a: a.offset_ns < seconds * NS, schedule.arrivals(seed)))


def test_shares_add_up_to_the_plan() -> None:
    for schedule in (Constant(300), Ramp(0, 300, 4), Steps(((100, 2), (300, 2)))):
        spec = RunSpec(queue="q", schedule=schedule, duration_s=4)
        whole = _count(schedule, 1, 4)
        parts = [_count(share(spec, i, 3).schedule, 1, 4) for i in range(3)]
        assert abs(sum(parts) - whole) <= 3, (schedule, parts, whole)
    poisson = RunSpec(queue="q", schedule=Poisson(900), duration_s=10, seed=7)
    shares = [share(poisson, i, 3) for i in range(3)]
    assert [s.seed for s in shares] == [7, 8, 9]  # independent streams: a sum of Poissons is Poisson
    assert 8400 < sum(_count(s.schedule, s.seed, 10) for s in shares) < 9600  # mean 9,000, sd 95
    assert [s.run_id for s in shares] == [f"{poisson.run_id}-{i}" for i in range(3)]


def test_trace_rows_are_dealt_once_each_and_counts_evenly() -> None:
    rows = tuple(Arrival(i * 1_000_000, i) for i in range(10))
    spec = RunSpec(queue="q", schedule=Trace(rows, "t.csv"), duration_s=None, requests=10)
    shares = [share(spec, i, 3) for i in range(3)]
    dealt = sorted((a for s in shares for a in s.schedule.rows), key=lambda a: a.offset_ns)  # type: ignore[union-attr]
    assert dealt == list(rows)
    assert [s.requests for s in shares] == [4, 3, 3]
    closed = RunSpec(queue="q", schedule=ClosedLoop(5), duration_s=1)
    assert [share(closed, i, 2).schedule.concurrency for i in range(2)] == [3, 2]  # type: ignore[union-attr]


@pytest.mark.parametrize("spec, message", [
    (RunSpec(queue="q", schedule=ClosedLoop(1), duration_s=1), "less than the 2 agents"),
    (RunSpec(queue="q", schedule=Constant(10), duration_s=None, requests=1), "less than the 2 agents"),
    (RunSpec(queue="q", schedule=Trace((Arrival(0),), "one.csv"), duration_s=1), "fewer than the 2 agents"),
])
def test_plans_too_small_to_split_are_refused(spec: RunSpec, message: str) -> None:
    with pytest.raises(ShareError, match=message):
        share(spec, 1, 2)


def test_specs_round_trip_through_json() -> None:
    import json

    for schedule in (Constant(5), Poisson(5), Ramp(1, 5, 2), Steps(((1, 1), (2, 2))), ClosedLoop(3),
                     Trace((Arrival(0, 10), Arrival(5, None)), "x.csv")):
        spec = RunSpec(queue="q", schedule=schedule, duration_s=3, warmup_s=0.5, payload="hi", coalesce_s=0.001)
        assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    with pytest.raises(ShareError, match="unknown schedule kind"):
        spec_from_dict({"queue": "q", "schedule": {"kind": "sine"}})


def _result(seed: int, n: int) -> RunResult:
    spec = RunSpec(queue="q", schedule=Constant(n), duration_s=1, run_id=f"r-{seed}")
    rec = Recorder()
    for i in range(n):
        lat = 1_000_000 + ((i * 7919 + seed * 104729) % 50_000) * 1_000  # 1 ms .. 51 ms
        rec.record_sent()
        rec.record_schedule_lag(0, (i % 13) * 10_000)
        rec.record_reply(0, 1_000, lat, Stamps(2_000, 3_000, 4_000, 5_000, 6_000), 1 + i % 4, "cpu")
    rec.record_error("timeout")
    rec.roll(0.0, 1.0)
    return RunResult(spec=spec, recorder=rec, started_epoch_s=time.time(), measured_s=1.0, intended=n + 1)


def test_merged_histograms_are_exactly_those_of_all_requests() -> None:
    a, b = _result(1, 700), _result(2, 300)
    merged = merge_summaries(RunSpec(queue="q", schedule=Constant(1000), duration_s=1).facts(), "redis://h", "redis",
                             [build_summary(r.record(broker="x", broker_kind="redis")) for r in (a, b)], ["h1", "h2"])
    both = Recorder()
    for src in (a, b):
        for stage in STAGES:
            both.total[stage].add(src.recorder.total[stage])
    for stage in STAGES:
        hist = stage_histogram(merged, stage)
        assert hist.get_total_count() == both.total[stage].get_total_count()
        for pct in (50, 99, 99.9):
            assert hist.get_value_at_percentile(pct) == both.total[stage].get_value_at_percentile(pct)
    c = merged["counts"]
    assert (c["sent"], c["replied"], c["timeouts"], c["intended"]) == (1000, 1000, 2, 1002)
    assert merged["rates"]["target"] == pytest.approx(1002)
    assert sum(merged["batch_sizes"].values()) == 1000 and merged["devices"] == {"cpu": 1000}
    assert [agent["host"] for agent in merged["agents"]] == ["h1", "h2"]
    assert merged["notes"][0].startswith("distributed over 2 agents")


def test_interval_logs_merge_interval_by_interval(tmp_path) -> None:
    texts = []
    for seed, n in ((1, 50), (2, 80)):
        rec = Recorder()
        run_dir = tmp_path / f"agent{seed}"
        rec.open_logs(run_dir, 1_700_000_000.0)
        for second in range(3):
            for i in range(n):
                rec.record_reply(0, 0, (1 + i) * 1_000_000, Stamps(0, 0, 0, 0, 0), 1, "cpu")
            rec.roll(float(second), second + 1.0)
        rec.close_logs()
        texts.append({stage: log_path(run_dir, stage).read_text() for stage in STAGES})
    merge_logs(texts, tmp_path / "merged", 1_700_000_000.0)
    intervals = read_intervals(log_path(tmp_path / "merged", "end_to_end").read_text())
    assert [(start, length, h.get_total_count()) for start, length, h in intervals] == [
        (0.0, 1.0, 130), (1.0, 1.0, 130), (2.0, 1.0, 130)]
