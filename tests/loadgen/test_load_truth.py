"""Load-test truth (issue 14, items 1-7 and 9): what the figures say when requests time out, replies come twice or
late, the broker goes away mid-run, a warm-up precedes a ramp, the wall clock steps, and runs are judged or compared
later. Runs go through the real ``qdeck`` command on the in-process ``memory://`` broker and worker, whose faults
are injected by URL parameters; no real broker is needed."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import time
from pathlib import Path

import pytest
from rich.console import Console

from loadgen.envelope import Stamps
from loadgen.results.summary import build_summary
from loadgen.run.engine import Engine, RunResult
from loadgen.run.recorder import IntervalStats, Recorder
from loadgen.run.schedules import NS, Constant, Poisson, Ramp, Steps, Trace, parse_steps
from loadgen.run.spec import RunSpec
from loadgen.transports import open_transport
from probes.urls import parse_broker_url
from tests.cli import qdeck


def _run(tmp_path: Path, url: str, *args: str, name: str = "run") -> tuple[int, str, dict]:
    out = tmp_path / name
    done = qdeck("load", "run", "-b", url, "-q", "q", "--out", str(out), "--quiet", *args, timeout=60)
    summary = json.loads((out / "summary.json").read_text())
    return done.code, done.out + done.err, summary


def _adds_up(c: dict) -> None:
    assert c["sent"] == c["replied"] + c["errors"] + c["timeouts"], c


def test_timeouts_enter_the_latency_figures_at_no_less_than_the_timeout(tmp_path: Path) -> None:
    """Half the requests time out: p99 stands on them, so it is at least the timeout, shown as '≥ 0.3 s', and a
    p99 SLO below the timeout fails (it passed on the replies alone before)."""
    code, text, s = _run(tmp_path, "memory://t?drop_every=2", "--rate", "100", "--duration", "1s", "--timeout",
                         "0.3s", "--slo", "p99<250ms")
    c = s["counts"]
    _adds_up(c)
    assert c["timeouts"] == 50 and c["replied"] == 50
    for stage in ("end_to_end", "end_to_end_uncorrected"):
        e = s["stages"][stage]
        assert e["count"] == c["replied"] + c["timeouts"] and e["timeouts"] == c["timeouts"]
        assert e["p99_ms"] >= 299 and {"p99", "p99_9", "max", "mean"} <= set(e["at_least"])
        assert e["p90_ms"] >= 299 and e["min_ms"] < 50 and "min" not in e["at_least"]
    assert s["stages"]["end_to_end_uncorrected"]["max_ms"] == pytest.approx(300, rel=0.01)
    assert s["stages"]["service"]["count"] == c["replied"]  # worker stages: replies only
    assert code == 99, text
    assert "≥ 0.3 s" in text
    assert s["slo"] == [{"slo": "p99<250ms", "ok": False, "actual": "≥ 0.3 s",
                         "detail": "lands on the 50 timed-out requests"}]


def _progress_line(stats: IntervalStats, result: RunResult, *, warmup_s: float, timeout_s: float) -> str:
    from console.load_view import Progress

    buf = io.StringIO()
    progress = Progress(warmup_s, Console(file=buf, force_terminal=True, width=300, color_system=None),
                        timeout_s=timeout_s)
    progress(stats, result)
    return buf.getvalue()


def test_live_view_shows_timeouts_and_warm_up_sends() -> None:
    spec = RunSpec(queue="q", schedule=Constant(100), duration_s=10, warmup_s=2, timeout_s=5)
    rec = Recorder()
    result = RunResult(spec=spec, recorder=rec, started_epoch_s=time.time())
    rec.record_warmup_sent(100)
    warm = _progress_line(rec.roll(0.0, 1.0), result, warmup_s=2, timeout_s=5)
    assert "warm-up sent      100" in warm and "sent        0" not in warm
    # An interval where every request timed out: its percentiles are at least the timeout, not 0.00ms.
    for _ in range(50):
        rec.record_sent()
        rec.record_timeout(0, 1_000_000, 5 * NS)
    line = _progress_line(rec.roll(5.0, 6.0), result, warmup_s=2, timeout_s=5)
    assert "p50 ≥ 5 s" in line and "p99 ≥ 5 s" in line and "0.00ms" not in line
    assert "timeouts 50" in line
    rec.record_duplicate()
    rec.record_late()
    line = _progress_line(rec.roll(6.0, 7.0), result, warmup_s=2, timeout_s=5)
    assert "late 1" in line and "duplicates 1" in line and "no replies yet" in line


def test_duplicates_are_counted_apart_from_late_replies(tmp_path: Path) -> None:
    """Every 4th request answered twice (a redelivery after a broker restart), every 5th answered after the
    timeout: a second reply to an answered request is a duplicate, a reply after the timeout is late."""
    _code, text, s = _run(tmp_path, "memory://t?duplicate_every=4&slow_every=5&slow_ms=150", "--rate", "100",
                          "--duration", "1s", "--timeout", "0.1s")
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] == 100 and c["timeouts"] == 20
    assert c["duplicates"] == 20  # every 4th, less the 5 that are also every 5th (their replies are late)
    assert 15 <= c["late"] <= 25  # the slow ones' replies (and their repeats) that came before the run ended
    assert re.search(r"duplicates 20\b", text) and f"late {c['late']}" in text  # the summary table says so too


def test_an_aborted_run_reports_its_measured_time_rates_and_unsent_requests(tmp_path: Path) -> None:
    """The broker goes away after 150 of the 500 intended requests: the summary is still written, with the time
    the run measured, the rates over it, the 350 never sent as unsent, and the requests in flight ended at once
    (their replies can no longer come) instead of waiting out the 30 s timeout."""
    code, text, s = _run(tmp_path, "memory://t?fail_after=150", "--rate", "100", "--duration", "5s", "--timeout",
                         "30s")
    assert code == 2, text
    assert "run aborted" in text and "connection lost" in s["aborted"]
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] == 150 and c["unsent"] == 350 and c["intended"] == 500
    assert c["timeouts"] == 0
    assert 1.0 < s["duration_s"] < 5.0
    assert s["rates"]["target"] == pytest.approx(100, rel=0.01)
    assert s["rates"]["achieved"] == pytest.approx(150 / s["duration_s"], rel=0.01)
    assert any("aborted" in note for note in s["notes"])


def test_warm_up_precedes_the_schedule(tmp_path: Path) -> None:
    """A 1 s warm-up before `ramp 10→200 over 2s` for 2 s: the measured part is the whole ramp (210 requests),
    and the warm-up runs at the ramp's opening rate (10/s)."""
    _code, _text, s = _run(tmp_path, "memory://t", "--schedule", "ramp", "--ramp-from", "10", "--ramp-to", "200",
                          "--ramp-over", "2s", "--duration", "2s", "--warmup", "1s")
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] == 210 and c["intended"] == 210, c
    assert c["warmup_sent"] == 10
    assert s["schedule"]["description"] == "ramp 10/s → 200/s over 2 s"


