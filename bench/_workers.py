"""Bench helpers: brokers (a given URL, or the test harness's), worker subprocesses, a bare request flood."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from console import embedded_redis
from console.demo import stop_worker


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
    log = tempfile.NamedTemporaryFile(prefix="qdeck-bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    env = dict(os.environ, QDECK_CONFIG="/nonexistent/qdeck-brokers.toml")
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "worker", "-b", url, "-q", queue,
                             "--metrics-interval", "600", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while b"serving" not in open(log.name, "rb").read():  # noqa: SIM115
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {open(log.name).read()[-500:]}")  # noqa: SIM115
            time.sleep(0.05)
        yield proc
    finally:
        stop_worker(proc)
        os.unlink(log.name)


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

