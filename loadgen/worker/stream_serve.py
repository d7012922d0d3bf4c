"""The worker's loop for a model that streams (``llm-synthetic``): continuous batching, a chunk per step.

The model runs its own engine (``start``/``submit``/``room``); the worker takes requests from the broker only while
the model has room, so a backlog waits in the broker (visible as queue depth), not in the worker. Each step's chunks
are encoded at once (envelope version 2) and published in order through the source's reply path (``settle`` with no
acknowledgement for the chunks of a stream still running); a stream's final chunk is published with its request's
acknowledgement, so a request is acknowledged only once its last chunk is durable (house rule 15). A model failure
ends every stream it held with an error chunk and a dead-letter record. On stop the running streams are finished
and acknowledged; requests received but not yet taken are released to the broker.

Every metrics interval adds one ``llm_metrics`` line: active sequences, decode steps, their mean batch (sequences
per step), output tokens/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from loadgen.envelope import Chunk, Malformed, Request, Stamps, decode_request, encode_chunk
from loadgen.worker.source import DeadLetter, Delivery, Outgoing, exception_text
from probes.errors import BrokerUnreachable, ProbeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from loadgen.worker.core import Worker
    from loadgen.worker.models.llm_synthetic import StepOutput

POLL_SLICE_S = 0.25


class StreamingModel(Protocol):
    name: str
    device: str

    def start(self, emit: Callable[[StepOutput], None]) -> None: ...

    def submit(self, key: int, input_tokens: int, max_tokens: int) -> None: ...

    def room(self) -> int: ...

    def held(self) -> int: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class _Live:
    delivery: Delivery
    request: Request
    parts: int = 0


@dataclass(slots=True)
class _Publish:
    replies: list[Outgoing] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    done: list[Delivery] = field(default_factory=list)


@dataclass(slots=True)
class _Figures:
    steps: int = 0
    batch_sum: int = 0
    tokens: int = 0


class StreamServer:
    def __init__(self, worker: Worker, model: StreamingModel) -> None:
        self.worker, self.model = worker, model
        self.source, self.config, self.metrics = worker.source, worker.config, worker.metrics
        self._live: dict[int, _Live] = {}
        # a model that takes the whole request (a user's generator function sees the payload), looked up once
        self._submit_request: Callable[[int, Request], None] | None = getattr(model, "submit_request", None)
        self._broken: set[int] = set()  # id() of the deliveries whose streams lost chunks to a failed publish
        self._key = 0
        self._out: asyncio.Queue[_Publish | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._drained = asyncio.Event()
        self._figures = _Figures()
        self._last = (_Figures(), time.monotonic())

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        publisher = asyncio.create_task(self._publish())
        ticker = asyncio.create_task(self._tick(stop))

        def emit(step: StepOutput) -> None:  # on the model's engine thread
            loop.call_soon_threadsafe(self._on_step, step)

        self.model.start(emit)
        try:
            while not stop.is_set():
                room = self.model.room()
                if room <= 0:
                    self._room.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room.wait(), POLL_SLICE_S)
                    continue
                try:
                    batch = await self.source.fetch(min(room, self.config.max_batch), POLL_SLICE_S)
                except BrokerUnreachable as exc:
                    await self.worker._recover(exc, stop)
                    continue
                self._take(batch)
            leftover = await self.source.stop_fetching()
            if self._live:  # the streams in hand are finished and acknowledged
                self._drained.clear()
                await self._drained.wait()
            await self._out.put(None)
            await publisher
            if leftover:
                await self.source.release(leftover)
        finally:
            self.model.close()
            for task in (ticker, publisher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _take(self, batch: list[Delivery]) -> None:
        counters = self.metrics.counters
        counters.items += len(batch)
        for d in batch:
            decoded = Malformed(d.problem) if d.problem else decode_request(d.body)
            if isinstance(decoded, Malformed):
                counters.malformed += 1
                self._out.put_nowait(_Publish(dead=[DeadLetter(d, f"malformed request: {decoded.reason}", 1)],
                                              done=[d]))
                continue
            self._key += 1
            self._live[self._key] = _Live(d, decoded)
            if self._submit_request is not None:
                self._submit_request(self._key, decoded)
            else:
                self.model.submit(self._key, decoded.input_tokens, decoded.max_tokens)

    def _on_step(self, step: StepOutput) -> None:
        """On the event loop: one step's chunks, encoded and queued for publishing in order."""
        published = time.time_ns()
        out = _Publish()
        fig = self._figures
        fig.steps += 1
        fig.batch_sum += step.batch
        self.metrics.counters.batches += 1  # a decode step is the streaming model's batch
        self.metrics.counters.batched += step.batch
        w = self.worker
        for ev in step.events:
            live = self._live.pop(ev.key) if ev.final else self._live.get(ev.key)
            if live is None:
                continue
            req = live.request
            fig.tokens += ev.tokens
            stamps = (Stamps(live.delivery.dequeued_ns, ev.joined_ns, ev.joined_ns, step.end_ns, published)
                      if ev.first or ev.final else None)
            chunk = Chunk(req.run, req.seq, live.parts, ev.tokens, ev.final, w.worker_id, self.model.device,
                          step.batch, stamps, step.error, w.profile if ev.final else "",
                          gpu=w.gpu.latest if ev.final else None)  # the latest GPU sample, on final chunks
            live.parts += 1
            out.replies.append(Outgoing(live.delivery, req.reply_to, encode_chunk(chunk)))
            if ev.final:
                out.done.append(live.delivery)
                if step.error is not None:
                    self.metrics.counters.errors += 1
                    out.dead.append(DeadLetter(live.delivery, f"model error: {step.error}", 1))
        if out.replies or out.dead:
            self._out.put_nowait(out)
        if out.done:
            self._room.set()
        if not self._live:
            self._drained.set()

    async def _publish(self) -> None:
        """Publish what the steps made, in order; all that is queued goes in one settle."""
        while True:
            item = await self._out.get()
            if item is None:
                return
            ended = False
            while not self._out.empty():
                more = self._out.get_nowait()
                if more is None:
                    ended = True
                    break
                item.replies += more.replies
                item.dead += more.dead
                item.done += more.done
            if self._broken:
                item = await self._without_broken(item)
            try:
                self.worker._count(await self.source.settle(item.replies, item.dead, item.done))
            except ProbeError as exc:  # the link dropped: unacknowledged requests are delivered again
                self.metrics.counters.task_failures += 1
                self.metrics.warning(f"streamed replies could not be published (their requests will be "
                                     f"delivered again): {exception_text(exc)}")
                # a stream still running lost chunks: its later chunks are dropped and its request is not
                # acknowledged with its final one, but released, to be delivered again whole
                finished = {id(d) for d in item.done}
                self._broken.update(id(r.delivery) for r in item.replies if id(r.delivery) not in finished)
            if ended:
                return

    async def _without_broken(self, item: _Publish) -> _Publish:
        """``item`` without what belongs to streams that lost chunks; the requests of those that ended are given
        back to the broker (never acknowledged: the generator saw a stream with a hole in it)."""
        broken = self._broken
        kept = _Publish([r for r in item.replies if id(r.delivery) not in broken],
                        [d for d in item.dead if id(d.delivery) not in broken])
        released = []
        for d in item.done:
            if id(d) in broken:
                broken.discard(id(d))
                released.append(d)
            else:
                kept.done.append(d)
        if released:
            await self.source.release(released)
            self.metrics.warning(f"{len(released)} streamed requests lost chunks to a failed publish: released to "
                                 "be delivered again, not acknowledged")
        return kept

    async def _tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.metrics_interval_s)
            self.metrics.emit()
            self._emit_llm()

    def _emit_llm(self) -> None:
        now, fig = time.monotonic(), self._figures
        last, at = self._last
        secs = max(now - at, 1e-9)
        steps = fig.steps - last.steps
        fields: dict[str, Any] = {
            "active_sequences": self.model.held(), "steps": steps,
            "mean_step_batch": round((fig.batch_sum - last.batch_sum) / steps, 2) if steps else 0.0,
            "tokens_per_s": round((fig.tokens - last.tokens) / secs, 1)}
        self._last = (_Figures(fig.steps, fig.batch_sum, fig.tokens), now)
        self.metrics.event("llm_metrics", **fields)
