"""Run ``qdeck worker`` as a child process: started and awaited until it serves, stopped with SIGTERM.

Used by the demo, the benchmarks and the tests, which all need a real worker beside them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from loadgen.stop_process import stop_process


def spawn_worker(args: Sequence[str], log_path: str | Path, *, env: Mapping[str, str] | None = None,
                 timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start ``qdeck worker ARGS`` with its output in ``log_path``; return once it logs "serving" (it has
    warmed its model and connected). RuntimeError, with the log's tail, if it exits or stays silent."""
    log = Path(log_path)
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "worker", *args], stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None)
    deadline = time.monotonic() + timeout
    while b"serving" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            code = proc.poll()
            why = f"exited with {code}" if code is not None else f"was not serving after {timeout:g} s"
            stop_worker(proc)
            raise RuntimeError(f"the worker {why}: {log.read_text(errors='replace').strip()[-500:]}")
        time.sleep(0.05)
    return proc


def stop_worker(proc: subprocess.Popen[bytes], grace: float = 20.0) -> int:
    """SIGTERM (the worker finishes its batches and acks), SIGKILL after ``grace`` seconds; the exit code."""
    code = stop_process(proc, grace)
    assert code is not None
    return code
