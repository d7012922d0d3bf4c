"""A streamed request whose chunks could not all be published is not acknowledged with its final chunk: the
generator would see a stream with a hole in it, and the broker would never deliver the request again. Its later
chunks are dropped and the request is released, to be delivered again whole."""

from __future__ import annotations

import asyncio
import io
import time

from loadgen.envelope import Chunk, Request, encode_request
from loadgen.worker.core import Worker, WorkerConfig
from loadgen.worker.metrics import MetricsReporter
from loadgen.worker.models import load_model
from tests.loadgen.list_source import ListSource


async def test_a_stream_that_lost_a_chunk_is_released_not_acknowledged() -> None:
    bodies = [encode_request(Request("r", 1, 1, 1, "replies", "w", "p", max_tokens=6))]
    source = ListSource(bodies, fail_settles=1)  # the first settle fails as a dropped link does
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
