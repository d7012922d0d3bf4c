"""``memory://`` — an in-process fake broker *and* worker for unit tests of the engine and its callers.

One FIFO server with a fixed service time (``?service_ms=2``, default 1): each request is answered with real stage
stamps when the server gets to it. Faults to inject: ``?drop_every=N`` never answers every N-th request
(timeouts), ``?error_every=N`` answers every N-th with an error, ``?duplicate_every=N`` answers every N-th twice
(as a redelivery after a broker restart does), ``?slow_every=N&slow_ms=M`` answers every N-th M ms late, and
``?fail_after=N`` loses the broker after N requests (sends raise, replies stop), and ``?outage_after=N&outage_s=S``
takes it away for S seconds after N requests (sends raise ``ConnectionLost``, replies in flight are lost), as a
broker restart does. Never used in the tests of a real transport.
"""

from __future__ import annotations

import asyncio
import time

from loadgen.envelope import Malformed, Reply, Stamps, decode_request, encode_reply
from loadgen.transports.base import ReplyHandler
from probes.errors import ConnectionLost, ProbeError
from probes.urls import BrokerTarget


class MemoryTransport:
    def __init__(self, target: BrokerTarget, queue: str, run_id: str) -> None:
        self.queue = queue
        self.reply_to = f"memory-reply-{run_id}"
        self.service_ns = int(float(target.param("service_ms", "1") or 1) * 1e6)
        self.drop_every = int(target.param("drop_every", "0") or 0)
        self.error_every = int(target.param("error_every", "0") or 0)
        self.duplicate_every = int(target.param("duplicate_every", "0") or 0)
        self.slow_every = int(target.param("slow_every", "0") or 0)
        self.slow_ns = int(float(target.param("slow_ms", "0") or 0) * 1e6)
        self.fail_after = int(target.param("fail_after", "0") or 0)
        self._failure: ProbeError | None = None
        self.outage_after = int(target.param("outage_after", "0") or 0)
        self.outage_ns = int(float(target.param("outage_s", "1") or 1) * 1e9)
        self._down_until = 0
        self.reconnects = 0
        self._epoch = 0  # replies published before an outage are lost with it
        self._free_at = 0
        self._handler: ReplyHandler | None = None
        self._count = 0
        self._closed = False

    async def start(self, on_reply: ReplyHandler) -> None:
        self._handler = on_reply

    async def send(self, bodies: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        if self._failure is not None:
            raise self._failure
        if self.fail_after and self._count + len(bodies) > self.fail_after:
            self._failure = ProbeError("memory broker: connection lost (injected)")
            raise self._failure
        mono = time.perf_counter_ns()
        if self.outage_after and self._count + len(bodies) > self.outage_after and not self._down_until:
            self._down_until = mono + self.outage_ns
            self._epoch += 1
        if mono < self._down_until:
            raise ConnectionLost("memory broker: connection lost, reconnecting (injected outage)")
        if self._down_until and not self.reconnects:
            self.reconnects = 1
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
                        error=error, model=f"memory:service_ms={self.service_ns / 1e6:g}")
            delay = (end - now) / 1e9
            if self.slow_every and self._count % self.slow_every == 0:
                delay += self.slow_ns / 1e9
            loop.call_later(delay, self._deliver, encode_reply(rep), self._epoch)
            if self.duplicate_every and self._count % self.duplicate_every == 0:
                loop.call_later(delay + 0.001, self._deliver, encode_reply(rep), self._epoch)

    def _deliver(self, body: bytes, epoch: int) -> None:
        if self._handler is not None and not self._closed and self._failure is None and epoch == self._epoch:
            self._handler(body, time.perf_counter_ns())

    def failure(self) -> ProbeError | None:
        return self._failure

    async def aclose(self) -> None:
        self._closed = True
