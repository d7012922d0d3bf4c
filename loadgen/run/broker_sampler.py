"""The run's request queue as the broker sees it: sampled every ``sample_period_s``, summed per interval.

``qdeck load run`` starts a ``BrokerSampler`` with the engine (``Engine(sampler=...)``). It reads the queue many
times an interval, one cheap call a reading, on a connection of its own (never the transport's: a reading must not
queue behind requests or replies) and in a task of its own, over the measured window, and ends with the run:

- **Period** (``sample_period_s``: a whole fraction of the interval, or the interval when shorter): Redis and
  RabbitMQ, where a reading is one cheap call (``XINFO GROUPS``, a passive ``queue.declare``), are read often enough
  that the measured window gets ``WINDOW_READINGS`` (320) readings, but never more often than every ``MIN_PERIOD_S``
  (0.025 s) nor less often than every ``FINE_PERIOD_S`` (0.1 s): an 8 s window every 0.025 s, 16 s every 0.05 s,
  32 s and more (or a window ended by a request count) every 0.1 s. The mean of n readings of a batching worker's
  saw-tooth (0 to a batch) is good to about ±60 %/√n whatever the run's length: a short run needs them closer. The
  cost is bounded (at most 320 readings a run, or 10 a second; ~0.6 ms of CPU each, measured in README.md). Kafka is
  read once an interval: a reading there is four admin requests through the AdminClient's threads, and its depth,
  the committed lag, moves in steps of the worker's commits and counts records already taken, so finer readings
  would buy little.
- **When**: one reading at a random instant (uniform) inside each period of the window, not at the period's start: a
  queue that rises and falls with a period of its own (a batching worker's saw-tooth, from 0 to a batch) is read at
  every phase of it instead of at a fixed one, so the mean of the readings is an unbiased estimate of the time-mean
  depth whatever the two periods are (stratified sampling). A period whose instant passed while the previous call
  was out (a slow broker) is skipped, never made up.
- **What is kept** (``summary.json`` ``broker_samples``, schema in ``loadgen.results.summary``): running sums over
  the measured window, whose ``depth_mean`` (and ``depth_samples``, the readings with a depth) Little's law uses, and
  per interval one sample: the **mean** depth, in-flight and lag of the interval's readings, the fewest consumers,
  the largest depth (``depth_max``, the saw-tooth's height) and the readings (``n``), at ``t_s`` = the interval's
  start (s from the measured window's start). The mean, not the instant at the tick: an instant of a saw-tooth lands
  anywhere between its floor and its peak (the plot would be noise); the interval mean is the queue's level over the
  interval, the figure the interval's latencies sit beside, and the batch means Little's law's standard error needs.
  A 1 h run at 1 s intervals keeps 3,600 samples (36,000 readings).

What the readings give:

- **Redis streams**: ``XINFO GROUPS <stream>`` (exact): ``depth`` = ``lag`` = the worker group's lag, the entries not
  yet delivered to any consumer; ``in_flight`` = its pending entries (delivered, not yet acknowledged);
  ``consumers`` = the group's consumers (names it has had, idle or gone ones included). The group is ``qdeck-workers``
  when present, else the one with the most consumers; no group yet: ``XLEN`` (every entry waits). Redis < 7 gives
  no lag: it is counted with ``XRANGE`` after the group's last-delivered id (at most ``LAG_COUNT_LIMIT``).
- **RabbitMQ**: a passive ``queue.declare`` (exact, where the management API's figures trail by up to 5 s):
  ``depth`` = ready messages, ``consumers``; ``in_flight`` (unacknowledged) and ``lag`` are not given (null).
- **Kafka**: the admin API, group ``qdeck-workers.<topic>``: ``depth`` = ``lag`` = Σ end offset − committed offset
  (no commit yet: − the earliest offset, as ``auto.offset.reset=earliest`` reads), ``consumers`` = group members;
  committed offsets trail what the worker has taken, so this depth includes requests in hand, unlike the others.

The window: readings from the first interval tick at or after the warm-up to the end of the run (the run's duration)
or ``stop``; those at or after the measured window's end (``stop(measured_s)``: a run that stopped early, by an
abort or a request count, and drains its replies) are left out. The interval that end falls in is cut exactly while
it is still open (a short drain); after a drain past that interval's end it is counted whole.
Sampling never fails the run: a reading that fails is counted, the connection is made again for the next one, an
interval with no reading that worked is kept with null figures, and ``error`` says in one line how many readings
failed and why (every one: "no broker sample worked: ..."). Nothing is sampled for the memory transport
(``broker_sampler`` returns None), with ``--no-broker-samples``, or by the agents of a distributed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from loadgen.run.broker_readers import Backend, Figures, backend_for
from probes.errors import ProbeError
from probes.redact import redact_text
from probes.urls import BrokerTarget

NS = 1_000_000_000
CALL_TIMEOUT_S = 5.0  # one reading's broker call, connection included
SAMPLED_KINDS = ("redis", "rabbitmq", "kafka")
FINE_KINDS = ("redis", "rabbitmq")  # one reading is one cheap call: read many times an interval (Kafka: once)
FINE_PERIOD_S = 0.1  # their reading period, at most ...
MIN_PERIOD_S = 0.025  # ... and at least
WINDOW_READINGS = 320  # readings a measured window gets at least, within those bounds (8 s: every 0.025 s)

__all__ = ["FINE_PERIOD_S", "MIN_PERIOD_S", "WINDOW_READINGS", "BrokerSampler", "Figures", "broker_sampler",
           "readings_per_interval"]


def readings_per_interval(kind: str, interval_s: float, window_s: float | None) -> int:
    """Readings an interval for a broker ``kind`` over a measured window of ``window_s`` (None: not known): Kafka 1;
    Redis and RabbitMQ the fewest that keep the period at most ``window_s / WINDOW_READINGS``, bounded to
    [``MIN_PERIOD_S``, ``FINE_PERIOD_S``]."""
    if kind not in FINE_KINDS:
        return 1
    period = FINE_PERIOD_S if window_s is None else min(FINE_PERIOD_S,
                                                        max(MIN_PERIOD_S, window_s / WINDOW_READINGS))
    return max(1, math.ceil(interval_s / period - 1e-9))


def broker_sampler(target: BrokerTarget, queue: str, interval_s: float) -> BrokerSampler | None:
    """The sampler for ``target``'s kind, or None where there is no broker to sample (the memory transport)."""
    if target.kind not in SAMPLED_KINDS:
        return None
    return BrokerSampler(target, queue, interval_s)


