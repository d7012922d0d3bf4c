"""The open-loop engine: send at the intended times without waiting for replies, match replies by id.

One clock: the schedule's intended times, the send and receive times and the timeouts are all on the monotonic
clock (``time.perf_counter_ns``), from one origin; a wall-clock step mid-run moves none of them. Wall-clock ns appear
only where a stamp crosses hosts: the send times written into a request, and the worker's stamps in a reply, which
the cross-host stages (queue wait, reply transit) are measured against.

A warm-up, when asked for, runs *before* the schedule at the schedule's opening rate and is not measured; the
schedule then runs whole, as the report describes it. A request with no reply after ``timeout_s`` is a timeout
(counted, and entered in the end-to-end figures at no less than the timeout); a reply after that is "late"; a second
reply to an answered request is a "duplicate". Sent = replied + errors + timeouts, always. Intended requests the
generator never got to send (it fell behind, or the run was aborted) are counted as ``unsent``, in constant time.

When the broker connection drops (``ConnectionLost``: the transport reconnects by itself), the run keeps its
schedule: what falls due while the broker is away is not sent and counted as ``unsent``, and the outage is recorded
as a gap (from, to, requests not sent) for the report and the live view. An outage longer than ``max_outage_s``
aborts the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from loadgen.aio import quiet_gc
from loadgen.envelope import Chunk, Malformed, RequestTemplate, decode_reply
from loadgen.results.abort_rule import AbortRule, AbortWatch
from loadgen.results.summary import BEHIND_LAG_US, RunRecord
from loadgen.run.precise_wait import precise_wait
from loadgen.run.recorder import IntervalStats, Recorder
from loadgen.run.schedules import NS, ClosedLoop, Due, Schedule, with_warmup
from loadgen.run.spec import COALESCE_S, MAX_COALESCE_S, RunSpec, new_run_id, payload_text
from loadgen.run.streams import Stream, on_chunk
from loadgen.transports.base import Transport
from probes.errors import ConnectionLost, ProbeError

if TYPE_CHECKING:
    from loadgen.run.broker_sampler import BrokerSampler
    from loadgen.run.live_feed import LiveFeed
    from loadgen.run.llm_load import LlmLoad

__all__ = ["COALESCE_S", "MAX_COALESCE_S", "Engine", "RunResult", "RunSpec", "new_run_id", "payload_text"]

MAX_WRITE = 256  # requests per write at most
END_GRACE_NS = 50_000_000  # a request intended inside the window may still go out this late; later = unsent


@dataclass(slots=True)
class Gap:
    """A broker outage during the run: seconds from the run's start, and the requests that fell due meanwhile."""

    from_s: float
    to_s: float | None = None  # None while it lasts
    unsent: int = 0
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"from_s": round(self.from_s, 3), "to_s": None if self.to_s is None else round(self.to_s, 3),
                "unsent": self.unsent, "reason": self.reason}


