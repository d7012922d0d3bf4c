"""The queueing models of a batching worker behind ``qdeck load plan`` (``loadgen.results.capacity`` fits them).

**Queue** (Poisson arrivals at rate λ; with several workers each takes λ/workers, a split that ignores pooling):

- ``max_batch > 1``, one model slot: a bulk-service queue with a collection window, solved exactly as the embedded
  Markov chain of the number waiting at the instants the slot frees — the method of Kendall (1953) and Neuts (1967,
  "A general class of bulk queues with Poisson input", Ann. Math. Stat. 38) — with the window and its early close
  when the batch fills in the transitions, and arrivals during a service Poisson mixed over a two-point service
  time with the fitted mean and spread. Mean waits are the area under the number waiting over a cycle divided by
  the requests served in it (renewal-reward, Little's law).
- ``max_batch > 1``, several slots: the other slots' remaining times make the chain's state continuous, so the
  worker's loop is simulated instead (seeded, ``SIM_REQUESTS`` requests, gamma service times).
- ``max_batch = 1``: M/G/m, m = slots × workers: Erlang C for the probability of waiting (Erlang 1917) and the
  Allen–Cunneen mean wait ``C(m, λ/μ) / (mμ − λ) · (1 + Cs²)/2`` (Allen 1990, "Probability, Statistics and
  Queueing Theory", 2nd ed.), exact for M/M/m and, at m = 1, the Pollaczek–Khinchine mean.

**p99** (approximations): M/G/m: exponential conditional on waiting, ``P(W > t) = C·exp(−t·C/Wq)`` (the M/M/m
shape). The chain: a mixture — a request arriving while the slot is free waits its window only (uniform over it;
the part of the mean above half a window a point mass at the full window); one arriving during a service waits the
rest of that service (length-biased), its window (at its mean), and, for the share the next batch cannot hold,
another full batch's service plus an exponential remainder that makes up the model's mean. The simulation: its
own 99th percentile. A request's time in the worker at p99 adds the mean service time of a request's batch.

**The worker loop's overhead** (``Policy.overhead_ms``): time the loop spends per step outside the service stamps
(taking the next batch, ending a window, delivering a request: a broker round trip each). It holds the slot after
each batch, lengthens the window and delays each take, in every model alike.

Utilisation ("load") is λ over the largest throughput, ``slots × workers × max_batch / (S(max_batch) + overhead)``.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

MAX_STATES = 40_000  # the chain is truncated here: a load this close to capacity is called unstable
TAIL_MASS = 1e-9  # the truncated chain is grown until its top states hold less than this
SIM_REQUESTS = 200_000  # requests simulated for a worker with several slots
SIM_SEED = 1

__all__ = ["Policy", "Prediction", "ServiceFit", "capacity", "erlang_c", "predict"]


@dataclass(frozen=True, slots=True)
class ServiceFit:
    a_ms: float  # service = a + b × batch
    b_ms: float
    spread_ms: float  # stddev of a batch's service time about the line
    r2: float | None  # of the per-size means about the line (None: one size only)
    sizes: int  # batch sizes (or runs) the fit stands on
    batches: float  # batches it stands on
    source: str  # "per batch size" | "per run means"

    def mean_ms(self, batch: float) -> float:
        return self.a_ms + self.b_ms * batch


@dataclass(frozen=True, slots=True)
class Policy:
    max_batch: int
    max_wait_ms: float
    concurrency: int = 1
    workers: int = 1
    overhead_ms: float = 0.0  # the worker loop's own time per step (the module docstring)

    @property
    def slots(self) -> int:
        return self.concurrency * self.workers


@dataclass(frozen=True, slots=True)
class Prediction:
    rate: float  # requests/s
    load: float  # rate over the largest throughput
    stable: bool
    busy: float = math.nan  # share of time a slot runs the model
    batch: float = math.nan  # mean batch size a request is served in
    queue_ms: float = math.inf
    batch_ms: float = math.inf
    wait_p99_ms: float = math.inf
    in_worker_p99_ms: float = math.inf  # queue + batch wait + service, p99

    @property
    def wait_ms(self) -> float:
        return self.queue_ms + self.batch_ms


# ---- the queue -----------------------------------------------------------------------------------------------------

def capacity(fit: ServiceFit, policy: Policy) -> float:
    """The largest throughput (requests/s): every slot running full batches back to back."""
    return policy.slots * policy.max_batch / (fit.mean_ms(policy.max_batch) + policy.overhead_ms) * 1000


def erlang_c(servers: int, offered: float) -> float:
    """Erlang C: the probability that an arrival waits in M/M/``servers`` with ``offered`` = λ/μ erlangs."""
    if offered >= servers:
        return 1.0
    blocking = 1.0  # Erlang B by its recursion, stable for any number of servers
    for k in range(1, servers + 1):
        blocking = offered * blocking / (k + offered * blocking)
    rho = offered / servers
    return blocking / (1 - rho + rho * blocking)


def predict(fit: ServiceFit, policy: Policy, rate: float, *, requests: int = SIM_REQUESTS) -> Prediction:
    """Mean and p99 waits at ``rate`` requests/s (Poisson); ``requests``: how many a simulation takes."""
    load = rate / capacity(fit, policy) if fit.mean_ms(policy.max_batch) + policy.overhead_ms > 0 else math.inf
    if not 0 < load < 1:
        return Prediction(rate, load, stable=False)
    if policy.max_batch == 1:
        return _mgc(fit, policy, rate, load)
    if policy.concurrency > 1:
        return _simulated(fit, policy, rate, load, requests)
    return _bulk(fit, policy, rate, load)


def _mgc(fit: ServiceFit, policy: Policy, rate: float, load: float) -> Prediction:
    over = policy.overhead_ms
    mean, held = fit.mean_ms(1), fit.mean_ms(1) + over  # a slot is held for the service and the loop's step
    lam = rate / 1000
    m = policy.slots
    waits = erlang_c(m, lam * held)
    cs2 = (fit.spread_ms / held) ** 2 if held > 0 else 0.0
    queue = waits / (m / held - lam) * (1 + cs2) / 2
    # exponential conditional on waiting: P(W > t) = C·exp(−t·C/Wq)
    p99 = (queue / waits * math.log(waits / 0.01) if waits > 0.01 else 0.0) + over
    return Prediction(rate, load, True, busy=lam * mean / m, batch=1.0, queue_ms=queue + over, batch_ms=0.0,
                      wait_p99_ms=p99, in_worker_p99_ms=p99 + mean)


Points = list[tuple[float, float]]  # a duration's distribution: (ms, probability)


def _bulk(fit: ServiceFit, policy: Policy, rate: float, load: float) -> Prediction:
    lam = rate / 1000 / policy.workers  # per worker (each has its own batcher), per ms
    n_max, over = policy.max_batch, policy.overhead_ms
    window = policy.max_wait_ms + over
    services = [[(0.0, 1.0)]] + [_two_point(max(fit.mean_ms(b), 0.0) + over, fit.spread_ms ** 2)
                                 for b in range(1, n_max + 1)]
    chain = _Chain(lam, n_max, window, services)
    pi = chain.solve()
    if pi is None:
        return Prediction(rate, load, stable=False)
    cyc = _cycles(chain, pi)
    served = cyc.served
    queue, batch = cyc.area_q / served, cyc.area_b / served
    in_service = sum(w * b * fit.mean_ms(b) for b, w in enumerate(cyc.batches) if b) / served
    held = min(lam * cyc.blocked / served, 1.0)  # requests arriving while the slot is held (PASTA: its time share)
    residual = _Residual([(d, w * x) for b, w in enumerate(cyc.batches) if b for d, x in services[b] if d > 0])
    p99 = _p99(held, queue, batch, cyc.carried_b / served, cyc.missed / served, residual, window,
               fit.mean_ms(n_max) + over) + over
    busy = lam * sum(w * fit.mean_ms(b) for b, w in enumerate(cyc.batches) if b) / served
    return Prediction(rate, load, True, busy=min(busy, 1.0),
                      batch=sum(w * b * b for b, w in enumerate(cyc.batches)) / served, queue_ms=queue + over,
                      batch_ms=batch, wait_p99_ms=p99, in_worker_p99_ms=p99 + in_service)


@dataclass(slots=True)
class _Cycles:
    """Means per cycle of one slot (a batch formed, then served), under the chain's stationary distribution."""

    served: float = 0.0  # requests served
    area_q: float = 0.0  # request·ms waited before their batch began forming
    area_b: float = 0.0  # request·ms waited in the window
    carried_b: float = 0.0  # ... of it, by requests already waiting when the window began
    missed: float = 0.0  # requests that arrived during a service and miss the next batch too
    blocked: float = 0.0  # ms of service
    batches: list[float] = field(default_factory=list)  # P(batch size)


