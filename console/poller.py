"""The poll-and-backoff loop, written once: ``qdeck queues --watch``, ``qdeck exporter``, ``qdeck check --window``
and the console poll brokers through it.

One task per broker: poll (bounded by ``timeout``), hand the result to ``on_result``, wait the interval — or
``console.runner.backoff(interval, failures)`` after failed polls — and poll again, until cancelled. A broker's polls
never overlap (one in flight at a time, however ``poll_once`` is called), so a slow broker is never hammered. A
failed poll is a result, never an exception: a ``ProbeError``'s message, "no answer in N s", or, for a probe bug,
"internal error: ..." — each with the target's secrets masked — and the loop goes on. Only ``on_result`` raising
ends ``run`` (with that exception: a caller's bug is never swallowed), and a probe that cannot be built from its
target (its settings) is a ``ProbeError`` from ``run`` before any poll.

``paused``, ``interval`` and ``refresh_now`` are for the console's f, +/- and Ctrl-R; call them from the loop the
poller runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from console.runner import backoff
from probes import BACKENDS, BrokerSnapshot, BrokerTarget, ConfigError, Probe, ProbeError, open_probe, resolve_broker
from probes.redact import redact_text

DEFAULT_TIMEOUT_S = 15.0  # a poll that takes longer is a failed poll ("no answer in 15 s")
CLOSE_TIMEOUT_S = 5.0  # closing a probe on the way out


@dataclass(frozen=True, slots=True)
class PollResult:
    """One poll of one broker: ``snapshot`` or ``error`` (exactly one is set; the error is already redacted)."""

    label: str
    snapshot: BrokerSnapshot | None
    error: str | None
    arrived: float  # time.perf_counter() when it came back
    duration_s: float | None = None  # how long the poll took, failed ones included
    next_poll_s: float | None = None  # the wait before this broker's next poll (the loop's; None from poll_once)


def resolve_targets(brokers: Sequence[str]) -> list[BrokerTarget]:
    """The targets of a command's ``--broker`` options (none: the default broker); the same broker twice is a
    ``ConfigError`` (as ``qdeck queues`` and the console say)."""
    specs: list[str | None] = [*brokers] or [None]
    targets = [resolve_broker(spec) for spec in specs]
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise ConfigError("the same broker was given twice")
    return targets


def probe_options_for(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``options`` that ``kind``'s probe takes (a Redis scan budget means nothing to Kafka)."""
    if not options:
        return {}
    accepted = _accepted_options(kind)
    return {k: v for k, v in options.items() if k in accepted}


def check_probe_options(options: Mapping[str, Any]) -> None:
    """Every option must be one that some probe takes: a typo is an error naming it, never silently ignored."""
    if not options:
        return
    known = set().union(*(_accepted_options(kind) for kind in BACKENDS))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown probe option {unknown[0]!r} (the probes take: {', '.join(sorted(known))})")


def _accepted_options(kind: str) -> set[str]:
    spec = BACKENDS.get(kind)
    if spec is None:
        return set()
    module_name, _, class_name = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = inspect.signature(cls).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclass
class _Broker:
    """One broker's loop state: its wake-up event and whether it should poll at once."""

    target: BrokerTarget
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one poll in flight per broker
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    now: bool = True  # poll without waiting (the first poll, refresh_now, resume)
    failures: int = 0  # consecutive failed polls
    last_poll: float | None = None  # perf_counter() when its last poll came back
    task: asyncio.Task[None] | None = None


