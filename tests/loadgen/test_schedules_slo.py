"""Schedules, plans, SLO parsing and judging, baseline comparison, JUnit output (no broker)."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from loadgen.results.compare import compare
from loadgen.results.junit import write_junit
from loadgen.results.slo import SloError, judge, parse_slo
from loadgen.results.stages import new_histogram
from loadgen.run.plan import PlanError, PlanInput, build_plan
from loadgen.run.schedules import NS, ClosedLoop, Constant, Poisson, Ramp, ScheduleError, Steps, Trace, parse_steps


def _within(schedule, seconds: float) -> list[int]:
    return [a.offset_ns for a in itertools.takewhile(lambda a: a.offset_ns < seconds * NS, schedule.arrivals(1))]


def test_constant_poisson_ramp_steps_counts() -> None:
    assert len(_within(Constant(100), 10)) == 1000
    n = len(_within(Poisson(100), 100))
    assert 9600 < n < 10400  # mean 10,000, sd 100
    assert _within(Poisson(100), 5) == _within(Poisson(100), 5)  # deterministic for a seed
    ramp = _within(Ramp(0, 100, 10), 10)
    assert abs(len(ramp) - 500) <= 1  # area under 0 → 100/s over 10 s
    assert len(_within(Ramp(0, 100, 10), 20)) == pytest.approx(1500, abs=2)
    steps = Steps(parse_steps("10:2s,50:1s"))
    assert len(_within(steps, 3)) == 70 and len(_within(steps, 4)) == 120
    assert all(b >= a for a, b in itertools.pairwise(_within(Poisson(50), 5)))
    assert Ramp(0, 100, 10).mean_rate(10) == pytest.approx(50)


def test_trace_replay(tmp_path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("offset_ms,payload_bytes\n0,10\n2.5,200\n1,30\n")
    trace = Trace.load(path)
    assert [(a.offset_ns, a.payload_size) for a in trace.arrivals(0)] == [(0, 10), (1_000_000, 30), (2_500_000, 200)]
    bad = tmp_path / "bad.csv"
    bad.write_text("when\n1\n")
    with pytest.raises(ScheduleError, match="needs an offset_ms or offset_s column"):
        Trace.load(bad)
    with pytest.raises(ScheduleError, match="cannot read trace"):
        Trace.load(tmp_path / "missing.csv")


def test_plan_file_and_options_merge(tmp_path) -> None:
    doc = {"queue": "inference", "duration": "30s", "warmup": "2s", "schedule": {"kind": "ramp", "from": 1, "to": 50,
                                                                                  "over": "10s"},
           "payload": {"size": 128}, "slo": {"p99": "<250ms", "queue_wait.p99": "< 50ms"}}
    plan = build_plan(PlanInput(duration="5s", slos=["errors<1%"]), doc)
    assert plan.spec.queue == "inference" and plan.spec.duration_s == 5 and plan.spec.warmup_s == 2
    assert isinstance(plan.spec.schedule, Ramp) and plan.spec.schedule.end == 50
    assert [s.text for s in plan.slos] == ["errors<1%", "p99<250ms", "queue_wait.p99< 50ms"]
    assert plan.spec.coalesce_s == 0.001  # the default window
    assert build_plan(PlanInput(), dict(doc, coalesce="250us")).spec.coalesce_s == pytest.approx(0.00025)
    assert build_plan(PlanInput(coalesce="0"), dict(doc, coalesce="2ms")).spec.coalesce_s == 0
    # RabbitMQ publisher confirms: off unless asked (the option wins over the plan); recorded in the run's facts
    assert plan.spec.confirm is False and plan.spec.facts()["confirm"] is False
    assert build_plan(PlanInput(), dict(doc, confirm=True)).spec.confirm is True
    assert build_plan(PlanInput(confirm=False), dict(doc, confirm=True)).spec.confirm is False
    with pytest.raises(PlanError, match=r"confirm.*true or false"):
        build_plan(PlanInput(), dict(doc, confirm="yes"))
    closed = build_plan(PlanInput(queue="q", schedule="closed", concurrency=4, requests=100))
    assert closed.spec.schedule == ClosedLoop(4) and closed.spec.requests == 100
    for opts, message in ((PlanInput(rate=10, duration="1s"), "no queue"),
                          (PlanInput(queue="q", duration="1s"), "needs --rate"),
                          (PlanInput(queue="q", rate=5), "give --duration or --requests"),
                          (PlanInput(queue="q", rate=5, duration="soon"), "not a duration"),
                          (PlanInput(queue="q", schedule="closed", duration="1s"), "needs --concurrency"),
                          (PlanInput(queue="q", rate=5, duration="1s", coalesce="1s"), "between 0 and 100ms"),
                          (PlanInput(queue="q", rate=5, duration="1s", coalesce="-1ms"), "not a duration")):
        with pytest.raises(PlanError, match=message):
            build_plan(opts)


def _summary(values_us: list[int], sent: int, errors: int = 0, timeouts: int = 0, ratio: float = 1.0) -> dict:
    hist = new_histogram()
    for v in values_us:
        hist.record_value(v)
    stages = {s: {"count": 0, "histogram": None} for s in ("end_to_end_uncorrected", "schedule_lag", "batch_wait",
                                                           "service", "reply_transit", "queue_wait")}
    stages["end_to_end"] = {"count": len(values_us), "histogram": hist.encode().decode()}
    return {"schema_version": 1, "counts": {"sent": sent, "errors": errors, "timeouts": timeouts},
            "rates": {"achieved": 100.0 * ratio, "achieved_ratio": ratio, "target": 100.0}, "stages": stages}


def test_slo_judging() -> None:
    s = _summary([1000] * 98 + [300_000] * 2, sent=1000, errors=1, timeouts=1)
    assert judge(s, parse_slo("p50<2ms")).ok
    assert not judge(s, parse_slo("p99<250ms")).ok
    assert judge(s, parse_slo("p97<=1ms")).ok
    assert judge(s, parse_slo("errors<0.3%")).ok and not judge(s, parse_slo("errors<0.2%")).ok
    assert judge(s, parse_slo("timeouts<=1")).ok
    assert judge(s, parse_slo("achieved_rate>=99%")).ok and not judge(s, parse_slo("achieved_rate>100")).ok
    verdict = judge(s, parse_slo("queue_wait.p99<1ms"))
    assert not verdict.ok and verdict.actual == "no data"
    for bad in ("p99<", "p99<5", "errors<5ms", "p101<1ms", "nonsense.p99<1ms", "p99~5ms"):
        with pytest.raises(SloError):
            parse_slo(bad)


def test_compare_flags_regressions_only() -> None:
    base = _summary([10_000] * 100, sent=100)
    same = compare(base, _summary([10_500] * 100, sent=100), 0.10)
    assert all(c.ok for c in same)
    worse = compare(base, _summary([20_000] * 100, sent=100, timeouts=5, ratio=0.8), 0.10)
    failed = {c.name for c in worse if not c.ok}
    assert failed == {"p50", "p99", "p99.9", "errors", "achieved_rate"}


def test_junit_xml(tmp_path) -> None:
    path = tmp_path / "out" / "slo.xml"
    write_junit(path, "qdeck.slo", [("p99<250ms", True, "actual 12 ms"), ("errors<0.1%", False, "actual 2%")])
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.findall("testcase")[1].find("failure")
    assert failure is not None and failure.get("message") == "actual 2%"