def _cycles(chain: _Chain, pi: list[float]) -> _Cycles:
    n_max, lam = chain.n_max, chain.lam
    out = _Cycles(batches=[0.0] * (n_max + 1))
    for q, p in enumerate(pi):
        if p == 0.0:
            continue
        if q >= n_max:
            left = q - n_max
            out.batches[n_max] += p
            out.area_q += p * left * chain.block_mean[n_max]
            out.missed += p * sum(x * min(k, max(0, left + k - n_max)) for k, x in enumerate(chain.arrivals[n_max]))
            continue
        sizes, area, length = chain.window(max(q, 1))
        out.area_b += p * area
        out.carried_b += p * q * length
        for size, prob in sizes:
            out.batches[size] += p * prob
            out.missed += p * prob * sum(x * (k - n_max) for k, x in enumerate(chain.arrivals[size]) if k > n_max)
    out.served = sum(w * b for b, w in enumerate(out.batches))
    out.blocked = sum(w * chain.block_mean[b] for b, w in enumerate(out.batches))
    out.area_q += lam * sum(w * chain.block_second[b] for b, w in enumerate(out.batches)) / 2
    return out


def _simulated(fit: ServiceFit, policy: Policy, rate: float, load: float, requests: int = SIM_REQUESTS) -> Prediction:
    """Several slots per worker: the worker's loop simulated (seeded) for ``requests`` Poisson requests at the
    worker's share of the rate, the first tenth left out as warm-up. Service times are gamma with the fitted mean
    and spread; the loop's overhead holds the slot after each batch, lengthens the window and delays each take."""
    rng = random.Random(SIM_SEED)
    over, n_max = policy.overhead_ms, policy.max_batch
    lam, window = rate / 1000 / policy.workers, policy.max_wait_ms + over
    arrivals, t = [], 0.0
    for _ in range(requests):
        t += rng.expovariate(lam)
        arrivals.append(t)
    free = [0.0] * policy.concurrency  # when each slot is free (a heap)
    waits, queued, total_batch, batched, last = [], 0.0, 0.0, 0.0, 0.0
    busy = 0.0
    i, skip = 0, requests // 10
    while i < requests:
        form = max(last, heapq.heappop(free), arrivals[i])  # a slot, and a first request
        j = i
        while j < requests and j - i < n_max and arrivals[j] <= form + window:
            j += 1
        dispatch = max(form, arrivals[j - 1]) if j - i == n_max else form + window
        mean = max(fit.mean_ms(j - i), 1e-9)
        shape = (mean / fit.spread_ms) ** 2 if fit.spread_ms > 0 else 0.0
        service = rng.gammavariate(shape, mean / shape) if shape > 0 else mean
        heapq.heappush(free, dispatch + service + over)
        for k in range(max(i, skip), j):
            waits.append((dispatch - arrivals[k] + over, service))
            queued += max(form - arrivals[k], 0.0) + over
            batched += dispatch - max(form, arrivals[k])
            total_batch += j - i
        busy += service if i >= skip else 0.0
        last, i = dispatch, j
    n = len(waits)
    span = arrivals[-1] - arrivals[skip]
    wait_sorted = sorted(w for w, _s in waits)
    in_worker = sorted(w + s for w, s in waits)
    return Prediction(rate, load, True, busy=min(busy / span / policy.concurrency, 1.0), batch=total_batch / n,
                      queue_ms=queued / n, batch_ms=batched / n, wait_p99_ms=wait_sorted[int(0.99 * n)],
                      in_worker_p99_ms=in_worker[int(0.99 * n)])


class _Residual:
    """The rest of a wait for a slot, seen by a request arriving during it (length-biased: a decreasing step
    density over the mixture of durations)."""

    def __init__(self, points: Points) -> None:
        total = sum(s * w for s, w in points) or 1.0
        self.steps = sorted((s, w / total) for s, w in points)  # the density drops by w at s
        self.mean = sum(s * s * w for s, w in self.steps) / 2

    def tail(self, r: float) -> float:
        if r <= 0:
            return 1.0
        return sum(w * (s - r) for s, w in self.steps if s > r)

    def tail_plus_exp(self, u: float, theta: float) -> float:
        """P(R + E > u), E exponential with mean ``theta``: P(R > u) + ∫₀ᵘ f(r) e^{-(u-r)/θ} dr."""
        if u <= 0:
            return 1.0
        out, start = self.tail(u), 0.0
        density = sum(w for _s, w in self.steps)
        for s, w in self.steps:
            end = min(s, u)
            if end > start:
                out += density * theta * (math.exp(-(u - end) / theta) - math.exp(-(u - start) / theta))
            if s >= u:
                break
            density -= w
            start = s
        return out


def _p99(during: float, queue: float, batch: float, carried_b: float, missed: float, residual: _Residual,
         window: float, full: float) -> float:
    """The 99th percentile of queue + batch wait, from the model's means, as a mixture (an approximation):

    - a request arriving while a slot is free (share 1 − ``during``) waits only for its window: uniform over it,
      the excess of its mean over half a window a point mass at the full window;
    - one arriving while none is free waits the rest of that wait (length-biased), then its window (taken at its
      mean), and — for the share ``missed`` that the next batch cannot hold — at least one more wait for a slot
      (``full``), the rest exponential with the mean that makes up the queue-wait mean.
    """
    mean_a = (batch - carried_b) / (1 - during) if during < 1 else 0.0
    mean_b = carried_b / during if during > 0 else 0.0
    if mean_a <= 0 or window <= 0:
        point, width, at_full = 0.0, 0.0, 0.0
    elif mean_a <= window / 2:
        point, width, at_full = 0.0, 2 * mean_a, 0.0
    else:
        point, width, at_full = window, window, min(2 * mean_a / window - 1, 1.0)
    miss = min(missed / during, 1.0) if during > 0 else 0.0
    extra = queue / during - residual.mean if during > 0 else 0.0  # mean wait beyond the residual
    theta = max(extra / miss - full, 0.0) if miss > 0 else 0.0

    def tail(t: float) -> float:  # P(queue + batch wait > t)
        alone = max(width - t, 0.0) / width if width > 0 else (1.0 if t < 0 else 0.0)
        alone = (1 - at_full) * alone + at_full * (1.0 if t < point else 0.0)
        u = t - mean_b
        queued = (1 - miss) * residual.tail(u)
        if miss > 0:
            queued += miss * (residual.tail_plus_exp(u - full, theta) if theta > 0 else residual.tail(u - full))
        return (1 - during) * alone + during * queued

    lo, hi = 0.0, max(window, full, 1.0)
    while tail(hi) > 0.01:
        hi *= 2
        if hi > 1e9:
            return math.inf
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) > 0.01 else (lo, mid)
    return hi