@dataclass
class RunResult:
    spec: RunSpec
    recorder: Recorder
    started_epoch_s: float
    measured_s: float = 0.0
    intended: int = 0  # measured-window requests the schedule asked for (sent + unsent)
    unsent: int = 0
    foreign: int = 0
    malformed_replies: int = 0
    aborted: str | None = None
    stopped_by_slo: bool = False  # aborted by an --abort-on rule (exit 99), not by the broker (exit 2)
    interrupted: bool = False  # stopped by ``Engine.interrupt`` (Ctrl-C: exit 130), its files written all the same
    behind_intervals: int = 0
    in_flight: int = 0  # requests awaiting a reply at the last interval
    gaps: list[Gap] = field(default_factory=list)
    reconnects: int = 0  # times the transport re-made its broker connection
    broker_samples: dict[str, Any] | None = None  # the request queue sampled at the broker (None: not sampled)

    @property
    def outage(self) -> Gap | None:
        """The broker outage under way, if any."""
        return self.gaps[-1] if self.gaps and self.gaps[-1].to_s is None else None

    @property
    def sent(self) -> int:
        return self.recorder.sent

    @property
    def late(self) -> int:
        return self.recorder.late

    @property
    def duplicates(self) -> int:
        return self.recorder.duplicates

    @property
    def warmup_sent(self) -> int:
        return self.recorder.warmup_sent

    @property
    def target_rate(self) -> float:
        return self.intended / self.measured_s if self.measured_s else 0.0

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.measured_s if self.measured_s else 0.0

    def record(self, *, broker: str, broker_kind: str) -> RunRecord:
        """The run's figures as plain data for ``loadgen.results.summary.build_summary``."""
        rec = self.recorder
        rec.flush()
        counts = {"intended": self.intended, "sent": rec.sent, "replied": rec.replied, "errors": rec.error_count,
                  "timeouts": rec.timeouts, "unsent": self.unsent, "late": rec.late, "duplicates": rec.duplicates,
                  "foreign": self.foreign, "malformed_replies": self.malformed_replies,
                  "warmup_sent": rec.warmup_sent}
        return RunRecord(facts=self.spec.facts(), broker=broker, broker_kind=broker_kind,
                         started_epoch_s=self.started_epoch_s, measured_s=self.measured_s, counts=counts,
                         errors_by_kind=dict(rec.errors), stages=dict(rec.total),
                         out_of_range=dict(rec.out_of_range), clamped=dict(rec.clamped), skewed=dict(rec.skewed),
                         timeouts_by_stage=dict(rec.timeouts_by_stage), batch_sizes=dict(rec.batch_sizes),
                         devices=dict(rec.devices), workers=dict(rec.workers),
                         behind_intervals=self.behind_intervals, aborted=self.aborted,
                         planned_s=self.spec.duration_s if self.aborted is not None else None,
                         gaps=[gap.as_dict() for gap in self.gaps], reconnects=self.reconnects,
                         service_by_batch={size: tuple(sums) for size, sums in rec.service_by_batch.items()},
                         broker_samples=self.broker_samples, llm=rec.llm_record(), gpu=rec.gpu.record())


@dataclass(slots=True)
class _Pending:
    intended_ns: int  # monotonic
    sent_ns: int  # monotonic
    warmup: bool
    waiter: asyncio.Future[None] | None = None
    input_tokens: int = 0  # LLM-shaped load: the prompt length the request carried
    stream: Stream | None = None  # a streamed reply in progress (loadgen.run.streams)


class _SeqBits:
    """One bit per sequence number (timed out or not): 125 kB per million requests, so a late reply (for a request
    that timed out) is told from a duplicate (for one already answered) over any run length."""

    __slots__ = ("bits",)

    def __init__(self) -> None:
        self.bits = bytearray()

    def add(self, seq: int) -> None:
        byte = seq >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(max(byte + 1 - len(self.bits), 4096)))
        self.bits[byte] |= 1 << (seq & 7)

    def __contains__(self, seq: int) -> bool:
        byte = seq >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (1 << (seq & 7)))


ProgressFn = Callable[[IntervalStats, RunResult], None]


