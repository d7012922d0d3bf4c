"""The capacity model behind ``qdeck load plan``: how long requests wait in front of a batching worker at a rate.

**Service line.** A batch of B requests takes ``S(B) = a + b·B`` (ms) with a spread σ about the line, fitted by
weighted least squares over the per-batch-size service records of one or more runs (``service_by_batch``: each
size's mean weighted by its number of batches, n/B), or, for runs made before that record existed, over each run's
mean service time against its mean batch size (both request-weighted, so ``E[S] = a + b·E[B]`` holds exactly; σ² is
then the service variance less ``b²·Var(B)``).

**Policy** (the worker's, ``loadgen.worker.core``): one batcher per worker takes the first waiting request as soon
as a model slot is free, then collects until the batch has ``max_batch`` requests or ``max_wait`` has passed since
it began, whichever is first; requests already waiting when a slot frees join at once, so a backlog makes full
batches. ``queue_wait`` is a request's time before its batch began forming, ``batch_wait`` the time from then to
inference start. The loop's own time per step outside the service stamps (``overhead_ms``: a broker round trip, on
the order of a millisecond on a loaded 2-core host) holds the slot after each batch, lengthens each window and
delays each take; ``estimate_overhead`` fits it to the mean batch sizes runs measured.

**Queue**: ``loadgen.results.queue_model`` (the models, their sources and their limits).

Utilisation ("load") is λ over the largest throughput (``queue_model.capacity``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from loadgen.errors import ReportError
from loadgen.results.queue_model import SIM_REQUESTS, Policy, Prediction, ServiceFit, capacity, erlang_c, predict

SEARCH_REQUESTS = 30_000  # ... in each step of the overhead search
PROFILE = re.compile(r", batch ≤ (\d+), wait ([0-9.e+-]+)ms, ×(\d+)$")

__all__ = ["Policy", "Prediction", "ServiceFit", "capacity", "erlang_c", "estimate_overhead", "fit_means",
           "fit_service", "measured", "policy_from_summary", "predict", "run_means", "service_sums", "statement",
           "workers_needed"]


# ---- the service line ---------------------------------------------------------------------------------------------

def service_sums(doc: Mapping[str, Any]) -> dict[int, tuple[int, float, float]]:
    """A summary's ``service_by_batch`` as ``{size: (n, sum µs, sum of squares µs²)}`` (empty when absent)."""
    out: dict[int, tuple[int, float, float]] = {}
    entries = doc.get("service_by_batch")
    if not isinstance(entries, dict):
        return out
    for key, e in entries.items():
        try:
            size, n = int(key), int(e["n"])
            if "sum_us" in e and "sum_sq_us" in e:
                total, squares = float(e["sum_us"]), float(e["sum_sq_us"])
            else:  # mean and population stddev, ms
                mean, sd = float(e["mean_ms"]) * 1000, float(e["stddev_ms"]) * 1000
                total, squares = n * mean, n * (sd * sd + mean * mean)
        except (KeyError, TypeError, ValueError):
            raise ReportError(f"service_by_batch entry {key!r} is not {{n, mean_ms, stddev_ms}}") from None
        if size >= 1 and n > 0 and math.isfinite(total) and math.isfinite(squares):
            out[size] = (n, total, squares)
    return out


def fit_service(sums: Mapping[int, tuple[int, float, float]]) -> ServiceFit:
    """Weighted least squares of the per-size mean service time (ms) on batch size, each size weighted by its number
    of batches (n/size: a batch's requests share one service time)."""
    points = []
    for size, (n, total, squares) in sorted(sums.items()):
        mean = total / n / 1000
        var = max(squares / n / 1e6 - mean * mean, 0.0)
        points.append((float(size), mean, var, n / size))
    if not points:
        raise ReportError("no service times to fit: the runs have no replies")
    return _wls(points, "per batch size")


def fit_means(runs: list[tuple[float, float, float, float, float]]) -> ServiceFit:
    """The fallback fit over runs' ``(mean batch, mean service ms, service stddev ms, batch variance, replies)``."""
    fit = _wls([(x, y, 0.0, n / max(x, 1.0)) for x, y, _sd, _vb, n in runs], "per run means")
    resid = sum(n * max(sd * sd - fit.b_ms ** 2 * vb, 0.0) for _x, _y, sd, vb, n in runs) / sum(r[4] for r in runs)
    return ServiceFit(fit.a_ms, fit.b_ms, math.sqrt(resid), fit.r2, fit.sizes, fit.batches, fit.source)


def _wls(points: list[tuple[float, float, float, float]], source: str) -> ServiceFit:
    weight = sum(w for *_, w in points)
    xbar = sum(x * w for x, _y, _v, w in points) / weight
    ybar = sum(y * w for _x, y, _v, w in points) / weight
    sxx = sum(w * (x - xbar) ** 2 for x, _y, _v, w in points)
    sxy = sum(w * (x - xbar) * (y - ybar) for x, y, _v, w in points)
    b = sxy / sxx if sxx > 1e-12 else 0.0
    a = ybar - b * xbar
    ss_res = sum(w * (y - a - b * x) ** 2 for x, y, _v, w in points)
    ss_tot = sum(w * (y - ybar) ** 2 for _x, y, _v, w in points)
    r2 = (1 - ss_res / ss_tot if ss_tot > 1e-12 else 1.0) if len(points) > 1 else None
    spread = math.sqrt((ss_res + sum(w * v for _x, _y, v, w in points)) / weight)
    return ServiceFit(a, b, spread, r2, len(points), weight, source)