class _Chain:
    """The number waiting when the slot frees (Poisson λ per ms), truncated where its mass is negligible.
    ``blocking[b]``: the slot's busy time after a batch of b is dispatched (its service time, as two points)."""

    def __init__(self, lam: float, n_max: int, window: float, blocking: list[Points]) -> None:
        self.lam, self.n_max, self.max_wait = lam, n_max, window
        self.block_mean = [sum(d * w for d, w in pts) for pts in blocking]
        self.block_second = [sum(d * d * w for d, w in pts) for pts in blocking]
        self.arrivals = [_mixed_poisson(lam, pts) for pts in blocking]
        self._windows: dict[int, tuple[list[tuple[int, float]], float, float]] = {}

    def window(self, q: int) -> tuple[list[tuple[int, float]], float, float]:
        """For a batch begun with ``q`` waiting: the batch-size distribution, the mean area of requests waiting in
        the window (request·ms), and the window's mean length; ∫₀ᵀ P(Pois(λt) = k) dt = P(Pois(λT) > k) / λ."""
        if q in self._windows:
            return self._windows[q]
        need = self.n_max - q
        pmf = _poisson(self.lam * self.max_wait, need)
        sizes, area, length, cum = [], 0.0, 0.0, 0.0
        for k in range(need):
            cum += pmf[k]
            above = max(1.0 - cum, 0.0) / self.lam
            area += (q + k) * above
            length += above
            sizes.append((q + k, pmf[k]))
        sizes.append((self.n_max, max(1.0 - cum, 0.0)))
        self._windows[q] = (sizes, area, length)
        return self._windows[q]

    def row(self, q: int) -> list[float]:
        """P(next = j) for j from ``max(q - n_max, 0)``: a window then a wait below n_max, a full batch above."""
        if q >= self.n_max:
            return self.arrivals[self.n_max]
        out: list[float] = []
        for size, prob in self.window(max(q, 1))[0]:
            dist = self.arrivals[size]
            if len(out) < len(dist):
                out.extend([0.0] * (len(dist) - len(out)))
            for j, x in enumerate(dist):
                out[j] += prob * x
        return out

    def solve(self) -> list[float] | None:
        if self.lam * self.block_mean[self.n_max] >= self.n_max:
            return None
        states = max(8 * self.n_max, 64)
        while states <= MAX_STATES:
            pi = self._solve(states)
            if sum(pi[-self.n_max:]) < TAIL_MASS:
                return pi
            states *= 2
        return None

    def _solve(self, n: int) -> list[float]:
        """π = πP with π₀ = 1, by Gaussian elimination in the band (the matrix I − Pᵀ is column diagonally
        dominant, so no pivoting is needed), then normalised. Transitions past the last state land on it."""
        rows = {q: self.row(q) for q in range(min(self.n_max, n))}
        full = self.row(self.n_max)
        lo = max(len(full), max((len(r) for r in rows.values()), default=1)) - 1  # most states a step can climb
        hi = self.n_max  # most states a step can fall
        width = lo + hi + 1
        band = [[0.0] * width for _ in range(n)]  # band[j][q - j + lo] = A[j][q], A = Pᵀ − I

        for q in range(n):
            dist, base = (rows[q], 0) if q < self.n_max else (full, q - self.n_max)
            for k, x in enumerate(dist):
                j = min(base + k, n - 1)
                band[j][q - j + lo] += x
            band[q][lo] -= 1.0
        rhs = [0.0] * n
        band[0] = [0.0] * width
        band[0][lo], rhs[0] = 1.0, 1.0
        for p in range(n):  # forward elimination
            pivot_row = band[p]
            pivot = pivot_row[lo]
            for j in range(p + 1, min(p + lo + 1, n)):
                row = band[j]
                x = row[p - j + lo]
                if x == 0.0:
                    continue
                f = x / pivot
                off = p - j
                for c in range(lo, min(lo + hi + 1, lo + n - p)):
                    v = pivot_row[c]
                    if v != 0.0:
                        row[c + off] -= f * v
                rhs[j] -= f * rhs[p]
        pi = [0.0] * n
        for p in range(n - 1, -1, -1):  # back substitution
            row = band[p]
            total = rhs[p]
            for c in range(lo + 1, min(lo + hi + 1, lo + n - p)):
                total -= row[c] * pi[p + c - lo]
            pi[p] = max(total / row[lo], 0.0)
        norm = sum(pi)
        return [x / norm for x in pi]