@dataclass(slots=True)
class Interval:
    """One interval's readings, as running sums (and, while it is the newest, the readings themselves, so that the
    measured window's end can cut it exactly)."""

    k: int  # the interval's index: it starts at k × interval from the run's start
    attempts: int = 0
    n: int = 0  # readings with a depth
    depth_sum: int = 0
    depth_max: int | None = None
    in_flight_sum: int = 0
    in_flight_n: int = 0
    lag_sum: int = 0
    lag_n: int = 0
    consumers_min: int | None = None
    readings: list[tuple[int, Figures | None]] | None = field(default_factory=list)  # (ns from the run's start, ...)

    def add(self, figures: Figures | None) -> None:
        self.attempts += 1
        if figures is None:
            return
        if figures.depth is not None:
            self.n += 1
            self.depth_sum += figures.depth
            self.depth_max = figures.depth if self.depth_max is None else max(self.depth_max, figures.depth)
        if figures.in_flight is not None:
            self.in_flight_n += 1
            self.in_flight_sum += figures.in_flight
        if figures.lag is not None:
            self.lag_n += 1
            self.lag_sum += figures.lag
        if figures.consumers is not None:
            self.consumers_min = (figures.consumers if self.consumers_min is None
                                  else min(self.consumers_min, figures.consumers))

    def before(self, cut_ns: int) -> Interval:
        """This interval's readings taken before ``cut_ns`` (it is returned whole when they are no longer kept)."""
        if self.readings is None:
            return self
        kept = Interval(self.k)
        for at, figures in self.readings:
            if at < cut_ns:
                kept.add(figures)
        return kept

    def depth(self) -> float | None:
        return self.depth_sum / self.n if self.n else None


def _mean(total: int, n: int) -> float | None:
    return round(total / n, 3) if n else None