def policy_from_summary(doc: Mapping[str, Any]) -> tuple[Policy | None, str]:
    """The batching policy the run's replies name (``workers``), or None and why not."""
    profiles = [k for k in (doc.get("workers") or {}) if k != "unknown"]
    found = {m.groups() for k in profiles if (m := PROFILE.search(str(k))) is not None}
    if not found:
        return None, "the run's replies do not name the worker's batching"
    if len(found) > 1:
        return None, "the run's replies came from workers with different batching"
    max_batch, wait, concurrency = found.pop()
    return Policy(int(max_batch), float(wait), int(concurrency)), ""


def run_means(doc: Mapping[str, Any]) -> tuple[float, float, float, float, float] | None:
    """A run's (mean batch, mean service ms, service stddev ms, batch-size variance, replies), request-weighted,
    for ``fit_means``; None without replies."""
    sizes = {int(k): int(v) for k, v in (doc.get("batch_sizes") or {}).items()}
    service = (doc.get("stages") or {}).get("service") or {}
    n = sum(sizes.values())
    if not n or not service.get("count"):
        return None
    mean = sum(k * v for k, v in sizes.items()) / n
    var = sum(v * (k - mean) ** 2 for k, v in sizes.items()) / n
    return mean, float(service["mean_ms"]), float(service.get("stddev_ms", 0.0)), var, float(n)


def measured(doc: Mapping[str, Any]) -> dict[str, float | None] | None:
    """What a run measured of what the model predicts: its achieved rate, mean queue and batch wait, mean batch
    size (per request) and the p99 of actual send → reply received (the time in the worker plus the reply's
    transit; None when it stands on timeouts). None when nothing was replied."""
    stages = doc.get("stages") or {}
    queue, batch = stages.get("queue_wait") or {}, stages.get("batch_wait") or {}
    if not queue.get("count") or not batch.get("count"):
        return None
    sizes = {int(k): int(v) for k, v in (doc.get("batch_sizes") or {}).items()}
    total = sum(sizes.values())
    e2e = stages.get("end_to_end_uncorrected") or {}
    p99 = e2e.get("p99_ms") if "p99" not in (e2e.get("at_least") or ()) else None
    return {"rate": float((doc.get("rates") or {}).get("achieved") or 0.0), "queue_ms": float(queue["mean_ms"]),
            "batch_ms": float(batch["mean_ms"]), "wait_ms": float(queue["mean_ms"]) + float(batch["mean_ms"]),
            "batch": sum(k * v for k, v in sizes.items()) / total if total else None,
            "in_worker_p99_ms": float(p99) if p99 is not None else None}


def statement(policy: Policy) -> str:
    """The model used for ``policy``, in a line, with its sources."""
    split = f"; the rate split evenly over {policy.workers} workers" if policy.workers > 1 else ""
    if policy.max_batch == 1:
        return (f"M/G/{policy.slots}: Erlang C and the Allen-Cunneen mean wait (Allen 1990); p99 exponential "
                "conditional on waiting")
    if policy.concurrency == 1:
        return (f"bulk service, batches of 1-{policy.max_batch} with a {policy.max_wait_ms:g} ms window, one slot: "
                "the embedded Markov chain at slot-free instants (Kendall 1953, Neuts 1967), exact mean waits for "
                f"Poisson arrivals; p99 from a mixture approximation{split}")
    return (f"bulk service, batches of 1-{policy.max_batch} with a {policy.max_wait_ms:g} ms window, "
            f"{policy.concurrency} slots: the worker's loop simulated ({SIM_REQUESTS:,} Poisson requests, "
            f"seeded){split}")


def estimate_overhead(fit: ServiceFit, policy: Policy, runs: list[tuple[float, float]],
                      limit_ms: float = 20.0) -> float | None:
    """The loop overhead that brings the model's mean batch size (per request) at each run's rate closest to what
    the run measured (least squares, golden-section search); None when batch sizes say nothing (max_batch 1)."""
    if policy.max_batch == 1 or not runs:
        return None
    top = policy.slots * policy.max_batch * 1000 / max(r for r, _ in runs) - fit.mean_ms(policy.max_batch)
    hi = min(limit_ms, 0.999 * top)
    if hi <= 0:
        return 0.0

    def cost(over: float) -> float:
        pol = replace(policy, overhead_ms=over)
        total = 0.0
        for rate, batch in runs:
            pred = predict(fit, pol, rate, requests=SEARCH_REQUESTS)
            if not pred.stable:
                return math.inf
            total += (pred.batch - batch) ** 2
        return total

    golden = (math.sqrt(5) - 1) / 2
    lo, up = 0.0, hi
    x1, x2 = up - golden * (up - lo), lo + golden * (up - lo)
    f1, f2 = cost(x1), cost(x2)
    while up - lo > 0.005:
        if f1 <= f2:
            up, x2, f2 = x2, x1, f1
            x1 = up - golden * (up - lo)
            f1 = cost(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + golden * (up - lo)
            f2 = cost(x2)
    best = (lo + up) / 2
    return 0.0 if cost(0.0) <= cost(best) else best


def workers_needed(fit: ServiceFit, policy: Policy, rate: float, p99_ms: float, limit: int = 4096) -> int | None:
    """The fewest workers (each with the policy's slots) whose predicted p99 time in the worker is within
    ``p99_ms`` at ``rate``; None when none up to ``limit`` (or none at all: one batch alone takes longer)."""
    if fit.mean_ms(1) > p99_ms:
        return None
    low = max(1, math.ceil(rate / capacity(fit, replace(policy, workers=1)) + 1e-9))

    def ok(k: int) -> bool:
        pred = predict(fit, replace(policy, workers=k), rate)
        return pred.stable and pred.in_worker_p99_ms <= p99_ms

    hi = low
    while not ok(hi):
        if hi >= limit:
            return None
        hi = min(hi * 2, limit)
    lo = low - 1  # not ok (or below the stable range)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi
