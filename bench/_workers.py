"""Bench helpers: brokers (a given URL, or the test harness's), worker subprocesses, a bare request flood."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

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

