"""The worker loop: dynamic batching (up to N requests or T ms), the model in a thread, replies with stage stamps.

A batch is formed only when a model slot is free (``concurrency`` slots), so under saturation the backlog turns into
full batches, and under light load a lone request waits at most ``max_wait``. A model exception fails only its batch:
each request of it is retried alone (so one poison input does not sink its neighbours) until ``max_attempts``; a request
that still fails gets an error reply and a dead-letter record with the reason. Malformed messages go straight to the
dead-letter destination. A reply the broker refuses becomes a dead letter (the source decides, see source.py), and
a request is acknowledged only once its reply or dead letter is durable. On stop (SIGTERM) the batches in hand are
finished, replied to and acknowledged; messages received but not yet batched are released to the broker.

A model that streams (``streaming = True``: ``llm-synthetic``) is served by ``loadgen.worker.stream_serve``
instead: continuous batching, its chunks published as they are made.

No task's failure goes unobserved: a batch whose handling fails unexpectedly is counted (``task_failures``) and
logged in one line, its requests are left unacknowledged (the broker delivers them again), and serving goes on.

GPU telemetry (``loadgen.worker.gpu_telemetry``) samples NVML on its own thread while the worker runs; each reply
carries the latest sample, read once per batch as its replies are encoded (no NVML call on the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from loadgen.envelope import Malformed, Reply, Request, Stamps, decode_request, encode_reply
from loadgen.gpu_sample import GpuSample
from loadgen.worker.gpu_telemetry import NVML_MODULE, GpuSampler
from loadgen.worker.metrics import MetricsReporter
from loadgen.worker.models import Model
from loadgen.worker.source import DeadLetter, Delivery, Outgoing, Settlement, Source, exception_text
from probes.errors import BrokerUnreachable, ProbeError

T = TypeVar("T")

RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0
POLL_SLICE_S = 0.25  # how long one idle fetch waits, so a stop is noticed promptly


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    max_batch: int = 16
    max_wait_s: float = 0.005
    concurrency: int = 1
    max_attempts: int = 2
    metrics_interval_s: float = 10.0
    gpu_interval_s: float = 1.0  # NVML read every this many seconds; 0: GPU telemetry off
    nvml_module: str = NVML_MODULE  # for tests: a stand-in with pynvml's functions (pkg.mod or pkg.mod:attr)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max-batch must be at least 1")
        if self.max_wait_s < 0:
            raise ValueError("max-wait must not be negative")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max-attempts must be at least 1")
        if not (self.gpu_interval_s == 0 or 0.01 <= self.gpu_interval_s <= 3600):
            raise ValueError("gpu-interval must be 0 (off) or between 0.01 and 3600 seconds")


@dataclass(slots=True)
class _Item:
    delivery: Delivery
    request: Request


@dataclass(slots=True)
class _Answer:
    """A request's outcome, encoded only once the model slot is free."""

    item: _Item
    formed: int
    start: int
    end: int
    size: int
    output: Any
    error: str | None

    def encode(self, worker: str, device: str, published: int, profile: str = "",
               gpu: GpuSample | None = None) -> bytes:
        req = self.item.request
        stamps = Stamps(self.item.delivery.dequeued_ns, self.formed, self.start, self.end, published)
        return encode_reply(Reply(run=req.run, seq=req.seq, worker=worker, device=device, batch_size=self.size,
                                  stamps=stamps, output=self.output, error=self.error, model=profile, gpu=gpu))


def profile(model_spec: str, config: WorkerConfig) -> str:
    """What a reply says of the worker that made it: its model and batching (what ``load compare`` checks)."""
    return (f"{model_spec}, batch ≤ {config.max_batch}, wait {config.max_wait_s * 1000:g}ms, "
            f"×{config.concurrency}")