class BrokerSampler:
    def __init__(self, target: BrokerTarget, queue: str, interval_s: float, *, per_interval: int | None = None,
                 group: str | None = None, timeout_s: float = CALL_TIMEOUT_S, backend: Backend | None = None,
                 rng: random.Random | None = None) -> None:
        """``per_interval``: readings an interval (None: ``readings_per_interval`` for the target's kind and the
        window ``start`` is given); ``rng``: where each reading's instant in its period is drawn from."""
        self.target, self.queue, self.interval_s, self.timeout_s = target, queue, interval_s, timeout_s
        self._per_interval = per_interval
        self.per_interval = max(1, per_interval or readings_per_interval(target.kind, interval_s, None))
        self.backend = backend or backend_for(target, queue, group, timeout_s)
        self._rng = rng or random.Random()
        self._interval_ns = max(int(interval_s * NS), 1)
        self._intervals: list[Interval] = []
        self._warm_ns = 0
        self._failed = 0
        self._last_error = ""
        self._stopped_by: str | None = None  # an unexpected failure that ended sampling
        self._task: asyncio.Task[None] | None = None

    @property
    def sample_period_s(self) -> float:
        return self.interval_s / self.per_interval

    def start(self, mono0_ns: int, warm_ns: int, end_ns: int | None) -> None:
        """Read the queue in each period from the first interval tick (``mono0_ns + k × interval``) at or after
        ``warm_ns`` until ``end_ns`` (ns from the run's start on ``time.perf_counter_ns``; None: until ``stop``)."""
        self._warm_ns = warm_ns
        if self._per_interval is None:
            window_s = None if end_ns is None else (end_ns - warm_ns) / NS
            self.per_interval = readings_per_interval(self.target.kind, self.interval_s, window_s)
        self._task = asyncio.create_task(self._loop(mono0_ns, warm_ns, end_ns), name="qdeck-broker-sampler")

    async def stop(self, measured_s: float | None = None) -> dict[str, Any]:
        """End sampling, close the connection; the ``broker_samples`` document (readings at ``measured_s`` or later,
        past the measured window, are left out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # closing a dead connection: nothing left to clean up
            await asyncio.wait_for(self.backend.aclose(), self.timeout_s)
        attempts = sum(i.attempts for i in self._intervals)
        kept = self._intervals
        if measured_s is not None:
            cut = self._warm_ns + int(measured_s * NS)
            kept = [i.before(cut) for i in kept if i.k * self._interval_ns < cut]
        n = sum(i.n for i in kept)
        return {"queue": self.queue, "interval_s": self.interval_s,
                "sample_period_s": round(self.sample_period_s, 6), "source": self.backend.source(),
                "samples": [self._sample(i) for i in kept],
                "depth_mean": round(sum(i.depth_sum for i in kept) / n, 4) if n else None, "depth_samples": n,
                "error": self._error(attempts)}

    def _sample(self, i: Interval) -> dict[str, Any]:
        return {"t_s": round((i.k * self._interval_ns - self._warm_ns) / NS, 4), "depth": _mean(i.depth_sum, i.n),
                "in_flight": _mean(i.in_flight_sum, i.in_flight_n), "consumers": i.consumers_min,
                "lag": _mean(i.lag_sum, i.lag_n), "depth_max": i.depth_max, "n": i.n}

    def figures_for(self, start_s: float, end_s: float) -> tuple[int | None, int | None]:
        """(depth, consumers) of the interval [start_s, end_s) (seconds from the run's start), for the interval CSV:
        its readings' mean depth rounded to a whole request, and the fewest consumers; (None, None) when there is
        none."""
        for i in reversed(self._intervals):
            tick_s = i.k * self._interval_ns / NS
            if start_s - 1e-6 <= tick_s < end_s - 1e-6:
                depth = i.depth()
                return (None if depth is None else round(depth)), i.consumers_min
            if tick_s < start_s:
                break
        return None, None

    def _error(self, attempts: int) -> str | None:
        if self._stopped_by is not None:
            return self._stopped_by
        if not self._failed:
            return None
        if self._failed == attempts:
            return f"no broker sample worked: {self._last_error}"
        return f"{self._failed} of {attempts} broker samples failed (last: {self._last_error})"

    def _slot_ns(self, j: int) -> int:
        """The start of reading period ``j`` in ns from the run's start (period m × k starts interval k exactly)."""
        k, i = divmod(j, self.per_interval)
        return k * self._interval_ns + i * self._interval_ns // self.per_interval

    def _slot_at(self, at_ns: int) -> int:
        """The period that ``at_ns`` (ns from the run's start) falls in."""
        j = at_ns * self.per_interval // self._interval_ns
        while self._slot_ns(j + 1) <= at_ns:
            j += 1
        while j > 0 and self._slot_ns(j) > at_ns:
            j -= 1
        return j

    def _record(self, j: int, at_ns: int, figures: Figures | None) -> None:
        k = j // self.per_interval
        if not self._intervals or self._intervals[-1].k != k:
            if self._intervals:
                self._intervals[-1].readings = None  # closed: its sums are all that is kept
            self._intervals.append(Interval(k))
        interval = self._intervals[-1]
        interval.add(figures)
        if interval.readings is not None:
            interval.readings.append((at_ns, figures))

    async def _loop(self, mono0: int, warm_ns: int, end_ns: int | None) -> None:
        j = -(-warm_ns // self._interval_ns) * self.per_interval  # the first period of the first tick in the window
        try:
            with contextlib.suppress(Exception):  # connect ahead of the first reading; a failure is the first one's
                await asyncio.wait_for(self.backend.sample(), self.timeout_s)
            while True:
                start = self._slot_ns(j)
                if end_ns is not None and start >= end_ns:
                    return
                at = start + int(self._rng.random() * (self._slot_ns(j + 1) - start))
                if end_ns is not None and at >= end_ns:
                    return
                delay = mono0 + at - time.perf_counter_ns()
                if delay < 0:  # the previous call was out past this period's instant: skipped, never made up
                    j = max(j + 1, self._slot_at(time.perf_counter_ns() - mono0))
                    continue
                await asyncio.sleep(delay / NS)
                self._record(j, at, await self._read())
                j += 1
        except Exception as exc:  # sampling never fails the run: the summary says why it stopped
            self._stopped_by = f"broker sampling stopped: {self._one_line(exc)}"

    async def _read(self) -> Figures | None:
        try:
            async with asyncio.timeout(self.timeout_s):  # (no task a reading, as wait_for makes)
                return await self.backend.sample()
        except Exception as exc:  # a reading that failed is counted, and said in ``error``
            self._failed += 1
            self._last_error = (f"the broker did not answer within {self.timeout_s:g} s"
                                if isinstance(exc, TimeoutError) else self._one_line(exc))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.backend.reset(), self.timeout_s)
            return None

    def _one_line(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, ProbeError):
            text = f"{type(exc).__name__}: {text}"
        return redact_text(text, self.target.secrets)[:300]


