"""The engine's sub-millisecond waits: never early, the loop free meanwhile, re-armable, a fallback where the
platform has no timerfd."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from loadgen.run import precise_wait as pw

MS = 1_000_000

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


def _waiters(loop: asyncio.AbstractEventLoop) -> list[pw.Waiter]:
    out: list[pw.Waiter] = [pw.NapWait()]
    if sys.platform.startswith("linux"):
        out.append(pw.TimerFdWait(loop))
    return out


async def test_never_returns_before_the_time() -> None:
    for waiter in _waiters(asyncio.get_running_loop()):
        try:
            for step in (200_000, 700_000, 3 * MS):  # under a millisecond, under a loop tick, whole milliseconds
                target = time.perf_counter_ns() + step
                await waiter.until(target)
                assert time.perf_counter_ns() >= target, type(waiter).__name__
            await waiter.until(time.perf_counter_ns() - MS)  # a time already past returns at once
        finally:
            waiter.close()


async def _steps(out: list[int], n: int) -> None:
    for i in range(n):
        out.append(i)
        await asyncio.sleep(0)


async def test_the_loop_runs_other_work_while_waiting() -> None:
    """Replies arrive while the engine waits for its next send; they must be handled meanwhile."""
    for waiter in _waiters(asyncio.get_running_loop()):
        progressed: list[int] = []
        task = asyncio.create_task(_steps(progressed, 20))
        try:
            await waiter.until(time.perf_counter_ns() + 20 * MS)
            assert len(progressed) == 20, type(waiter).__name__
        finally:
            await task
            waiter.close()


@linux_only
async def test_a_cancelled_wait_leaves_the_timer_reusable() -> None:
    loop = asyncio.get_running_loop()
    waiter = pw.TimerFdWait(loop)
    try:
        far = asyncio.create_task(waiter.until(time.perf_counter_ns() + 60_000 * MS))
        await asyncio.sleep(0.01)
        far.cancel()
        with pytest.raises(asyncio.CancelledError):
            await far
        # Re-armed for a near time, the wait ends then, not at the cancelled far one (the guard is only a bound).
        target = time.perf_counter_ns() + 2 * MS
        await asyncio.wait_for(waiter.until(target), timeout=30)
        assert time.perf_counter_ns() >= target
        # An expiry nobody waits for any more is read and ignored; the next wait still works.
        waiter._arm(time.perf_counter_ns() + MS)
        await asyncio.sleep(0.01)
        await asyncio.wait_for(waiter.until(time.perf_counter_ns() + MS), timeout=30)
    finally:
        waiter.close()


@linux_only
async def test_close_releases_the_descriptor() -> None:
    waiter = pw.TimerFdWait(asyncio.get_running_loop())
    fd = waiter.fd
    waiter.close()
    waiter.close()  # twice is harmless
    with pytest.raises(OSError):
        os.fstat(fd)


async def test_falls_back_to_naps_without_a_timerfd(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_timerfd(_loop: asyncio.AbstractEventLoop) -> pw.TimerFdWait:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(pw, "TimerFdWait", no_timerfd)
    waiter = pw.precise_wait(asyncio.get_running_loop())
    assert isinstance(waiter, pw.NapWait)
    target = time.perf_counter_ns() + MS // 2
    await waiter.until(target)
    assert time.perf_counter_ns() >= target


@linux_only
async def test_linux_gets_the_timerfd() -> None:
    waiter = pw.precise_wait(asyncio.get_running_loop())
    try:
        assert isinstance(waiter, pw.TimerFdWait)
    finally:
        waiter.close()