def _poisson(mean: float, count: int) -> list[float]:
    """P(Pois(mean) = k) for k < ``count``, computed in logs (no underflow for large means)."""
    if mean <= 0:
        return [1.0] + [0.0] * (count - 1) if count else []
    log_mean = math.log(mean)
    return [math.exp(-mean + k * log_mean - math.lgamma(k + 1)) for k in range(count)]


def _two_point(mean: float, var: float) -> Points:
    """A duration with this mean and variance, as two points (never negative)."""
    if var <= 0 or mean <= 0:
        return [(mean, 1.0)]
    if var < mean * mean:
        sd = math.sqrt(var)
        return [(mean - sd, 0.5), (mean + sd, 0.5)]
    top = (var + mean * mean) / mean
    return [(0.0, 1 - mean / top), (top, mean / top)]


def _mixed_poisson(lam: float, points: Points) -> list[float]:
    """Poisson arrivals (λ per ms) during a time distributed as ``points``; cut where the rest is negligible."""
    highest = max(s for s, _ in points) * lam
    count = int(highest + 12 * math.sqrt(highest) + 12)
    out = [0.0] * count
    for s, w in points:
        if w > 0:
            for k, x in enumerate(_poisson(lam * s, count)):
                out[k] += w * x
    while len(out) > 1 and out[-1] < 1e-14:
        out.pop()
    return out


