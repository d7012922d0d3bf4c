"""Waits until a monotonic time finer than the event loop's timers, which tick in whole milliseconds.

``precise_wait(loop)`` gives a waiter whose ``until(mono_ns)`` returns at ``mono_ns`` (``time.perf_counter_ns``) or
a little after:
- ``TimerFdWait`` (Linux): a timerfd armed for the absolute time and watched by the loop like a socket. The loop
  sleeps in epoll until the time comes or a reply arrives, so waiting costs no CPU and replies are handled meanwhile.
  The kernel's timer slack (50 µs for ordinary threads) is the only lateness it adds.
- ``NapWait`` (elsewhere, or where timerfd cannot be had): the loop's millisecond timers for whole milliseconds,
  then short blocking naps. It spends CPU on the naps and holds replies for up to a nap; it is the fallback.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import time
from typing import Protocol

from loadgen.run.schedules import NS

TIMER_NS = 1_000_000
NAP_NS = 50_000  # a blocking nap inside sub-millisecond waits (the kernel adds ~50 µs of timer slack)

_CLOCK_MONOTONIC = 1
_MONOTONIC = "clock_gettime(CLOCK_MONOTONIC)"  # perf_counter_ns's clock, as time.get_clock_info names it
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)


class Waiter(Protocol):
    async def until(self, mono_ns: int) -> None: ...

    def close(self) -> None: ...


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc_error() -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


class TimerFdWait:
    """One timerfd on CLOCK_MONOTONIC (the clock of ``perf_counter_ns`` on Linux), registered with ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        create, self._settime = libc.timerfd_create, libc.timerfd_settime  # AttributeError where libc lacks them
        create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        self._settime.restype = ctypes.c_int
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise _libc_error()
        self.fd, self.loop = fd, loop
        self._spec = _Itimerspec()
        self._waiter: asyncio.Future[None] | None = None
        try:
            loop.add_reader(fd, self._fired)
        except BaseException:
            os.close(fd)
            raise

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)  # the expiration count; reading it re-arms the readiness
        except BlockingIOError:  # an expiry already superseded by a newer arming
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm(self, mono_ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(mono_ns, NS)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise _libc_error()

    async def until(self, mono_ns: int) -> None:
        if mono_ns <= time.perf_counter_ns():
            return
        self._arm(mono_ns)  # re-arming replaces any earlier time and clears its expirations
        self._waiter = waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class NapWait:
    """The loop's timers for whole milliseconds, then blocking naps of at most NAP_NS, a loop pass after each."""

    async def until(self, mono_ns: int) -> None:
        while True:
            remaining = mono_ns - time.perf_counter_ns()
            if remaining <= 0:
                return
            whole_ms = remaining // TIMER_NS
            if whole_ms:  # uvloop rounds timers to the nearest millisecond, asyncio up: wake a little early
                await asyncio.sleep(whole_ms * TIMER_NS / NS - 0.0003)
            else:
                time.sleep(min(remaining, NAP_NS) / NS)
                await asyncio.sleep(0)

    def close(self) -> None:
        pass


def precise_wait(loop: asyncio.AbstractEventLoop) -> Waiter:
    """A ``TimerFdWait`` where the platform has one and ``perf_counter_ns`` is CLOCK_MONOTONIC, else a ``NapWait``."""
    if sys.platform.startswith("linux") and time.get_clock_info("perf_counter").implementation == _MONOTONIC:
        try:
            return TimerFdWait(loop)
        except (OSError, AttributeError, NotImplementedError):
            pass
    return NapWait()
