"""The engine against the in-process memory:// transport: counts add up, timeouts and errors are counted,
warm-up is excluded, the recorder is bounded."""

from __future__ import annotations

import tracemalloc

import pytest

from loadgen.envelope import Stamps
from loadgen.run.engine import Engine, RunSpec
from loadgen.run.recorder import Recorder
from loadgen.run.schedules import ClosedLoop, Constant
from loadgen.transports import open_transport
from probes.urls import parse_broker_url


async def _run(url: str, spec: RunSpec):
    return await Engine(open_transport(parse_broker_url(url), spec.queue, spec.run_id), spec).run()


async def test_counts_add_up_with_timeouts_and_errors() -> None:
    spec = RunSpec(queue="q", schedule=Constant(200), duration_s=1.0, warmup_s=0.25, timeout_s=0.3)
    result = await _run("memory://t?service_ms=1&drop_every=10&error_every=7", spec)
    rec = result.recorder
    assert result.sent == 200 and result.intended == 200 and result.unsent == 0
    assert result.warmup_sent == 50
    assert rec.timeouts > 0 and rec.error_count > 0
    assert result.sent == rec.replied + rec.error_count + rec.timeouts
    assert rec.total["end_to_end"].get_total_count() == rec.replied + rec.timeouts  # a timeout counts as >= timeout
    assert rec.total["end_to_end"].get_max_value() >= 300_000 * 0.999
    assert rec.total["schedule_lag"].get_total_count() == result.sent


async def test_closed_loop_keeps_n_in_flight() -> None:
    spec = RunSpec(queue="q", schedule=ClosedLoop(2), duration_s=None, requests=50, timeout_s=1.0)
    result = await _run("memory://c?service_ms=2", spec)
    assert result.sent == 50 and result.recorder.replied == 50
    e2e = result.recorder.total["end_to_end"]
    assert e2e.get_value_at_percentile(50) >= 2000  # at least the service time (µs)


class _Writes:
    """The memory transport, with the size of every write recorded."""

    def __init__(self, inner) -> None:
        self.inner, self.reply_to, self.writes = inner, inner.reply_to, []

    async def start(self, on_reply) -> None:
        await self.inner.start(on_reply)

    async def send(self, bodies: list[bytes]) -> None:
        self.writes.append(len(bodies))
        await self.inner.send(bodies)

    def failure(self):
        return self.inner.failure()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_requests_due_within_the_window_share_a_write() -> None:
    """4 requests a millisecond for 0.25 s with a 1 ms window: each write covers more than a window of
    arrivals, so there are at most 251 writes, whatever the timing; every request is still sent and answered."""
    spec = RunSpec(queue="q", schedule=Constant(4000), duration_s=0.25, timeout_s=2.0, coalesce_s=0.001)
    transport = _Writes(open_transport(parse_broker_url("memory://w"), spec.queue, spec.run_id))
    result = await Engine(transport, spec).run()
    assert sum(transport.writes) == result.sent == 1000 and result.recorder.replied == 1000
    assert len(transport.writes) <= 251 and max(transport.writes) > 1
    with pytest.raises(ValueError, match="between 0 and 100ms"):
        RunSpec(queue="q", schedule=Constant(1), coalesce_s=-0.001)


def test_recorder_counts_out_of_range_and_clamps_negative() -> None:
    rec = Recorder()
    s = Stamps(100, 100, 100, 100, 100)
    rec.record_reply(intended_ns=0, sent_ns=200, received_ns=4 * 3600 * 10**9, stamps=s, batch_size=1, device="cpu")
    rec.roll(0, 1)
    assert rec.out_of_range["end_to_end"] == 1
    assert rec.clamped["queue_wait"] == 1  # dequeued before sent: clock skew


def test_recorder_memory_is_bounded() -> None:
    rec = Recorder()
    s = Stamps(1_000_000, 1_100_000, 1_200_000, 3_000_000, 3_100_000)
    tracemalloc.start()
    for i in range(20_000):
        rec.record_reply(0, 500_000, 4_000_000 + i * 1000, s, 4, "cpu")
    base = tracemalloc.get_traced_memory()[0]
    for i in range(200_000):
        rec.record_reply(0, 500_000, 4_000_000 + (i % 50_000) * 1000, s, 4, "cpu")
        if i % 50_000 == 0:
            rec.roll(i, i + 1)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 200_000, f"recording 200k requests grew memory by {grown} bytes"
