"""Stopping a process: one signal, a grace period, then SIGKILL. The worker child, the embedded Redis, the test
harness's brokers and the benches' private brokers all stop this way."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | int | None, grace: float = 5.0, *, sig: int = signal.SIGTERM,
                 group: bool = False) -> int | None:
    """Send ``sig`` to ``proc`` (a child, or the PID of a process that may not be ours), wait up to ``grace``
    seconds for it to end, then SIGKILL it. ``group``: signal its whole process group (a child started with
    ``start_new_session=True``; members still there once the leader has ended are killed). Returns a child's exit
    code; None for a bare PID or nothing to stop."""
    if proc is None:
        return None
    if isinstance(proc, int):
        _stop_pid(proc, grace, sig, group)
        return None
    if proc.poll() is not None:
        return proc.returncode
    deadline = time.monotonic() + grace
    _signal(proc.pid, sig, group)
    try:
        code = proc.wait(grace)
    except subprocess.TimeoutExpired:
        _signal(proc.pid, signal.SIGKILL, group)
        return proc.wait()
    if group:  # the leader is gone: the rest of its group gets what is left of the grace, then SIGKILL
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal(proc.pid, signal.SIGKILL, group)
    return code


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        _send(pid, sig, group)


def _stop_pid(pid: int, grace: float, sig: int, group: bool) -> None:
    """A PID that may be a child (reaped here) or not (watched until it is gone)."""
    try:
        _send(pid, sig, group)
    except ProcessLookupError:
        return
    if _gone_within(pid, grace):
        return
    _signal(pid, signal.SIGKILL, group)
    _gone_within(pid, 5.0)


def _send(pid: int, sig: int, group: bool) -> None:
    if group:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` ends within ``seconds``: a child of ours is reaped; another process is gone once it no
    longer exists or is a zombie (its parent reaps it)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return True
        except ChildProcessError:  # not our child
            if not _exists(pid):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True
