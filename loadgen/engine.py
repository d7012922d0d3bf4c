"""The open-loop engine: send at the intended times without waiting for replies, match replies by id.

Times: the schedule gives intended offsets from the run's start (monotonic clock); every stamp that leaves the
process is wall-clock ns derived from that one monotonic origin, so intended, sent and received are consistent.
A request with no reply after ``timeout_s`` is a timeout (counted, never dropped); a reply after that is "late".
When the generator cannot keep up, intended requests still unsent at the end of the window are counted as
``unsent`` and the run says so; schedule lag (actual − intended send) is recorded for every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from loadgen.aio import quiet_gc
from loadgen.envelope import Malformed, RequestTemplate, decode_reply
from loadgen.precise_wait import precise_wait
from loadgen.recorder import IntervalStats, Recorder
from loadgen.schedules import NS, AnySchedule, Arrival, ClosedLoop
from loadgen.transports.base import Transport
from probes.errors import ProbeError

BEHIND_LAG_US = 10_000  # schedule-lag p99 above this in an interval: the generator is behind
COALESCE_S = 0.0005  # default: arrivals due within this of the oldest unwritten one share its write
MAX_COALESCE_S = 0.1
MAX_WRITE = 256  # requests per write at most
END_GRACE_NS = 50_000_000  # a request intended inside the window may still go out this late; later = unsent


def new_run_id() -> str:
    return secrets.token_hex(4)


@functools.lru_cache(maxsize=64)
def payload_text(size: int) -> str:
    base = "the quick brown fox jumps over the lazy dog; inference request payload. "
    return (base * (size // len(base) + 1))[:size]


@dataclass(frozen=True, slots=True)
class RunSpec:
    queue: str
    schedule: AnySchedule
    duration_s: float | None = 10.0
    requests: int | None = None
    warmup_s: float = 0.0
    timeout_s: float = 10.0
    workload: str = "default"
    payload_size: int = 64
    payload: str | None = None
    interval_s: float = 1.0
    coalesce_s: float = COALESCE_S
    seed: int = 1
    run_id: str = field(default_factory=new_run_id)

    def __post_init__(self) -> None:
        if self.duration_s is None and self.requests is None:
            raise ValueError("give a duration or a request count")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration must be above zero")
        if self.requests is not None and self.requests <= 0:
            raise ValueError("the request count must be above zero")
        if self.timeout_s <= 0 or self.interval_s <= 0 or self.warmup_s < 0 or self.payload_size < 0:
            raise ValueError("timeout and interval must be above zero; warm-up and payload size not negative")
        if not 0 <= self.coalesce_s <= MAX_COALESCE_S:
            raise ValueError(f"the coalescing window must be between 0 and {MAX_COALESCE_S * 1000:g}ms")


@dataclass
class RunResult:
    spec: RunSpec
    recorder: Recorder
    started_epoch_s: float
    measured_s: float = 0.0
    intended: int = 0  # measured-window requests the schedule asked for
    unsent: int = 0
    late: int = 0
    foreign: int = 0
    malformed_replies: int = 0
    warmup_sent: int = 0
    aborted: str | None = None
    behind_intervals: int = 0
    in_flight: int = 0  # requests awaiting a reply at the last interval

    @property
    def sent(self) -> int:
        return self.recorder.sent

    @property
    def target_rate(self) -> float:
        return self.intended / self.measured_s if self.measured_s else 0.0

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.measured_s if self.measured_s else 0.0


@dataclass(slots=True)
class _Pending:
    intended_ns: int
    sent_ns: int
    warmup: bool
    waiter: asyncio.Future[None] | None = None


ProgressFn = Callable[[IntervalStats, RunResult], None]


class Engine:
    def __init__(self, transport: Transport, spec: RunSpec, *, progress: ProgressFn | None = None) -> None:
        self.transport, self.spec, self.progress = transport, spec, progress
        self.recorder = Recorder()
        self.pending: dict[int, _Pending] = {}
        self._seq = 0
        self._templates: dict[int, RequestTemplate] = {}  # by payload size
        self._mono0 = 0
        self._wall0 = 0
        self.result: RunResult | None = None

    def wall(self, mono_ns: int) -> int:
        return self._wall0 + (mono_ns - self._mono0)

    async def run(self, out_dir: str | None = None) -> RunResult:
        with quiet_gc():
            return await self._run(out_dir)

    async def _run(self, out_dir: str | None) -> RunResult:
        from pathlib import Path

        spec = self.spec
        self._mono0 = time.perf_counter_ns()
        self._wall0 = time.time_ns()
        result = self.result = RunResult(spec=spec, recorder=self.recorder, started_epoch_s=self._wall0 / NS)
        if out_dir is not None:
            self.recorder.open_logs(Path(out_dir), self._wall0 / NS)
        await self.transport.start(self._on_reply)
        ticker = asyncio.create_task(self._tick(result))
        reaper = asyncio.create_task(self._reap())
        try:
            try:
                if isinstance(spec.schedule, ClosedLoop):
                    await self._closed_loop(spec.schedule.concurrency, result)
                else:
                    await self._open_loop(spec.schedule.arrivals(spec.seed), result)
            except ProbeError as exc:
                result.aborted = str(exc)
            await self._drain()
        finally:
            for task in (ticker, reaper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            now = time.perf_counter_ns()
            self._roll(result, now)
            self.recorder.close_logs()
            with contextlib.suppress(ProbeError):
                await self.transport.aclose()
        return result

    # -- sending -------------------------------------------------------------------------------------------------

    def _window(self) -> tuple[int, int | None]:
        spec = self.spec
        warm = int(spec.warmup_s * NS)
        end = warm + int(spec.duration_s * NS) if spec.duration_s is not None else None
        return warm, end

    async def _open_loop(self, arrivals: Iterator[Arrival], result: RunResult) -> None:
        spec = self.spec
        warm_ns, end_ns = self._window()
        limit = spec.requests
        measured = 0
        mono0 = self._mono0
        coalesce_ns = int(spec.coalesce_s * NS)
        nxt: Arrival | None = next(arrivals, None)
        waiter = precise_wait(asyncio.get_running_loop())
        try:
            while nxt is not None:
                now = time.perf_counter_ns() - mono0
                if end_ns is not None and now >= end_ns + END_GRACE_NS:  # out of time: the rest was never sent
                    result.unsent = self._count_unsent(nxt, arrivals, end_ns, limit, measured)
                    result.intended += result.unsent
                    break
                # One write: this arrival and those due within the coalescing window after it (or all those already
                # due, when behind), sent when the last of them is due. Each write and each timer wake-up costs
                # tens of µs of CPU here, in the broker and in the worker: at thousands of requests/s one per
                # request costs more than the requests. The wait is recorded as schedule lag; arrivals further
                # apart than the window go out alone, on time.
                horizon = max(nxt.offset_ns + coalesce_ns, now)
                batch: list[tuple[Arrival, bool]] = []
                while nxt is not None and nxt.offset_ns <= horizon and len(batch) < MAX_WRITE:
                    if end_ns is not None and nxt.offset_ns >= end_ns:
                        break
                    warmup = nxt.offset_ns < warm_ns
                    if not warmup:
                        if limit is not None and measured >= limit:
                            break
                        measured += 1
                    batch.append((nxt, warmup))
                    nxt = next(arrivals, None)
                if not batch:  # the next arrival is past the window's end, or the request count is reached
                    break
                await waiter.until(mono0 + batch[-1][0].offset_ns)
                await self._send(batch, result)
        finally:
            waiter.close()
        result.measured_s = self._measured_seconds(end_ns, warm_ns)

    def _count_unsent(self, first: Arrival, rest: Iterator[Arrival], end_ns: int, limit: int | None,
                      measured: int) -> int:
        count = 0
        item: Arrival | None = first
        while item is not None and item.offset_ns < end_ns and (limit is None or measured + count < limit):
            count += 1
            item = next(rest, None)
        return count

    def _measured_seconds(self, end_ns: int | None, warm_ns: int) -> float:
        if end_ns is not None:
            return (end_ns - warm_ns) / NS
        elapsed = time.perf_counter_ns() - self._mono0 - warm_ns
        return max(elapsed, 1) / NS

    async def _send(self, batch: list[tuple[Arrival, bool]], result: RunResult) -> int:
        """Stamp, encode and publish ``batch``; returns the sequence number of its last request."""
        spec = self.spec
        now = time.perf_counter_ns()
        sent_wall = self.wall(now)
        bodies = []
        templates = self._templates
        pending = self.pending
        wall0 = self._wall0
        recorder = self.recorder
        for arrival, warmup in batch:
            self._seq += 1
            intended = wall0 + arrival.offset_ns
            size = arrival.payload_size if arrival.payload_size is not None else spec.payload_size
            template = templates.get(size)
            if template is None:
                if len(templates) >= 256:  # a trace with many payload sizes: keep the cache bounded
                    templates.clear()
                payload = spec.payload if spec.payload is not None else payload_text(size)
                template = templates[size] = RequestTemplate(spec.run_id, self.transport.reply_to, spec.workload,
                                                             payload)
            bodies.append(template.encode(self._seq, intended, sent_wall))
            pending[self._seq] = _Pending(intended, sent_wall, warmup)
            if warmup:
                result.warmup_sent += 1
            else:
                result.intended += 1
                recorder.record_sent()
                recorder.record_schedule_lag(intended, sent_wall)
        last = self._seq
        await self.transport.send(bodies)
        return last

    async def _closed_loop(self, concurrency: int, result: RunResult) -> None:
        spec = self.spec
        warm_ns, end_ns = self._window()
        loop = asyncio.get_running_loop()
        budget = [spec.requests]

        async def user() -> None:
            while True:
                offset = time.perf_counter_ns() - self._mono0
                if end_ns is not None and offset >= end_ns:
                    return
                warmup = offset < warm_ns
                if not warmup and budget[0] is not None:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                seq = await self._send([(Arrival(offset), warmup)], result)
                waiter: asyncio.Future[None] = loop.create_future()
                entry = self.pending.get(seq)
                if entry is None:  # answered already
                    continue
                entry.waiter = waiter
                await waiter

        await asyncio.gather(*(user() for _ in range(concurrency)))
        result.measured_s = self._measured_seconds(end_ns, warm_ns)

    # -- replies, timeouts, intervals ----------------------------------------------------------------------------

    def _on_reply(self, body: bytes, received_ns: int) -> None:
        result = self.result
        assert result is not None
        rep = decode_reply(body)
        if isinstance(rep, Malformed):
            result.malformed_replies += 1
            return
        if rep.run != self.spec.run_id:
            result.foreign += 1
            return
        entry = self.pending.pop(rep.seq, None)
        if entry is None:
            result.late += 1
            return
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)
        if entry.warmup:
            return
        if rep.error is not None:
            self.recorder.record_error("worker_error")
            return
        self.recorder.record_reply(entry.intended_ns, entry.sent_ns, received_ns, rep.stamps, rep.batch_size,
                                   rep.device)

    async def _reap(self) -> None:
        timeout_ns = int(self.spec.timeout_s * NS)
        period = min(0.1, self.spec.timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            self._expire(time.time_ns() - timeout_ns)

    def _expire(self, cutoff_wall: int) -> None:
        pending = self.pending
        while pending:
            seq = next(iter(pending))
            entry = pending[seq]
            if entry.sent_ns > cutoff_wall:
                break
            del pending[seq]
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_result(None)
            if not entry.warmup:
                self.recorder.record_error("timeout")

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.spec.timeout_s + 0.5
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._expire(time.time_ns() + NS)  # whatever is left is a timeout

    async def _tick(self, result: RunResult) -> None:
        interval_ns = int(self.spec.interval_s * NS)
        nxt = self._mono0 + interval_ns
        while True:
            await asyncio.sleep(max(nxt - time.perf_counter_ns(), 0) / NS)
            self._roll(result, nxt)
            nxt += interval_ns

    def _roll(self, result: RunResult, until_mono: int) -> None:
        start_s = self.recorder.intervals[-1].end_s if self.recorder.intervals else 0.0
        end_s = (until_mono - self._mono0) / NS
        if end_s <= start_s:
            return
        stats = self.recorder.roll(start_s, end_s)
        result.in_flight = len(self.pending)
        if stats.schedule_lag_p99_us > BEHIND_LAG_US:
            result.behind_intervals += 1
        if self.progress is not None:
            self.progress(stats, result)