def test_hgrm_footer_is_in_one_unit(tmp_path: Path) -> None:
    _code, _text, s = _run(tmp_path, "memory://t?slow_every=3&slow_ms=20", "--rate", "200", "--duration", "1s")
    assert s["stages"]["end_to_end"]["stddev_ms"] > 5
    footer = (tmp_path / "run" / "end_to_end.hgrm").read_text()
    mean, stddev = map(float, re.search(r"#\[Mean\s*=\s*([\d.]+), StdDeviation\s*=\s*([\d.]+)\]", footer).groups())
    maximum = float(re.search(r"#\[Max\s*=\s*([\d.]+)", footer).group(1))
    e2e = s["stages"]["end_to_end"]
    assert mean == pytest.approx(e2e["mean_ms"], abs=0.002)
    assert stddev == pytest.approx(e2e["stddev_ms"], abs=0.002)  # hdrh 0.10 writes it in µs: 1000× off
    assert maximum == pytest.approx(e2e["max_ms"], abs=0.002)


async def test_a_wall_clock_step_moves_no_latency_and_expires_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall clock jumps an hour ahead mid-run: in-process times are monotonic, so no request times out and
    end-to-end latency stays that of the 1 ms server."""
    spec = RunSpec(queue="q", schedule=Constant(200), duration_s=1.0, timeout_s=0.5)
    engine = Engine(open_transport(parse_broker_url("memory://t"), spec.queue, spec.run_id), spec)
    real = time.time_ns

    async def step() -> None:
        await asyncio.sleep(0.3)
        monkeypatch.setattr(time, "time_ns", lambda: real() + 3600 * NS)

    stepper = asyncio.create_task(step())
    result = await engine.run()
    await stepper
    rec = result.recorder
    assert rec.timeouts == 0 and rec.replied == result.sent == 200
    assert rec.total["end_to_end"].get_value_at_percentile(100) < 100_000  # µs


def _summary_with_queue_wait(delta_ns: int) -> dict:
    spec = RunSpec(queue="q", schedule=Constant(1), duration_s=1)
    rec = Recorder()
    rec.record_sent()
    rec.record_reply(0, 1_000_000, 3_000_000, Stamps(1_000_000 + delta_ns, 1_100_000, 1_100_000, 2_000_000,
                                                     2_000_000), 1, "cpu")
    rec.roll(0.0, 1.0)
    result = RunResult(spec=spec, recorder=rec, started_epoch_s=time.time(), measured_s=1.0, intended=1)
    return build_summary(result.record(broker="memory://t", broker_kind="memory"))


def test_negative_stage_within_measurement_error_is_not_clock_skew() -> None:
    same_host = _summary_with_queue_wait(-39_000)  # 39 µs: two clocks on one host
    assert same_host["stages"]["queue_wait"]["clamped_negative"] == 1
    assert same_host["stages"]["queue_wait"]["skewed"] == 0
    assert not any("skew" in note for note in same_host["notes"])
    skewed = _summary_with_queue_wait(-5_000_000)  # 5 ms before it was sent: the worker's clock is behind
    assert skewed["stages"]["queue_wait"]["skewed"] == 1
    assert any("clock skew" in note for note in skewed["notes"])


def test_summary_keeps_its_slo_verdicts_and_gate_rejudges_them(tmp_path: Path) -> None:
    code, _text, s = _run(tmp_path, "memory://t", "--rate", "100", "--duration", "0.5s", "--slo", "p99<1us",
                          "--slo", "errors<1%")
    assert code == 99
    assert [(v["slo"], v["ok"]) for v in s["slo"]] == [("p99<1us", False), ("errors<1%", True)]
    gate = qdeck("load", "gate", str(tmp_path / "run" / "summary.json"))
    assert gate.code == 99, gate.all
    assert "p99<1us" in gate.out and "errors<1%" in gate.out
    assert qdeck("load", "gate", str(tmp_path / "run" / "summary.json"), "--slo", "p99<10s").code == 0


def test_compare_refuses_runs_of_different_tests(tmp_path: Path) -> None:
    _run(tmp_path, "memory://t", "--rate", "100", "--duration", "0.5s", "--schedule", "poisson", name="a")
    _run(tmp_path, "memory://t", "--rate", "200", "--duration", "0.5s", "--payload-size", "100", name="b")
    a, b = (str(tmp_path / n / "summary.json") for n in "ab")
    refused = qdeck("load", "compare", a, b)
    assert refused.code == 2, refused.all
    line = refused.err.strip()
    assert len(line.splitlines()) == 1 and "different tests" in line and "--anyway" in line
    assert "poisson 100/s → constant 200/s" in line and "payload" in line
    anyway = qdeck("load", "compare", a, b, "--anyway")
    assert anyway.code in (0, 99) and "compared anyway: schedule" in anyway.err
    same = qdeck("load", "compare", a, a)
    assert same.code == 0, same.all


@pytest.mark.parametrize("schedule", [Constant(37.5), Ramp(3, 250, 2.5), Ramp(0, 90, 1), Steps(parse_steps(
    "20:0.5s,75:1s,5:0.7s")), Trace.__new__(Trace)])
def test_unsent_counts_are_exact_in_constant_time(schedule, tmp_path: Path) -> None:
    """``count_before`` (what an aborted or lagging run never sent) equals counting the arrivals one by one."""
    if isinstance(schedule, Trace):
        path = tmp_path / "t.csv"
        path.write_text("offset_ms\n" + "\n".join(str(i * 7.3) for i in range(300)))
        schedule = Trace.load(path)
    for t_s in (0.0, 0.013, 0.5, 1.0, 1.2345, 2.2, 3.0, 4.5):
        limit = int(t_s * NS)
        counted = sum(1 for _ in itertools.takewhile(lambda a, t=limit: a.offset_ns < t, schedule.arrivals(1)))
        assert schedule.count_before(limit) == counted, (schedule, t_s)
    assert Poisson(100).count_before(3 * NS) == 300  # a Poisson count is random: its mean


@pytest.mark.kafka
def test_a_request_larger_than_kafka_accepts_ends_the_run_with_one_line_and_its_summary(kafka_url: str,
                                                                                      tmp_path: Path) -> None:
    """MSG_SIZE_TOO_LARGE was an internal error (exit 1) with no summary.json, so requests already counted as sent
    were never reported: now one line, exit 2, and the summary says what happened."""
    queue = f"qdeck-test-big-{tmp_path.name[-8:]}"
    out = tmp_path / "big"
    done = qdeck("load", "run", "-b", kafka_url, "-q", queue, "--rate", "10", "--duration", "1s", "--payload-size",
                 "2000000", "--timeout", "2s", "--out", str(out), "--quiet", timeout=90)
    assert done.code == 2, done.all
    assert "Traceback" not in done.all and "internal error" not in done.all
    err = [line for line in done.err.splitlines() if line.strip()]
    assert len(err) == 1 and "larger than the producer or broker accepts" in err[0], done.err
    s = json.loads((out / "summary.json").read_text())
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] == 0 and c["unsent"] == 10 and "larger than" in s["aborted"]


def test_compare_names_a_different_worker_model_or_batching() -> None:
    from loadgen.results.compare import differences

    base = {"broker_kind": "redis", "queue": "q", "schedule": {"description": "constant 100/s"},
            "payload": {"size": 64}, "workload": "w", "timeout_s": 10, "devices": {"cpu": 9},
            "workers": {"synthetic:base_ms=5, batch ≤ 16, wait 5ms, ×1": 9}, "batch_sizes": {"4": 9},
            "qdeck_version": "0.1.0"}
    assert differences(base, dict(base)) == []
    new = dict(base, workers={"synthetic:base_ms=5, batch ≤ 32, wait 5ms, ×1": 9})
    assert differences(base, new) == ["worker model and batching: synthetic:base_ms=5, batch ≤ 16, wait 5ms, ×1 → "
                                      "synthetic:base_ms=5, batch ≤ 32, wait 5ms, ×1"]


def test_replies_carry_the_worker_model_and_old_replies_still_decode() -> None:
    from loadgen.envelope import Reply, decode_reply, encode_reply

    rep = Reply("r", 1, "w", "cpu", 4, Stamps(1, 2, 3, 4, 5), "out", None, "echo, batch ≤ 8, wait 2ms, ×1")
    assert decode_reply(encode_reply(rep)) == rep
    old = b'{"v":1,"t":"rep","run":"r","seq":1,"worker":"w","device":"cpu","batch_size":4,"stamps":[1,2,3,4,5],' \
          b'"output":"out"}'
    assert decode_reply(old) == rep._replace(model="")
    assert "model" in str(decode_reply(old.replace(b'"output"', b'"model":7,"output"')))


def test_a_closed_loop_run_aborted_by_the_broker_stops_every_user(tmp_path: Path) -> None:
    code, text, s = _run(tmp_path, "memory://t?fail_after=40", "--schedule", "closed", "--concurrency", "4",
                         "--duration", "3s", "--timeout", "30s")
    assert code == 2 and "connection lost" in s["aborted"]
    assert "Task exception was never retrieved" not in text and "Traceback" not in text
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] <= 40 and c["timeouts"] == 0


def test_a_broker_outage_is_a_gap_and_the_run_keeps_its_schedule(tmp_path: Path) -> None:
    """The broker goes away for 1 s after 100 of 300 requests (a restart): the run goes on, the requests that fell
    due meanwhile are unsent, the outage is reported as a gap, and the exit code is the usual one."""
    code, text, s = _run(tmp_path, "memory://t?outage_after=100&outage_s=1", "--rate", "100", "--duration", "3s",
                         "--timeout", "0.5s", "--slo", "errors<100%")
    assert code == 0, text
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] + c["unsent"] == c["intended"] == 300
    [gap] = s["gaps"]
    assert 80 <= gap["unsent"] <= 110 and gap["unsent"] == c["unsent"]
    assert 0.9 <= gap["to_s"] - gap["from_s"] <= 1.2, gap
    assert "connection lost" in gap["reason"]
    assert any(note.startswith("broker outage from") for note in s["notes"])
    assert not s["generator"]["behind"]


def test_live_view_says_while_the_broker_is_away() -> None:
    from loadgen.run.engine import Gap

    spec = RunSpec(queue="q", schedule=Constant(100), duration_s=10)
    rec = Recorder()
    result = RunResult(spec=spec, recorder=rec, started_epoch_s=time.time())
    result.gaps.append(Gap(from_s=3.2, unsent=57, reason="connection lost"))
    line = _progress_line(rec.roll(4.0, 5.0), result, warmup_s=0, timeout_s=5)
    assert "BROKER UNREACHABLE since 3.2s: 57 not sent, reconnecting" in line


def test_an_outage_longer_than_the_limit_aborts_the_run(tmp_path: Path) -> None:
    code, text, s = _run(tmp_path, "memory://t?outage_after=50&outage_s=30", "--rate", "100", "--duration", "5s",
                         "--timeout", "0.5s", "--max-outage", "1s")
    assert code == 2, text
    assert "unreachable for more than 1 s" in s["aborted"]
    c = s["counts"]
    _adds_up(c)
    assert c["sent"] + c["unsent"] == c["intended"] == 500


def test_a_traces_peak_rate_is_its_busiest_second(tmp_path: Path) -> None:
    from loadgen.run.schedules import peak_rate

    path = tmp_path / "burst.csv"
    path.write_text("offset_ms\n" + "\n".join(["0"] * 10 + [str(1500 + i) for i in range(40)] + ["5000"]))
    assert peak_rate(Trace.load(path)) == 40
