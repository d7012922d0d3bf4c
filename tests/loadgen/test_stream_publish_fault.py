"""A streamed request whose chunks could not all be published is not acknowledged with its final chunk: the
generator would see a stream with a hole in it, and the broker would never deliver the request again. Its later
chunks are dropped and the request is released, to be delivered again whole."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from loadgen.envelope import Chunk, Request, decode_reply, encode_request
from loadgen.worker.core import Worker, WorkerConfig
from loadgen.worker.metrics import MetricsReporter
from loadgen.worker.models import load_model
from loadgen.worker.source import Delivery, Settlement
from probes.errors import BrokerUnreachable


class FailsFirstSettle:
    """Hands out the requests at once; its first settle fails as a dropped link does."""

    queue, dead_letter_name = "q", "q.dlq"

    def __init__(self, bodies: list[bytes]) -> None:
        self._left = [Delivery(b, i) for i, b in enumerate(bodies)]
        self.settles = 0
        self.published: list[Any] = []
        self.acked: list[int] = []
        self.released: list[int] = []

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def stop_fetching(self) -> list[Any]:
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        self.released += [d.handle for d in deliveries]

    async def fetch(self, max_items: int, timeout_s: float) -> list[Delivery]:
        if self._left:
            out, self._left = self._left[:max_items], self._left[max_items:]
            for d in out:
                d.dequeued_ns = time.time_ns()
            return out
        await asyncio.sleep(0.005)
        return []

    async def settle(self, replies: list[Any], dead: list[Any], done: list[Delivery]) -> Settlement:
        self.settles += 1
        if self.settles == 1:
            raise BrokerUnreachable("the link dropped")
        self.published += [decode_reply(r.body) for r in replies]
        self.acked += [d.handle for d in done]
        return Settlement(replied=len(replies))


async def test_a_stream_that_lost_a_chunk_is_released_not_acknowledged() -> None:
    bodies = [encode_request(Request("r", 1, 1, 1, "replies", "w", "p", max_tokens=6))]
    source = FailsFirstSettle(bodies)
    model = load_model("llm-synthetic:step_ms=5,per_seq_ms=0,prefill_ms=0,chunk=1", "cpu")
    metrics = MetricsReporter("w1", "cpu", "llm", out=io.StringIO())
    w = Worker(source, model, WorkerConfig(max_batch=4, metrics_interval_s=60),  # type: ignore[arg-type]
               worker_id="w1", metrics=metrics)
    stop = asyncio.Event()
    served = asyncio.create_task(w.run(stop))
    deadline = time.monotonic() + 10
    while not (source.released or source.acked) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(served, 10)
    assert source.acked == [] and source.released == [0]
    assert not any(isinstance(m, Chunk) and m.final for m in source.published)  # no final for a holed stream
    assert "lost chunks to a failed publish" in metrics.out.getvalue()  # type: ignore[attr-defined]
