"""Bench helpers: brokers (a given URL, or the test harness's), worker subprocesses, a bare request flood."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

from console import embedded_redis
from console.worker_process import spawn_worker, stop_worker


@contextlib.contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    proc, url = embedded_redis.start()
    try:
        yield url
    finally:
        embedded_redis.stop(proc)


@contextlib.contextmanager
def worker(url: str, queue: str, *args: str, timeout: float = 120.0) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, QDECK_CONFIG="/nonexistent/qdeck-brokers.toml")
    with tempfile.TemporaryDirectory(prefix="qdeck-bench-") as tmp:
        proc = spawn_worker(["-b", url, "-q", queue, "--metrics-interval", "600", *args], Path(tmp) / "worker.log",
                            env=env, timeout=timeout)
        try:
            yield proc
        finally:
            stop_worker(proc, grace=30)


async def flood(url: str, queue: str, payloads: list[object], timeout: float = 600.0) -> list[object]:
    """Send every payload at once (pipelined) and wait for all replies; returns the decoded replies."""
    from tests.workers import open_client

    client = await open_client(url, queue)
    try:
        for i in range(0, len(payloads), 500):
            await client.send(payloads[i:i + 500], start_seq=i)
        if not await client.wait_for(len(payloads), timeout=timeout):
            raise RuntimeError(f"only {len(client.replies)} of {len(payloads)} replies")
    finally:
        await client.transport.aclose()
    return list(client.replies.values())



def listening_process(port: int) -> psutil.Process | None:
    """The local process listening on TCP ``port`` (a broker), or None when it cannot be seen."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.Error, OSError):
        pass
    return None


class CpuSplit:
    """CPU time (user + system) the named processes spend between ``start()`` and ``per(n)``, in µs per request:
    where a run's CPU went (the generator, the worker, the broker), on a machine they share."""

    def __init__(self, procs: dict[str, psutil.Process | None] | None = None) -> None:
        self.procs: dict[str, psutil.Process] = {}
        self._at: dict[str, float] = {}
        self.watch(procs or {})

    def watch(self, procs: dict[str, psutil.Process | None]) -> None:
        """Measure these processes from now on (one that could not be found, None, is left out)."""
        self.procs = {name: p for name, p in procs.items() if p is not None}

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._at = {name: self._cpu(p) for name, p in self.procs.items()}

    def per(self, n: int) -> str:
        """``'CPU µs/request: generator 21.5, worker 22.0, broker 51.3 (total 94.8)'`` for ``n`` requests."""
        per = {name: (self._cpu(p) - self._at[name]) * 1e6 / max(n, 1) for name, p in self.procs.items()}
        cells = ", ".join(f"{name} {v:.1f}" for name, v in per.items())
        return f"CPU µs/request: {cells} (total {sum(per.values()):.1f})"
