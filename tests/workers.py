"""Worker subprocesses and a small request/reply client for worker and load-generator tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from console.worker_process import spawn_worker, stop_worker
from loadgen.envelope import Malformed, Reply, Request, decode_reply, encode_request
from loadgen.transports import Transport, open_transport
from probes.urls import parse_broker_url


def unique(prefix: str = "qdeck-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log_path: str

    def log(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()

    def terminate(self, timeout: float = 30.0) -> int:
        return stop_worker(self.proc, grace=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON lines (``--metrics-format json``) whose ``event`` is ``name``."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict) and doc.get("event") == name:
                        found.append(doc)
        return found


@contextmanager
def worker(broker: str, queue: str, *args: str, tmp_path: Any) -> Iterator[WorkerProc]:
    """A real ``qdeck worker`` for the duration; stopped with SIGTERM (a SIGKILLed Kafka member would stall its
    group's next rebalance for 45 s)."""
    log_path = str(tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_") or k.startswith("QDECK_TEST_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    proc = spawn_worker(["--broker", broker, "--queue", queue, "--metrics-interval", "60", *args], log_path, env=env)
    try:
        yield WorkerProc(proc, log_path)
    finally:
        stop_worker(proc)


@dataclass
class Client:
    """Sends hand-made requests through a real transport and collects the replies."""

    transport: Transport
    run: str
    replies: dict[int, Reply] = field(default_factory=dict)
    received_ns: dict[int, int] = field(default_factory=dict)
    sent_ns: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    _event: asyncio.Event = field(default_factory=asyncio.Event)
    # Transports stamp replies on the monotonic clock; the worker's stamps are wall clock: convert with one offset.
    _wall_offset: int = field(default_factory=lambda: time.time_ns() - time.perf_counter_ns())

    def _on_reply(self, body: bytes, received_mono: int) -> None:
        now = received_mono + self._wall_offset
        rep = decode_reply(body)
        if isinstance(rep, Malformed) or rep.run != self.run:
            return
        if rep.seq in self.replies:
            self.duplicates += 1
        self.replies[rep.seq] = rep
        self.received_ns[rep.seq] = now
        self._event.set()

    async def send(self, payloads: list[Any], *, start_seq: int = 0) -> list[int]:
        bodies, seqs = [], []
        for i, payload in enumerate(payloads, start=start_seq + 1):
            now = time.time_ns()
            self.sent_ns[i] = now
            bodies.append(encode_request(Request(self.run, i, now, now, self.transport.reply_to, "test", payload)))
            seqs.append(i)
        await self.transport.send(bodies)
        return seqs

    async def send_to(self, reply_to: str, payloads: list[Any], *, start_seq: int) -> list[int]:
        """Requests that ask for their reply at ``reply_to`` (any text: a lone surrogate is written as JSON's
        ``\\ud800`` escape, as a client in another language may write it)."""
        bodies, seqs = [], []
        for i, payload in enumerate(payloads, start=start_seq + 1):
            now = time.time_ns()
            self.sent_ns[i] = now
            doc = {"v": 1, "t": "req", "run": self.run, "seq": i, "intended_ns": now, "sent_ns": now,
                   "reply_to": reply_to, "workload": "test", "payload": payload}
            bodies.append(json.dumps(doc, ensure_ascii=True).encode())
            seqs.append(i)
        await self.transport.send(bodies)
        return seqs

    async def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.replies) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._event.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(remaining, 0.5))
        return True

    async def settle(self, quiet_s: float = 1.0, timeout: float = 30.0) -> None:
        """Wait until no reply has arrived for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline and len(self.replies) != last:
            last = len(self.replies)
            await asyncio.sleep(quiet_s)


async def open_client(broker: str, queue: str) -> Client:
    run = uuid.uuid4().hex[:8]
    transport = open_transport(parse_broker_url(broker), queue, run)
    client = Client(transport, run)
    await transport.start(client._on_reply)
    return client