class Worker:
    def __init__(self, source: Source, model: Model, config: WorkerConfig, *, worker_id: str,
                 metrics: MetricsReporter, model_spec: str | None = None, gpu: GpuSampler | None = None) -> None:
        self.source, self.model, self.config = source, model, config
        self.worker_id = worker_id
        self.profile = profile(model_spec or model.name, config)
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="qdeck-model")
        self._tasks: set[asyncio.Task[None]] = set()
        self._ahead: asyncio.Task[list[Delivery]] | None = None
        self.gpu = gpu or GpuSampler(config.gpu_interval_s, metrics.note, module=config.nvml_module)
        metrics.gpu = self.gpu.take_interval

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, GPU telemetry sampling meanwhile."""
        self.gpu.start()
        try:
            await self._serve(stop)
        finally:
            self.gpu.stop()

    async def warmup(self) -> None:
        """Warm the model on the thread that will run it. An OpenMP runtime (torch's libgomp) keeps one thread team
        per calling thread; a warm-up on another thread leaves a second, idle team behind, and with more OpenMP
        threads than cores libgomp stops spin-waiting between operations, which cost the model ~25 % on 2 cores."""
        await self._on_model_thread(self.model.warmup)

    async def _serve(self, stop: asyncio.Event) -> None:
        if getattr(self.model, "streaming", False):
            await self._serve_streams(stop)
            return
        slots = asyncio.Semaphore(self.config.concurrency)
        ticker = asyncio.create_task(self._tick(stop))
        try:
            while not stop.is_set():
                await slots.acquire()
                try:
                    batch = await self._form_batch(stop)
                except BrokerUnreachable as exc:  # the connection dropped: reconnect, then serve on
                    slots.release()
                    await self._recover(exc, stop)
                    continue
                except BaseException:
                    slots.release()
                    raise
                if not batch:
                    slots.release()
                    continue
                self._dispatch(batch, slots)
                if slots.locked() and not stop.is_set():
                    # Every model slot is busy: read the next batch's first requests now, so the broker round trip
                    # overlaps inference instead of following it (taken = stamped when the batch forms).
                    self._ahead = asyncio.create_task(self.source.fetch(self.config.max_batch, POLL_SLICE_S))
            if self._ahead is not None:  # received before the stop: in hand, so answered
                staged, self._ahead = await self._ahead, None
                if staged:
                    await slots.acquire()
                    self._dispatch(self._restamp(staged), slots)
            leftover = await self.source.stop_fetching()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)  # each failure is counted by _observe
            if leftover:
                await self.source.release(leftover)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if self._ahead is not None:
                self._ahead.cancel()
                self._ahead.add_done_callback(_retrieve)  # a fetch that failed as the worker stopped: said above
            self._executor.shutdown(wait=True)

    async def _serve_streams(self, stop: asyncio.Event) -> None:
        from loadgen.worker.stream_serve import StreamingModel, StreamServer

        try:
            await StreamServer(self, cast(StreamingModel, self.model)).run(stop)
        finally:
            self._executor.shutdown(wait=True)

    async def _recover(self, exc: ProbeError, stop: asyncio.Event) -> None:
        """One line when the broker link drops, one when it is back; in between, reconnect with a bounded backoff
        (×2 from 0.1 s to 5 s). Batches in progress settle or fail on their own (a failed one is delivered again)."""
        if self._ahead is not None:  # a read ahead taken over the dead link: what it got is the broker's again
            ahead, self._ahead = self._ahead, None
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ahead
            if not ahead.cancelled() and ahead.exception() is None and ahead.result():
                with contextlib.suppress(ProbeError):
                    await self.source.release(ahead.result())
        lost_at = said_at = time.monotonic()
        self.metrics.counters.reconnects += 1
        self.metrics.note("broker lost", f"lost the broker: {exception_text(exc)}; reconnecting",
                          reason=exception_text(exc))
        delay = RECONNECT_FIRST_S
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                await self.source.reconnect()
            except ProbeError as again:
                delay = min(delay * 2, RECONNECT_MAX_S)
                last = exception_text(again)
                if time.monotonic() - said_at > RECONNECT_MAX_S * 12:  # once a minute while it lasts
                    self.metrics.note("broker still away", f"the broker is still away: {last}", reason=last)
                    said_at = time.monotonic()
                continue
            self.metrics.note("broker back", f"the broker is back after {time.monotonic() - lost_at:.1f} s; "
                              "serving again", after_s=round(time.monotonic() - lost_at, 3))
            return

    def _dispatch(self, batch: list[Delivery], slots: asyncio.Semaphore) -> None:
        task = asyncio.create_task(self._handle(batch, slots, time.time_ns()))
        self._tasks.add(task)
        task.add_done_callback(self._observe)

    def _observe(self, task: asyncio.Task[None]) -> None:
        """A batch task ended: a failure is counted and said in one line, never left for the garbage collector."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.metrics.counters.task_failures += 1
            self.metrics.warning(f"a batch failed and was not acknowledged (its requests will be delivered again): "
                                 f"{exception_text(exc)}")

    @staticmethod
    def _restamp(batch: list[Delivery]) -> list[Delivery]:
        now = time.time_ns()
        for d in batch:
            d.dequeued_ns = now
        return batch

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.metrics_interval_s)
            self.metrics.emit()

    async def _form_batch(self, stop: asyncio.Event) -> list[Delivery]:
        cfg = self.config
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            batch = self._restamp(await ahead)
        else:
            batch = await self.source.fetch(cfg.max_batch, POLL_SLICE_S)
        if not batch:
            return batch
        deadline = time.monotonic() + cfg.max_wait_s
        while len(batch) < cfg.max_batch and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch += await self.source.fetch(cfg.max_batch - len(batch), remaining)
        return batch

    async def _handle(self, batch: list[Delivery], slot: asyncio.Semaphore, formed: int) -> None:
        """Run one batch. The model slot is released as soon as inference ends, so the next batch forms while
        this one's replies are published and acknowledged."""
        try:
            try:
                answers, dead = await self._run_batch(batch, formed)
            finally:
                slot.release()
            replies = self._encode(answers, dead)
        except Exception:
            with contextlib.suppress(Exception):  # never settled: back to the broker now, not after a timeout
                await self.source.release(batch)
            raise
        self._count(await self.source.settle(replies, dead, batch))

    def _encode(self, answers: list[_Answer], dead: list[DeadLetter]) -> list[Outgoing]:
        published = time.time_ns()  # replies are encoded here, after the slot is free, and published next
        gpu = self.gpu.latest  # the latest GPU sample, read by the sampler's thread
        replies: list[Outgoing] = []
        for a in answers:
            try:
                body = a.encode(self.worker_id, self.model.device, published, self.profile, gpu)
            except (TypeError, ValueError) as exc:  # an output JSON cannot write: the request fails, not the batch
                reason = f"model output cannot be encoded: {exception_text(exc)}"[:500]
                self.metrics.counters.errors += 1
                dead.append(DeadLetter(a.item.delivery, reason, attempts=1))
                a.output, a.error = None, reason
                body = a.encode(self.worker_id, self.model.device, published, self.profile, gpu)
            replies.append(Outgoing(a.item.delivery, a.item.request.reply_to, body))
        return replies

    def _count(self, settled: Settlement) -> None:
        c = self.metrics.counters
        c.dead_lettered += settled.dead_lettered
        c.reply_failures += settled.reply_failures
        c.held += settled.held
        for line in settled.problems:
            self.metrics.warning(line)

    async def _run_batch(self, batch: list[Delivery], formed: int) -> tuple[list[_Answer], list[DeadLetter]]:
        counters = self.metrics.counters
        counters.batches += 1
        counters.items += len(batch)
        counters.batched += len(batch)
        dead: list[DeadLetter] = []
        items: list[_Item] = []
        for d in batch:
            decoded = Malformed(d.problem) if d.problem else decode_request(d.body)
            if isinstance(decoded, Malformed):
                counters.malformed += 1
                dead.append(DeadLetter(d, f"malformed request: {decoded.reason}", attempts=1))
            else:
                items.append(_Item(d, decoded))
        answers: list[_Answer] = []
        if items:
            answers = await self._infer(items, formed, dead)
        return answers, dead

    async def _infer(self, items: list[_Item], formed: int, dead: list[DeadLetter]) -> list[_Answer]:
        size = len(items)
        start = time.time_ns()
        try:
            outputs = await self._call_model([i.request.payload for i in items])
            if len(outputs) != size:
                raise ValueError(f"model returned {len(outputs)} outputs for {size} inputs")
        except Exception as exc:  # the model's failure fails this batch only
            if size == 1 and self.config.max_attempts == 1:
                return [self._failed(items[0], formed, start, time.time_ns(), exc, 1, dead)]
            return await self._retry_alone(items, formed, exc, dead)
        end = time.time_ns()
        return [self._reply(i, formed, start, end, size, output=o) for i, o in zip(items, outputs, strict=True)]

    async def _retry_alone(self, items: list[_Item], formed: int, first: Exception,
                           dead: list[DeadLetter]) -> list[_Answer]:
        """After a batch failure, try each request alone (attempts 2..max); the ones that keep failing are given up."""
        out: list[_Answer] = []
        for item in items:
            error: Exception = first
            attempt = 1
            answered = False
            while attempt < self.config.max_attempts:
                attempt += 1
                start = time.time_ns()
                try:
                    result = await self._call_model([item.request.payload])
                    if len(result) != 1:
                        raise ValueError(f"model returned {len(result)} outputs for 1 input")
                except Exception as exc:
                    error = exc
                    continue
                out.append(self._reply(item, formed, start, time.time_ns(), 1, output=result[0]))
                answered = True
                break
            if not answered:
                now = time.time_ns()
                out.append(self._failed(item, formed, now, now, error, attempt, dead))
        return out

    async def _call_model(self, inputs: list[Any]) -> list[Any]:
        return await self._on_model_thread(self.model.infer, inputs)

    async def _on_model_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """In the model thread, unless the model says it never blocks (echo): then a thread hop would be the
        largest cost of the batch and would blur the broker path it exists to measure."""
        if getattr(self.model, "blocking", True):
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        return fn(*args)

    def _failed(self, item: _Item, formed: int, start: int, end: int, exc: Exception, attempts: int,
                dead: list[DeadLetter]) -> _Answer:
        reason = f"model error after {attempts} attempt{'s' if attempts > 1 else ''}: {type(exc).__name__}: {exc}"
        reason = reason[:500]
        self.metrics.counters.errors += 1
        dead.append(DeadLetter(item.delivery, reason, attempts))
        return self._reply(item, formed, start, end, 1, error=reason)

    @staticmethod
    def _reply(item: _Item, formed: int, start: int, end: int, size: int, *, output: Any = None,
               error: str | None = None) -> _Answer:
        return _Answer(item, formed, start, end, size, output, error)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
