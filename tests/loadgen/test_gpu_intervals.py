"""GPU telemetry on the load generator's side: the samples replies carry taken per interval (``gpu_intervals``), the
"GPU idle while queue wait rises" rule, summary.json's ``gpu`` section and ``flags``, and the report's GPU section.
The worker's side, the envelope and a real run are in ``test_gpu_telemetry``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadgen.envelope import Chunk, Reply, Stamps, encode_chunk, encode_reply
from loadgen.gpu_sample import GpuDevice, GpuSample
from loadgen.results.gpu_intervals import FLAG, LIKELY_CAUSES, GpuIntervals, idle_flag, idle_while_queue_rises
from loadgen.results.stages import new_histogram
from loadgen.results.summary import RunRecord, build_summary

SAMPLE = GpuSample(1_800_000_000_123, (
    GpuDevice(87, 30720, 81920, 312.4, 1980), GpuDevice(12, 2560, 81920, 75.0, 1410)))
STAMPS = Stamps(1, 2, 3, 4, 5)


def test_the_generator_takes_the_sample_from_replies_and_final_chunks() -> None:
    from loadgen.run.engine import Engine, RunResult, RunSpec, _Pending
    from loadgen.run.schedules import Constant
    from loadgen.transports import open_transport
    from probes.urls import parse_broker_url

    spec = RunSpec(queue="q", schedule=Constant(10), duration_s=1.0, timeout_s=1.0, run_id="run")
    engine = Engine(open_transport(parse_broker_url("memory://t"), "q", "run"), spec)
    engine.result = RunResult(spec=spec, recorder=engine.recorder, started_epoch_s=0.0, measured_s=1.0)
    for seq in (1, 2, 3):
        engine._seq = seq
        engine.pending[seq] = _Pending(0, 0, warmup=seq == 3)
    later = SAMPLE._replace(at_ms=SAMPLE.at_ms + 100)
    engine._on_reply(encode_reply(Reply("run", 1, "w1", "cuda:0", 1, STAMPS, output="x", gpu=SAMPLE)), 5_000_000)
    engine._on_reply(encode_chunk(Chunk("run", 2, 0, 1, False, "w2", "cuda:0", 1, STAMPS, gpu=later)), 6_000_000)
    engine._on_reply(encode_chunk(Chunk("run", 2, 1, 1, True, "w2", "cuda:0", 1, STAMPS, gpu=SAMPLE)), 7_000_000)
    engine._on_reply(encode_reply(Reply("run", 3, "w3", "cuda:0", 1, STAMPS, gpu=SAMPLE)), 8_000_000)  # warm-up
    engine.recorder.roll(0.0, 1.0)
    record = engine.recorder.gpu.record()
    assert record is not None and record["samples"] == 2  # w1's reply, w2's final chunk (not its first chunk's)
    assert [(d["worker"], d["index"]) for d in record["devices"]] == [("w1", 0), ("w1", 1), ("w2", 0), ("w2", 1)]


# --- the generator's intervals and the rule --------------------------------------------------------------------------

def _wait(ms: float | None) -> Any:
    hist = new_histogram()
    if ms is not None:
        hist.record_value(int(ms * 1000))
    return hist


def _dev(util: float, used: float, power: float, clock: float) -> GpuDevice:
    return GpuDevice(util, used, 81920, power, clock)


def test_each_sample_counts_once_in_the_interval_that_first_brought_it() -> None:
    gpu = GpuIntervals()
    s1 = GpuSample(1000, (_dev(80, 100, 300.0, 1900), _dev(20, 10, 80.0, 1400)))
    s2 = GpuSample(2000, (_dev(60, 300, 200.0, 1700), _dev(40, 30, 100.0, 1600)))
    for sample in (s1, s1, s2, s2, s1):  # many replies carry the same sample; an older one comes late
        gpu.add("w1", sample)
    gpu.add("w2", GpuSample(500, (_dev(10, 5, 50.0, 1000),)))  # another worker: its own clock
    gpu.roll(1.0, _wait(2.0))
    gpu.add("w1", s2)  # counted already
    gpu.roll(2.0, _wait(None))
    gpu.add("w1", GpuSample(3000, (_dev(0, 1, 60.0, 300), _dev(0, 1, 60.0, 300))))
    gpu.roll(3.0, _wait(9.0))
    record = gpu.record()
    assert record is not None and record["samples"] == 4
    w1_0, w1_1, w2_0 = record["devices"]
    assert (w1_0["worker"], w1_0["index"], w1_0["mem_total_mib"]) == ("w1", 0, 81920)
    assert w1_0["intervals"] == [
        {"t": 1.0, "util_pct": 70.0, "mem_used_mib": 300, "power_w": 250.0, "sm_clock_mhz": 1800, "samples": 2},
        {"t": 3.0, "util_pct": 0.0, "mem_used_mib": 1, "power_w": 60.0, "sm_clock_mhz": 300, "samples": 1}]
    assert w1_1["intervals"][0]["util_pct"] == 30.0 and w2_0["intervals"][0]["util_pct"] == 10.0
    hist = _wait(9.0)
    assert record["intervals"] == [{"t": 1.0, "util_pct": round((70 + 30 + 10) / 3, 1),
                                    "queue_wait_p50_ms": _wait(2.0).get_value_at_percentile(50) / 1000},
                                   {"t": 2.0, "util_pct": None, "queue_wait_p50_ms": None},
                                   {"t": 3.0, "util_pct": 0.0,
                                    "queue_wait_p50_ms": hist.get_value_at_percentile(50) / 1000}]
    assert GpuIntervals().record() is None  # no reply carried a sample: no section


def _rows(*rows: tuple[float, float | None, float | None]) -> list[dict[str, Any]]:
    return [{"t": t, "util_pct": u, "queue_wait_p50_ms": w} for t, u, w in rows]


def test_the_idle_rule_flags_idle_gpus_while_the_queue_wait_rises() -> None:
    rows = _rows((1, 30, 1.0),   # the first interval: nothing to compare with
                 (2, 30, 2.5),   # +1.5 ms (+150 %), 30 % busy: flagged
                 (3, 60, 9.0),   # rises, but the GPUs are busy
                 (4, 10, 9.5),   # +0.5 ms: not more than 1 ms
                 (5, 10, 50.0),  # +40.5 ms: flagged
                 (6, 10, 54.0),  # +4 ms is 8 % of 50: not more than 10 %
                 (7, 10, None),  # no replies: breaks the comparison
                 (8, 10, 80.0),  # nothing before it to compare with
                 (9, None, 99.0))  # no GPU figure: not judged
    assert idle_while_queue_rises(rows) == [2.0, 5.0]
    assert idle_while_queue_rises([{"t": "1", "util_pct": 0, "queue_wait_p50_ms": 1}, None, 7]) == []
    flag = idle_flag({"intervals": rows})
    assert flag is not None and flag["flag"] == FLAG and flag["intervals_t"] == [2.0, 5.0]
    assert flag["likely_causes"] == list(LIKELY_CAUSES) and "in 2 intervals (ending at 2, 5 s)" in flag["message"]
    assert idle_flag({"intervals": rows[2:4]}) is None and idle_flag(None) is None


def _record(gpu: dict[str, Any] | None) -> RunRecord:
    facts = {"run_id": "r1", "queue": "q", "workload": "default", "schedule": {"kind": "constant"},
             "payload": {"size": 8}, "warmup_s": 0.0, "timeout_s": 10.0, "coalesce_s": 0.001, "closed_loop": False}
    return RunRecord(facts=facts, broker="redis://127.0.0.1/0", broker_kind="redis", started_epoch_s=1.7e9,
                     measured_s=3.0, counts={"intended": 3, "sent": 3, "replied": 3}, errors_by_kind={}, stages={},
                     gpu=gpu)


def test_summary_has_the_gpu_section_and_the_flag_only_when_there_is_one() -> None:
    assert "gpu" not in build_summary(_record(None)) and "flags" not in build_summary(_record(None))
    section = {"samples": 3, "devices": [], "intervals": _rows((1, 20, 1.0), (2, 20, 5.0))}
    summary = build_summary(_record(section))
    assert summary["gpu"] == section
    assert [f["flag"] for f in summary["flags"]] == [FLAG]
    assert any(n.startswith("GPU idle while queue wait rises") and "too few workers" in n for n in summary["notes"])
    calm = build_summary(_record({**section, "intervals": _rows((1, 90, 1.0), (2, 90, 5.0))}))
    assert "flags" not in calm and calm["gpu"]["samples"] == 3


def test_the_report_draws_gpu_utilisation_beside_queue_wait_and_shows_the_flag(tmp_path: Path) -> None:
    from tests.loadgen.test_html_report import HOSTILE, build, page_data, synthetic_run

    rows = _rows((1, 30, 1.0), (2, 30, 2.5), (3, 90, 2.6))
    device = {"worker": HOSTILE, "index": 0, "mem_total_mib": 81920,
              "intervals": [{"t": t, "util_pct": u, "mem_used_mib": 1000 * t, "power_w": 100.0 * t,
                             "sm_clock_mhz": 1500, "samples": 1} for t, u, _ in ((1, 30, 0), (2, 30, 0), (3, 90, 0))]}
    synthetic_run(tmp_path / "run", intervals=3, extra={"gpu": {"samples": 3, "devices": [device], "intervals": rows}})
    synthetic_run(tmp_path / "plain", intervals=3)
    doc = build(tmp_path / "run")
    chart = next(c for c in page_data(doc)["charts"] if c["id"] == "gpu")
    assert chart["data"] == [[1.0, 2.0, 3.0], [30.0, 30.0, 90.0], [1.0, 2.5, 2.6]]
    assert [s.get("scale") for s in chart["series"]] == [None, "y2"] and chart["y"]["max"] == 100
    assert 'id="gpu-idle"' in doc and "GPU idle while queue wait rises: in 1 interval (ending at 2 s)" in doc
    assert "too few model slots" in doc and "3,000 of 81,920" in doc and "200.0" in doc  # the table: run figures
    assert "<script>window.pwned" not in doc and doc.lower().count("<script") == 3  # the worker name is inert
    plain = build(tmp_path / "plain")
    assert "no GPU samples in this run" in plain and 'id="gpu-idle"' not in plain