class Engine:
    def __init__(self, transport: Transport, spec: RunSpec, *, progress: ProgressFn | None = None,
                 started: Callable[[], None] | None = None, abort_on: Sequence[AbortRule] = (),
                 sampler: BrokerSampler | None = None, live: LiveFeed | None = None,
                 llm: LlmLoad | None = None) -> None:
        self.transport, self.spec, self.progress, self.started = transport, spec, progress, started
        self.sampler = sampler  # samples the request queue at the broker on the interval ticks (broker_sampler.py)
        self.live = live  # the run's live feed: one line per interval (live_feed.py)
        self.recorder = Recorder()
        self.llm = llm  # LLM-shaped load: token lengths per request, objectives (loadgen.run.llm_load)
        if llm is not None:
            self.recorder.llm_configure(llm.objectives, llm.facts())
        self._watch = AbortWatch(abort_on) if abort_on else None
        self._stop: str | None = None  # why an --abort-on rule stopped the run
        self._interrupted = False  # the stop came from ``interrupt`` (Ctrl-C), not from an --abort-on rule
        if self._watch is not None or live is not None:
            self.recorder.on_interval = self._on_interval
        self.pending: dict[int, _Pending] = {}
        self.timed_out = _SeqBits()
        self._seq = 0
        self._templates: dict[int, RequestTemplate] = {}  # by payload size
        self._mono0 = 0
        self._wall0 = 0
        self._timeout_ns = int(spec.timeout_s * NS)
        self.result: RunResult | None = None

    def _on_interval(self, stats: IntervalStats, histograms: Mapping[str, HdrHistogram]) -> None:
        """The interval's own histograms, before the recorder resets them: the --abort-on rules, the live feed."""
        if self._watch is not None and self._stop is None:
            self._stop = self._watch.check(stats.start_s, stats.end_s, histograms, stats.sent, stats.errors,
                                           stats.timeouts)
        if self.live is not None:
            self.live.capture(stats, histograms)

    def stop(self, reason: str) -> None:
        """End the run early, as a breached ``--abort-on`` rule does: nothing more is sent (the rest of the schedule
        is unsent), replies in flight are awaited, and ``reason`` is the run's ``aborted``. The first reason stays."""
        if self._stop is None:
            self._stop = reason

    def interrupt(self, reason: str = "interrupted (Ctrl-C)") -> None:
        """Stop as ``stop`` does, for the user (Ctrl-C, SIGINT): the run says ``interrupted``, not an SLO breach."""
        if self._stop is None:
            self._stop, self._interrupted = reason, True

    def _stopped(self, result: RunResult) -> bool:
        """An --abort-on rule has been breached long enough, or the user interrupted the run: it ends (what it did
        not send is unsent)."""
        if self._stop is None:
            return False
        result.aborted = self._stop
        result.stopped_by_slo, result.interrupted = not self._interrupted, self._interrupted
        return True

    def wall(self, mono_ns: int) -> int:
        """Wall-clock ns for a monotonic time of this run (for stamps that cross hosts)."""
        return self._wall0 + (mono_ns - self._mono0)

    async def run(self, out_dir: str | None = None, *, csv_path: Path | None = None) -> RunResult:
        """Run the spec; ``out_dir``: write the interval logs there; ``csv_path``: the per-interval CSV."""
        with quiet_gc():
            return await self._run(out_dir, csv_path)

    async def _run(self, out_dir: str | None, csv_path: Path | None) -> RunResult:
        spec = self.spec
        self._mono0 = time.perf_counter_ns()
        self._wall0 = time.time_ns()
        result = self.result = RunResult(spec=spec, recorder=self.recorder, started_epoch_s=self._wall0 / NS)
        if out_dir is not None:
            self.recorder.open_logs(Path(out_dir), self._wall0 / NS)
        if csv_path is not None:
            self.recorder.open_csv(csv_path, self.sampler.figures_for if self.sampler is not None else None)
        ticker = reaper = None
        try:
            await self.transport.start(self._on_reply)  # a broker that cannot be reached at all: the error itself
        except BaseException:
            self.recorder.close_logs()
            with contextlib.suppress(ProbeError):
                await self.transport.aclose()
            raise
        if self.started is not None:
            self.started()
        if self.sampler is not None:
            self.sampler.start(self._mono0, *self._window())
        try:
            try:
                ticker = asyncio.create_task(self._tick(result))
                reaper = asyncio.create_task(self._reap())
                if isinstance(spec.schedule, ClosedLoop):
                    await self._closed_loop(spec.schedule.concurrency, result)
                else:
                    await self._open_loop(spec.schedule, result)
            except ProbeError as exc:
                result.aborted = str(exc)
                self._measure_until_now(result)
            await self._drain()
        finally:
            for task in (ticker, reaper):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self._roll(result, time.perf_counter_ns())
            self.recorder.close_logs()
            if self.sampler is not None:
                result.broker_samples = await self.sampler.stop(result.measured_s or None)
            result.reconnects = int(getattr(self.transport, "reconnects", 0))
            with contextlib.suppress(ProbeError):
                await self.transport.aclose()
        return result

    # -- sending -------------------------------------------------------------------------------------------------

    def _window(self) -> tuple[int, int | None]:
        """The measured window [warm, end) in ns from the run's start (end None: until the request count)."""
        spec = self.spec
        warm = int(spec.warmup_s * NS)
        end = warm + int(spec.duration_s * NS) if spec.duration_s is not None else None
        return warm, end

    async def _open_loop(self, schedule: Schedule, result: RunResult) -> None:
        spec = self.spec
        warm_ns, end_ns = self._window()
        limit = spec.requests
        mono0 = self._mono0
        coalesce_ns = int(spec.coalesce_s * NS)
        arrivals = with_warmup(schedule, spec.seed, warm_ns)
        nxt = next(arrivals, None)
        waiter = precise_wait(asyncio.get_running_loop())
        measured = 0  # measured arrivals taken from the schedule
        try:
            while nxt is not None:
                now = time.perf_counter_ns() - mono0
                if (end_ns is not None and now >= end_ns + END_GRACE_NS) or self._stopped(result):
                    self._count_unsent(schedule, result, measured)  # out of time, or stopped: never sent
                    break
                # One write: this arrival and those due within the coalescing window after it (or all those already
                # due, when behind), sent when the last of them is due. Each write and each timer wake-up costs
                # tens of µs of CPU here, in the broker and in the worker: at thousands of requests/s one per
                # request costs more than the requests. The wait is recorded as schedule lag; arrivals further
                # apart than the window go out alone, on time.
                horizon = max(nxt[0] + coalesce_ns, now)
                batch: list[Due] = []
                while nxt is not None and nxt[0] <= horizon and len(batch) < MAX_WRITE:
                    offset, _size, warmup = nxt
                    if end_ns is not None and offset >= end_ns:
                        break
                    if not warmup:
                        if limit is not None and measured >= limit:
                            break
                        measured += 1
                    batch.append(nxt)
                    nxt = next(arrivals, None)
                if not batch:  # the next arrival is past the window's end, or the request count is reached
                    break
                await waiter.until(mono0 + batch[-1][0])
                try:
                    await self._send(batch, result)
                except ProbeError:
                    self._count_unsent(schedule, result, measured - sum(1 for _o, _s, w in batch if not w))
                    raise
        finally:
            waiter.close()
        result.measured_s = self._measured_seconds(end_ns, warm_ns)

    def _count_unsent(self, schedule: Schedule, result: RunResult, taken: int) -> None:
        """Every measured arrival of the window from the ``taken``-th on was never sent (constant time)."""
        spec = self.spec
        total = schedule.count_before(int(spec.duration_s * NS)) if spec.duration_s is not None else taken
        if spec.requests is not None:
            total = min(total, spec.requests) if spec.duration_s is not None else spec.requests
        never = max(total - taken, 0)
        result.unsent += never
        result.intended += never

    def _measured_seconds(self, end_ns: int | None, warm_ns: int) -> float:
        if end_ns is not None and self.result is not None and self.result.aborted is None:
            return (end_ns - warm_ns) / NS
        elapsed = time.perf_counter_ns() - self._mono0 - warm_ns
        if end_ns is not None:
            elapsed = min(elapsed, end_ns - warm_ns)
        return max(elapsed, 1) / NS

    def _measure_until_now(self, result: RunResult) -> None:
        """An aborted run measured what it ran of its window: its rates are per second of that."""
        warm_ns, end_ns = self._window()
        if not result.measured_s:
            result.measured_s = self._measured_seconds(end_ns, warm_ns)

    async def _send(self, batch: list[Due], result: RunResult) -> None:
        """Stamp, encode and publish ``batch``. On a failed write nothing of it counts as sent."""
        spec = self.spec
        now = time.perf_counter_ns()
        sent_wall = self.wall(now)
        bodies = []
        templates = self._templates
        pending = self.pending
        mono0, wall0 = self._mono0, self._wall0
        first = seq = self._seq + 1
        for offset, size, warmup in batch:
            self._seq = seq
            if size is None:
                size = spec.payload_size
            template = templates.get(size)
            if template is None:
                if len(templates) >= 256:  # a trace with many payload sizes: keep the cache bounded
                    templates.clear()
                payload = spec.payload if spec.payload is not None else payload_text(size)
                template = templates[size] = RequestTemplate(spec.run_id, self.transport.reply_to, spec.workload,
                                                             payload)
            if self.llm is None:
                bodies.append(template.encode(seq, wall0 + offset, sent_wall))
                pending[seq] = _Pending(mono0 + offset, now, warmup)
            else:
                n_in, n_out = self.llm.next_lengths()
                bodies.append(template.encode_llm(seq, wall0 + offset, sent_wall, n_in, n_out))
                pending[seq] = _Pending(mono0 + offset, now, warmup, input_tokens=n_in)
            seq += 1
        try:
            await self.transport.send(bodies)
        except ProbeError as exc:
            for seq in range(first, self._seq + 1):
                pending.pop(seq, None)
            if not isinstance(exc, ConnectionLost):
                raise
            self._unconfirmed()
            self._outage(result, batch, now, exc)
            return
        if result.gaps and result.gaps[-1].to_s is None:
            result.gaps[-1].to_s = (now - mono0) / NS
        recorder = self.recorder
        measured = [mono0 + offset for offset, _size, warmup in batch if not warmup]
        if len(measured) < len(batch):
            recorder.record_warmup_sent(len(batch) - len(measured))
        if measured:
            result.intended += len(measured)
            recorder.record_schedule_lags(measured, now)

    def _unconfirmed(self) -> None:
        """Requests the transport wrote just before its connection dropped and the broker never confirmed (it may
        never have got them): the newest that many in flight end now, as ``not_confirmed`` errors; a reply that comes
        for one all the same counts as late."""
        take = getattr(self.transport, "take_unconfirmed", None)
        n = take() if take is not None else 0
        if not n:
            return
        for seq in sorted(self.pending, reverse=True)[:n]:
            entry = self.pending.pop(seq)
            self.timed_out.add(seq)
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_result(None)
            if not entry.warmup:
                self.recorder.record_error("not_confirmed")

    def _outage(self, result: RunResult, batch: list[Due], now: int, exc: ProbeError) -> None:
        """The broker is away: ``batch`` was not sent (its measured requests are unsent); abort past max_outage_s."""
        at_s = (now - self._mono0) / NS
        gap = result.outage
        if gap is None:
            gap = Gap(from_s=at_s, reason=str(exc))
            result.gaps.append(gap)
        if at_s - gap.from_s > self.spec.max_outage_s:  # this batch and the rest are counted unsent by the caller
            gap.to_s = at_s
            raise ProbeError(f"the broker was unreachable for more than {self.spec.max_outage_s:g} s: {exc}")
        missed = sum(1 for _o, _s, warmup in batch if not warmup)
        gap.unsent += missed
        result.unsent += missed
        result.intended += missed

    async def _closed_loop(self, concurrency: int, result: RunResult) -> None:
        spec = self.spec
        warm_ns, end_ns = self._window()
        loop = asyncio.get_running_loop()
        budget = [spec.requests]

        async def user() -> None:
            while True:
                offset = time.perf_counter_ns() - self._mono0
                if (end_ns is not None and offset >= end_ns) or self._stopped(result):
                    return
                warmup = offset < warm_ns
                if not warmup and budget[0] is not None:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                await self._send([(offset, None, warmup)], result)
                if result.outage is not None:  # not sent: the broker is away; try again shortly
                    await asyncio.sleep(0.05)
                    continue
                entry = self.pending.get(self._seq)
                if entry is None:  # answered already
                    continue
                waiter: asyncio.Future[None] = loop.create_future()
                entry.waiter = waiter
                await waiter

        users = [asyncio.create_task(user(), name=f"qdeck-user-{i}") for i in range(concurrency)]
        try:
            await asyncio.gather(*users)
        finally:  # one user's failure (the broker went away) ends the others, and every outcome is observed
            for task in users:
                task.cancel()
            await asyncio.gather(*users, return_exceptions=True)
        result.measured_s = self._measured_seconds(end_ns, warm_ns)

    # -- replies, timeouts, intervals ----------------------------------------------------------------------------

    def _on_reply(self, body: bytes, received_ns: int) -> None:
        result = self.result
        assert result is not None
        rep = decode_reply(body)
        if isinstance(rep, Malformed):
            result.malformed_replies += 1
            return
        if isinstance(rep, Chunk):  # a streamed reply's chunk (envelope version 2)
            on_chunk(self, rep, received_ns)
            return
        if rep.run != self.spec.run_id:
            result.foreign += 1
            return
        entry = self.pending.pop(rep.seq, None)
        if entry is None:
            if rep.seq in self.timed_out:
                self.recorder.record_late()
            elif 0 < rep.seq <= self._seq:
                self.recorder.record_duplicate()
            else:
                result.foreign += 1  # our run id, a sequence number never sent: not ours to count
            return
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)
        if entry.warmup:
            return
        if rep.gpu is not None:  # the worker's latest GPU sample (loadgen.results.gpu_intervals)
            self.recorder.gpu.add(rep.worker, rep.gpu)
        if rep.error is not None:
            self.recorder.record_error("worker_error")
            return
        self.recorder.record_reply(entry.intended_ns, entry.sent_ns, received_ns, rep.stamps, rep.batch_size,
                                   rep.device, self._wall0 - self._mono0, rep.model)

    async def _reap(self) -> None:
        period = min(0.1, self.spec.timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            self._unconfirmed()
            self._expire(time.perf_counter_ns() - self._timeout_ns)

    def _expire(self, cutoff_ns: int, *, reason: str | None = None) -> None:
        """Requests sent at or before ``cutoff_ns`` (monotonic) with no reply: timeouts, or ``reason`` errors."""
        pending = self.pending
        while pending:
            seq = next(iter(pending))
            entry = pending[seq]
            if entry.sent_ns > cutoff_ns:
                break
            del pending[seq]
            if entry.waiter is not None and not entry.waiter.done():
                entry.waiter.set_result(None)
            self.timed_out.add(seq)
            if entry.warmup:
                continue
            if reason is None:
                self.recorder.record_timeout(entry.intended_ns, entry.sent_ns, self._timeout_ns)
                if entry.stream is not None or self.recorder.llm_active:
                    self.recorder.record_stream_timeout(entry.intended_ns, entry.sent_ns, self._timeout_ns,
                                                        entry.stream)
            else:
                self.recorder.record_error(reason)

    async def _drain(self) -> None:
        """Wait for the replies still due, up to the timeout; stop at once when the replies can no longer come."""
        deadline = time.perf_counter_ns() + self._timeout_ns + NS // 2
        while self.pending and time.perf_counter_ns() < deadline:
            if self.transport.failure() is not None:
                self._expire(time.perf_counter_ns() + NS, reason="reply_lost")
                return
            self._expire(time.perf_counter_ns() - self._timeout_ns)
            await asyncio.sleep(0.02)
        self._expire(time.perf_counter_ns() + NS)  # whatever is left waited the whole timeout: a timeout

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
        if self.live is not None:
            self.live.interval(stats, result)