class Poller:
    def __init__(self, targets: Sequence[BrokerTarget], *, interval: float, timeout: float,
                 on_result: Callable[[PollResult], None], probe_options: Mapping[str, Any] | None = None,
                 probes: Mapping[str, Probe] | None = None) -> None:
        """``probe_options``: keyword options for the probes (scan budgets, timeouts), each probe taking those its
        constructor has; ``probes``: probes already open, by label (tests inject them; they are closed too)."""
        if not interval > 0 or not timeout > 0:
            raise ValueError("interval and timeout must be positive")
        self._options = dict(probe_options or {})
        check_probe_options(self._options)
        self._interval = interval
        self.timeout = timeout
        self._on_result = on_result
        self._brokers: dict[str, _Broker] = {}
        self._probes: dict[str, Probe] = dict(probes or {})
        self._paused = False
        self._failed: asyncio.Future[None] | None = None  # set while run() runs; a loop's exception ends it
        for target in targets:
            if target.label in self._brokers:
                raise ConfigError("the same broker was given twice")
            self._brokers[target.label] = _Broker(target)

    # -- what callers read and set -------------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        return list(self._brokers)

    @property
    def targets(self) -> list[BrokerTarget]:
        return [b.target for b in self._brokers.values()]

    @property
    def probes(self) -> dict[str, Probe]:
        """The open probes by label (the same dict the loops use: a probe put here is the one polled next)."""
        return self._probes

    @property
    def running(self) -> bool:
        return self._failed is not None

    @property
    def interval(self) -> float:
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        """A new interval: sleeping loops wake and wait out the new one, counted from their last poll."""
        if not value > 0:
            raise ValueError("interval must be positive")
        self._interval = value
        self._wake_all(now=False)

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        """While paused no poll starts (one in flight finishes); resuming polls every broker at once."""
        was, self._paused = self._paused, value
        if was and not value:
            self._wake_all(now=True)

    def refresh_now(self) -> None:
        """Every broker polls now; a broker whose poll is in flight takes that poll as the refresh. Ignored while
        paused (resuming polls at once anyway)."""
        if not self._paused:
            self._wake_all(now=True)

    def _wake_all(self, *, now: bool) -> None:
        for b in self._brokers.values():
            b.now = b.now or now
            b.wake.set()

    # -- polling -------------------------------------------------------------------------------------------------

    def add(self, target: BrokerTarget) -> str:
        """A broker joins (a running poller polls it at once); returns its label. One already here is left as is.
        Raises the ``ProbeError`` of a probe that cannot be built from ``target`` (it does not join then)."""
        label = target.label
        if label not in self._brokers:
            self._brokers[label] = _Broker(target)
            if self._failed is not None:
                try:
                    self._probe(label)
                except ProbeError:
                    del self._brokers[label]
                    raise
                self._start(label)
        return label

    def _probe(self, label: str) -> Probe:
        probe = self._probes.get(label)
        if probe is None:
            target = self._brokers[label].target
            probe = self._probes[label] = open_probe(target, **probe_options_for(target.kind, self._options))
        return probe

    async def poll_once(self, label: str) -> PollResult:
        """Poll ``label`` once (after the poll in flight, if there is one); failures come back as ``error``."""
        broker = self._brokers[label]
        secrets = broker.target.secrets
        probe = self._probe(label)  # a probe that cannot be built (its settings) raises: that is no poll
        async with broker.lock:
            t0 = time.perf_counter()
            snapshot: BrokerSnapshot | None = None
            error: str | None = None
            try:
                snapshot = await asyncio.wait_for(probe.snapshot(), self.timeout)
            except ProbeError as exc:
                error = redact_text(str(exc), secrets)
            except TimeoutError:
                error = f"no answer in {self.timeout:g} s"
            except Exception as exc:  # a probe bug must not kill the loop: report it and keep polling
                error = redact_text(f"internal error: {type(exc).__name__}: {exc}", secrets)
            arrived = time.perf_counter()
        return PollResult(label, snapshot, error, arrived, duration_s=arrived - t0)

    async def run(self) -> None:
        """Poll every broker until cancelled; close the probes on the way out. Raises what ``on_result`` raised,
        and the ``ProbeError`` of a probe that cannot be built from its target (before any poll)."""
        if self._failed is not None:
            raise RuntimeError("this poller is already running")
        self._failed = asyncio.get_running_loop().create_future()
        try:
            for label in self._brokers:
                self._probe(label)
            for label in self._brokers:
                self._start(label)
            await self._failed
        finally:
            tasks = [b.task for b in self._brokers.values() if b.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for b in self._brokers.values():
                b.task = None
            self._failed = None
            await self.aclose()

    async def aclose(self) -> None:
        """Close every probe this poller opened or was given (``run`` does it on the way out)."""
        probes, self._probes = list(self._probes.values()), {}
        for probe in probes:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe.aclose(), CLOSE_TIMEOUT_S)

    def _start(self, label: str) -> None:
        broker = self._brokers[label]
        broker.now = True
        broker.task = asyncio.get_running_loop().create_task(self._loop(broker), name=f"poll {label}")
        broker.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failed is None or self._failed.done():
            return
        exc = task.exception()
        if exc is not None:
            self._failed.set_exception(exc)

    async def _loop(self, broker: _Broker) -> None:
        label = broker.target.label
        while True:
            await self._wait_turn(broker)
            result = await self.poll_once(label)
            broker.now = False  # a refresh asked for while this poll was in flight is answered by it
            broker.failures = broker.failures + 1 if result.error is not None else 0
            result = dataclasses.replace(result, next_poll_s=backoff(self._interval, broker.failures))
            broker.last_poll = result.arrived
            self._on_result(result)

    async def _wait_turn(self, broker: _Broker) -> None:
        """Wait until ``broker`` may poll: at once when asked to, else the interval (or backoff) after its last
        poll, recomputed whenever the interval changes; never while paused."""
        while True:
            broker.wake.clear()
            timeout: float | None = None
            if not self._paused:
                if broker.now:
                    return
                if broker.last_poll is None:
                    return
                timeout = broker.last_poll + backoff(self._interval, broker.failures) - time.perf_counter()
                if timeout <= 0:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(broker.wake.wait(), timeout)
