"""``memory://`` — an in-process fake broker *and* worker for unit tests of the engine and its callers.

One FIFO server with a fixed service time (``?service_ms=2``, default 1): each request is answered with real stage
stamps when the server gets to it. ``?drop_every=N`` never answers every N-th request (timeouts), and
``?error_every=N`` answers every N-th with an error. Never used in the tests of a real transport.
"""

from __future__ import annotations

import asyncio
import time

from loadgen.envelope import Malformed, Reply, Stamps, decode_request, encode_reply
from loadgen.transports.base import ReplyHandler
from probes.urls import BrokerTarget


class MemoryTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.queue = queue
        self.reply_to = f"memory-reply-{run_id}"
        self.service_ns = int(float(target.param("service_ms", "1") or 1) * 1e6)
        self.drop_every = int(target.param("drop_every", "0") or 0)
        self.error_every = int(target.param("error_every", "0") or 0)
        self._free_at = 0
        self._handler: ReplyHandler | None = None
        self._count = 0
        self._closed = False

    async def start(self, on_reply: ReplyHandler) -> None:
        self._handler = on_reply

    async def send(self, bodies: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        for body in bodies:
            self._count += 1
            req = decode_request(body)
            if isinstance(req, Malformed) or (self.drop_every and self._count % self.drop_every == 0):
                continue
            now = time.time_ns()
            start = max(now, self._free_at)
            end = start + self.service_ns
            self._free_at = end
            error = "injected error" if self.error_every and self._count % self.error_every == 0 else None
            rep = Reply(run=req.run, seq=req.seq, worker="memory", device="cpu", batch_size=1,
                        stamps=Stamps(start, start, start, end, end), output=None if error else req.payload,
                        error=error)
            loop.call_later((end - now) / 1e9, self._deliver, encode_reply(rep))

    def _deliver(self, body: bytes) -> None:
        if self._handler is not None and not self._closed:
            self._handler(body, time.time_ns())

    async def aclose(self) -> None:
        self._closed = True
