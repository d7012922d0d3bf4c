"""GPU telemetry: the worker's NVML sampler (with a stand-in NVML, and the real pynvml where it is), its metric lines,
the envelope's ``gpu`` field, replies and final chunks carrying the sample, and one real run through Redis with a
worker whose NVML is ``tests.nvml_stand_in`` (``qdeck worker --nvml-module``). The generator's side (intervals, the
idle rule, summary.json, the report) is in ``test_gpu_intervals``."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from loadgen.envelope import Chunk, Malformed, Reply, Stamps, decode_reply, encode_chunk, encode_reply
from loadgen.gpu_sample import PROBLEM, GpuDevice, GpuFigures, GpuSample
from loadgen.worker.gpu_telemetry import GpuSampler
from loadgen.worker.metrics import MetricsReporter
from tests.cli import qdeck
from tests.loadgen.list_source import ListSource
from tests.nvml_stand_in import StandInNvml, two_gpus
from tests.workers import unique, worker


class Notes(list[str]):
    def __call__(self, event: str, message: str) -> None:  # MetricsReporter.note's sentences
        self.append(message)


# --- the worker's sampler --------------------------------------------------------------------------------------------

def test_sampler_reads_every_device_in_watts_and_mib_and_sums_each_interval() -> None:
    nvml, notes = StandInNvml(two_gpus()), Notes()
    sampler = GpuSampler(1.0, notes, nvml=nvml, clock_ns=itertools.count(1_800_000_000 * 10**9, 10**8).__next__)
    assert sampler.open() is None
    first = sampler.latest
    assert first is not None and first.devices == (GpuDevice(87, 30 * 1024, 80 * 1024, 312.4, 1980),
                                                   GpuDevice(12, 2560, 80 * 1024, 75.0, 1410))  # mW -> W, to 0.1 W
    nvml.devices[0].update(util=41, used_gib=40, mw=200_000, mhz=1500)
    second = sampler.sample()
    assert second.at_ms > first.at_ms and second.devices[0] == GpuDevice(41, 40 * 1024, 80 * 1024, 200.0, 1500)
    figures = sampler.take_interval()
    assert figures == (GpuFigures(0, 2, 64.0, 40 * 1024, 80 * 1024, 256.2, 1740),  # means; the largest memory
                       GpuFigures(1, 2, 12.0, 2560, 80 * 1024, 75.0, 1410))
    assert sampler.take_interval() == ()  # each interval's own readings
    assert notes == [] and nvml.shutdowns == 0


def test_a_figure_a_device_does_not_give_is_null_for_the_run_and_named_once() -> None:
    nvml, notes = StandInNvml(two_gpus(), unsupported=frozenset({(1, "power"), (1, "clock")})), Notes()
    sampler = GpuSampler(0.01, notes, nvml=nvml)
    sampler.start()
    deadline = time.monotonic() + 10
    while nvml.util_reads < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert nvml.util_reads >= 6, "the sampler did not read on"
    assert sampler.latest is not None and sampler.latest.devices[1] == GpuDevice(12, 2560, 80 * 1024, None, None)
    assert notes == ["GPU telemetry on: 2 GPUs, read every 0.01 s (NVML does not give power, SM clock on "
                             "GPU 1)"]
    assert nvml.shutdowns == 1


@pytest.mark.parametrize(("make", "why"), [
    (lambda: {"module": "qdeck_no_nvml"}, "cannot import 'qdeck_no_nvml': ModuleNotFoundError: No module named "
                                          "'qdeck_no_nvml'"),
    (lambda: {"nvml": StandInNvml(two_gpus(), init_error="Driver Not Loaded")},
     "NVML did not initialise: NVMLError: Driver Not Loaded"),
    (lambda: {"nvml": StandInNvml([])}, "NVML found no GPU"),
    (lambda: {"nvml": StandInNvml(two_gpus()[:1], unsupported=frozenset(
        (0, f) for f in ("util", "memory", "power", "clock")))}, "NVML gives none of the figures on any GPU"),
], ids=["import fails", "init fails", "no device", "no figure"])
def test_without_nvml_one_line_says_so_and_nothing_else_changes(make: Any, why: str) -> None:
    out = io.StringIO()
    metrics = MetricsReporter("w1", "cpu", "echo", fmt="json", out=out)
    sampler = GpuSampler(1.0, metrics.note, **make())
    metrics.gpu = sampler.take_interval
    sampler.start()
    sampler.stop()
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"event": "gpu telemetry off", "worker": "w1", "message": f"GPU telemetry off: {why}"}]
    metrics.emit()
    last = json.loads(out.getvalue().splitlines()[-1])
    assert "gpu" not in last and sampler.latest is None  # the metric line is as before


def test_the_real_pynvml_says_in_one_line_whether_it_is_on() -> None:
    """The real nvidia-ml-py: on a machine without a driver, one "off" line; with GPUs, one "on" line."""
    notes = Notes()
    sampler = GpuSampler(1.0, notes)
    sampler.start()
    sampler.stop()
    assert len(notes) == 1, notes
    assert notes[0].startswith(("GPU telemetry off: NVML did not initialise", "GPU telemetry on: "))


def test_an_nvml_error_mid_run_stops_the_sampling_with_one_line() -> None:
    """Decision: an NVML error after the first reading stops the sampling for good (no retries): one line, and the
    replies carry no GPU figures from then on rather than a stale sample."""
    nvml, notes = StandInNvml(two_gpus(), fail_after=5), Notes()  # the first two readings, then half a third
    sampler = GpuSampler(0.01, notes, nvml=nvml)
    sampler.start()
    assert sampler._thread is not None
    sampler._thread.join(10)
    assert not sampler._thread.is_alive()
    assert notes == ["GPU telemetry on: 2 GPUs, read every 0.01 s",
                             "GPU telemetry stopped: NVMLError: GPU is lost; replies carry no GPU figures from now on"]
    assert sampler.latest is None and nvml.shutdowns == 1 and nvml.util_reads == 6
    assert [f.samples for f in sampler.take_interval()] == [2, 2]  # what was read before it stopped is reported


def test_the_gpu_interval_is_checked() -> None:
    from loadgen.worker.core import WorkerConfig

    assert WorkerConfig(gpu_interval_s=0).gpu_interval_s == 0
    for bad in (-1, 0.001, 4000):
        with pytest.raises(ValueError, match="gpu-interval must be 0"):
            WorkerConfig(gpu_interval_s=bad)
    notes = Notes()
    GpuSampler(0, notes, nvml=StandInNvml(two_gpus())).start()
    assert notes == ["GPU telemetry off: --gpu-interval 0"]
    bad = qdeck("worker", "-b", "redis://127.0.0.1:1/0", "-q", "q", "--gpu-interval", "0.001")
    assert bad.code == 2 and bad.err.strip().splitlines() == [
        "qdeck: gpu-interval must be 0 (off) or between 0.01 and 3600 seconds"], bad.all


def test_metric_lines_carry_each_gpus_interval_figures() -> None:
    figures = (GpuFigures(0, 10, 87.5, 30512, 81559, 312.4, 1980), GpuFigures(1, 10, None, None, None, 75.0, None))
    for fmt in ("json", "human"):
        out = io.StringIO()
        metrics = MetricsReporter("w1", "cuda:0", "echo", fmt=fmt, out=out)
        metrics.gpu = lambda: figures
        metrics.emit()
        if fmt == "json":
            assert json.loads(out.getvalue())["gpu"] == [
                {"index": 0, "samples": 10, "util_pct": 87.5, "mem_used_mib": 30512, "mem_total_mib": 81559,
                 "power_w": 312.4, "sm_clock_mhz": 1980},
                {"index": 1, "samples": 10, "util_pct": None, "mem_used_mib": None, "mem_total_mib": None,
                 "power_w": 75.0, "sm_clock_mhz": None}]
        else:
            assert out.getvalue().endswith("; GPU0 util 87.5%, mem 30,512/81,559 MiB, 312.4 W, SM 1,980 MHz; "
                                           "GPU1 75.0 W\n")


# --- the envelope ----------------------------------------------------------------------------------------------------

SAMPLE = GpuSample(1_800_000_000_123, (GpuDevice(87, 30720, 81920, 312.4, 1980), GpuDevice(None, 2560, 81920, None,
                                                                                            1410)))
STAMPS = Stamps(1, 2, 3, 4, 5)


def test_replies_and_final_chunks_carry_the_sample_and_older_messages_still_decode() -> None:
    rep = Reply("r1", 7, "w1", "cuda:0", 4, STAMPS, output=[1, 2], model="echo", gpu=SAMPLE)
    body = encode_reply(rep)
    assert orjson.loads(body)["gpu"] == [1_800_000_000_123, [87, 30720, 81920, 312.4, 1980],
                                         [None, 2560, 81920, None, 1410]]
    assert decode_reply(body) == rep
    plain = rep._replace(gpu=None)
    assert b"gpu" not in encode_reply(plain) and decode_reply(encode_reply(plain)) == plain  # no GPU: no bytes
    chunk = Chunk("r1", 7, 2, 5, True, "w1", "cuda:0", 8, STAMPS, None, "llm", None, SAMPLE)
    assert decode_reply(encode_chunk(chunk)) == chunk
    assert b"gpu" not in encode_chunk(chunk._replace(gpu=None))
    # a version-1 reply and a version-2 chunk as an older worker writes them (no gpu field)
    v1 = b'{"v":1,"t":"rep","run":"r1","seq":7,"worker":"w","device":"cpu","batch_size":1,"stamps":[1,2,3,4,5],' \
         b'"output":"x"}'
    v2 = b'{"v":2,"t":"chunk","run":"r1","seq":7,"i":0,"n":1,"final":true,"worker":"w","device":"cpu",' \
         b'"batch_size":1,"stamps":[1,2,3,4,5]}'
    old_reply, old_chunk = decode_reply(v1), decode_reply(v2)
    assert isinstance(old_reply, Reply) and old_reply.gpu is None and old_reply.output == "x"
    assert isinstance(old_chunk, Chunk) and old_chunk.gpu is None and old_chunk.final
    later = decode_reply(v1.replace(b"}", b',"gpu":[5,[1,2,3,4.5,6,"a later figure"]]}'))  # room to grow
    assert isinstance(later, Reply) and later.gpu == GpuSample(5, (GpuDevice(1, 2, 3, 4.5, 6),))


@pytest.mark.parametrize("gpu", [
    "87", [], ["1", [1, 2, 3, 4, 5]], [-1, [1, 2, 3, 4, 5]], [1, [1, 2, 3, 4]], [1, [1, 2, "3", 4, 5]],
    [1, [1, True, 3, 4, 5]], [1, {"util": 1}], [1.5, [1, 2, 3, 4, 5]], [1, [1, 2, 3, float("inf"), 5]],
    [1, [float("nan"), 2, 3, 4, 5]],
])
def test_a_malformed_gpu_field_is_a_malformed_reply_with_the_reason(gpu: Any) -> None:
    for doc in ({"v": 1, "t": "rep", "run": "r", "seq": 1, "worker": "w", "device": "cpu", "batch_size": 1,
                 "stamps": [1, 2, 3, 4, 5], "output": "x", "gpu": gpu},
                {"v": 2, "t": "chunk", "run": "r", "seq": 1, "i": 0, "n": 1, "final": True, "worker": "w",
                 "device": "cpu", "batch_size": 1, "gpu": gpu}):
        assert decode_reply(json.dumps(doc).encode()) == Malformed(PROBLEM)


# --- the worker puts the sample on its replies ------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["echo", "llm-synthetic:step_ms=1,per_seq_ms=0,prefill_ms=0"])
async def test_the_worker_puts_its_latest_sample_on_replies_and_final_chunks(model: str) -> None:
    from loadgen.envelope import Request, encode_request
    from loadgen.worker.core import Worker, WorkerConfig
    from loadgen.worker.models import load_model

    notes = Notes()
    sampler = GpuSampler(0.05, notes, nvml=StandInNvml(two_gpus()))
    bodies = [encode_request(Request("r", i, 1, 1, "replies", "w", f"p{i}", max_tokens=3)) for i in range(1, 7)]
    source = ListSource(bodies, lambda: sampler.latest is not None)
    metrics = MetricsReporter("w1", "cpu", model, out=io.StringIO())
    w = Worker(source, load_model(model, "cpu"), WorkerConfig(max_batch=4, metrics_interval_s=60),  # type: ignore[arg-type]
               worker_id="w1", metrics=metrics, gpu=sampler)
    stop = asyncio.Event()
    served = asyncio.create_task(w.run(stop))
    deadline = time.monotonic() + 20
    while len(source.acked) < 6 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(served, 20)
    assert len(source.acked) == 6 and notes == ["GPU telemetry on: 2 GPUs, read every 0.05 s"]
    last = [m for m in source.published if isinstance(m, Reply) or (isinstance(m, Chunk) and m.final)]
    others = [m for m in source.published if m not in last]
    assert len(last) == 6 and all(isinstance(m, Chunk) for m in others) and (others or model == "echo")
    assert all(m.gpu is not None and m.gpu.devices == (GpuDevice(87, 30720, 81920, 312.4, 1980),
                                                      GpuDevice(12, 2560, 81920, 75.0, 1410)) for m in last)
    assert all(m.gpu is None for m in others)  # a stream's other chunks carry none
    assert sampler._thread is not None and not sampler._thread.is_alive()  # stopped with the worker


# --- one real run ---------------------------------------------------------------------------------------------------

@pytest.mark.redis
def test_a_run_through_redis_carries_the_workers_gpu_samples_into_summary_json(redis_url: str,
                                                                               tmp_path: Path) -> None:
    queue = unique("qdeck-test-gpu")
    out = tmp_path / "run"
    try:
        with worker(redis_url, queue, "--nvml-module", "tests.nvml_stand_in",
                    "--gpu-interval", "0.1", "--metrics-interval", "0.5", "--metrics-format", "json",
                    tmp_path=tmp_path) as w:
            run = qdeck("load", "run", "-b", redis_url, "-q", queue, "--rate", "50", "--duration", "2s",
                        "--out", str(out), "--quiet", timeout=120)
            assert run.code == 0, run.all
            lines = [e for e in w.events("worker_metrics") if "gpu" in e]
        log = w.log()
    finally:
        with redis.Redis.from_url(redis_url) as client:
            client.delete(queue, f"{queue}:dlq")
    assert log.count("GPU telemetry on: 2 GPUs, read every 0.1 s") == 1, log
    assert lines and lines[-1]["gpu"][0] == {"index": 0, "samples": lines[-1]["gpu"][0]["samples"], "util_pct": 87.0,
                                             "mem_used_mib": 30720, "mem_total_mib": 81920, "power_w": 312.4,
                                             "sm_clock_mhz": 1980}
    summary = json.loads((out / "summary.json").read_text())
    gpu = summary["gpu"]
    assert gpu["samples"] >= 5  # 2 s of replies, a sample every 0.1 s
    first, second = gpu["devices"]
    assert first["mem_total_mib"] == 81920 and first["worker"] == second["worker"]
    assert {(r["util_pct"], r["mem_used_mib"], r["power_w"], r["sm_clock_mhz"]) for r in first["intervals"]} == {
        (87.0, 30720, 312.4, 1980)}
    assert {(r["util_pct"], r["mem_used_mib"], r["power_w"], r["sm_clock_mhz"]) for r in second["intervals"]} == {
        (12.0, 2560, 75.0, 1410)}
    measured = [r for r in gpu["intervals"] if r["util_pct"] is not None]
    assert measured and all(r["util_pct"] == 49.5 and r["queue_wait_p50_ms"] is not None for r in measured)
    assert summary["counts"]["replied"] > 0


def test_agents_gpu_sections_merge_weighted_by_their_samples() -> None:
    """A distributed run's agents each saw some of a shared worker's samples: per GPU and interval the means are
    weighted by samples, memory is the largest, a figure an agent lacked is left out, samples add up."""
    from loadgen.results.gpu_intervals import merge_sections

    def section(samples: int, util: float | None, mem: int, power: float, t: float = 1.0) -> dict[str, Any]:
        row = {"t": t, "util_pct": util, "mem_used_mib": mem, "power_w": power, "sm_clock_mhz": 1500,
               "samples": samples}
        return {"samples": samples, "devices": [{"worker": "w1", "index": 0, "mem_total_mib": 81920,
                                                 "intervals": [row]}],
                "intervals": [{"t": t, "util_pct": util, "queue_wait_p50_ms": 3.0}]}

    merged = merge_sections([section(3, 90.0, 100, 300.0), section(1, 50.0, 400, 100.0), None,
                             section(2, None, 50, 200.0, t=1.004), {"samples": 0}], [2.5])
    assert merged is not None and merged["samples"] == 6
    (device,) = merged["devices"]
    assert device["intervals"] == [{"t": 1.0, "util_pct": 80.0, "mem_used_mib": 400, "power_w": 233.3,
                                    "sm_clock_mhz": 1500, "samples": 6}]
    assert merged["intervals"] == [{"t": 1.0, "util_pct": 80.0, "queue_wait_p50_ms": 2.5}]
    assert merge_sections([None, {"samples": 0}], []) is None
