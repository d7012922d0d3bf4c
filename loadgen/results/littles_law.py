"""Little's law on a run: the broker's mean request-queue depth against arrival rate × mean queue wait.

For any queue in a steady state, over a long enough window, L = λ·W: the mean number waiting equals the rate they
arrive at times the mean time each waits. A run measures both sides independently: L from the broker
(``broker_samples``, read by the broker's own count), λ·W from the generator's and the worker's stamps. Their ratio
checks the one against the other: near 1 on a steady run, far from it when a figure is wrong (clocks, a stage
boundary, a sampler reading the wrong thing) or the run was not steady.

The figures (``summary.json`` ``littles_law``):

- ``mean_depth`` (L): the mean depth over the measured window, where depth is the requests waiting in the broker,
  not yet handed to a worker: RabbitMQ's ready messages (passive ``queue.declare``); on a Redis stream the worker
  group's lag (entries not yet delivered, ``XINFO GROUPS``), not its pending entries (delivered, so their
  ``queue_wait`` is over); on Kafka the group's lag (end offsets − committed offsets). It is ``broker_samples``'
  ``depth_mean``, the mean of every reading (Redis and RabbitMQ: every 0.025-0.1 s, each at a random instant of its
  period); a summary without it (written before qdeck read more often than once an interval) gives the mean of its
  per-interval samples, weighted by their readings (``n``, 1 where absent).
- ``arrival_rate`` (λ): the achieved send rate, requests/s.
- ``mean_queue_wait_ms`` (W): the ``queue_wait`` stage's mean (actual send → taken by the worker) over the same window.
- ``predicted_depth`` = λ·W; ``ratio`` = mean_depth / predicted_depth; ``ratio_stderr`` (below; null when it cannot be
  told) and ``depth_samples``, the readings the mean depth is the mean of.

The ratio's standard error (``ratio_stderr``; the console prints it as ``± x``) is the mean depth's, by batch means:
successive readings 0.025-0.1 s apart are correlated (a batching worker's queue is a saw-tooth from 0 to a batch,
~0.1 s long; a burst stays in the queue for a while), so the spread of single readings over √n would understate it. The
readings are grouped into at most ``MAX_BATCHES`` batches of whole consecutive intervals (one interval each on runs
of up to 30 intervals; 2 minutes each on a 1 h run at 1 s), whose means are taken as independent — true when the
queue forgets its state within a batch (1 s or more; a steady queue's saw-tooth and busy periods are far shorter) —
and the error is their spread / √batches. From fewer than 2 batches it is not given.

What moves the ratio off 1 besides error: the readings are instants, so the mean depth has sampling noise
(``ratio_stderr`` estimates it; on the saw-tooth above over 8 s: ± 0.02-0.05 from 320 readings, ± 0.05-0.09 from 80,
± 0.20 from 8); requests a worker holds before its batch forms are in ``queue_wait`` but no longer in the broker's
depth (the worker's read-ahead on Redis, its prefetch on RabbitMQ: ratio below 1); Kafka's lag counts records taken
but not yet committed (ratio above 1); requests that time out count in λ but have no ``queue_wait``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MIN_SAMPLES = 5  # fewer depth readings than this: not judged
TOLERANCE = 0.15  # a ratio further than this from 1 gets a note saying what it most likely means
MAX_BATCHES = 30  # the standard error's batch means: at most this many (whole intervals each)

__all__ = ["MAX_BATCHES", "MIN_SAMPLES", "TOLERANCE", "batch_means", "depth_mean", "depth_stderr", "littles_law",
           "ratio_stderr"]


def _intervals(broker_samples: Mapping[str, Any] | None) -> list[tuple[float, int]]:
    """(depth, readings) of each interval sample that has a depth, in order (a sample without ``n`` is one
    reading: summaries from before the readings were counted)."""
    if not broker_samples:
        return []
    samples: Sequence[Mapping[str, Any]] = broker_samples.get("samples") or ()
    out = []
    for s in samples:
        if not isinstance(s, Mapping) or s.get("depth") is None:
            continue
        n = s.get("n", 1)
        if isinstance(n, int) and n > 0:
            out.append((float(s["depth"]), n))
    return out


def depth_mean(broker_samples: Mapping[str, Any] | None) -> tuple[float, int] | None:
    """(mean depth, readings it is the mean of): ``depth_mean`` and ``depth_samples`` where the sampler wrote them,
    else the per-interval samples' mean weighted by their readings; None when nothing was read."""
    if not broker_samples:
        return None
    mean, n = broker_samples.get("depth_mean"), broker_samples.get("depth_samples")
    if isinstance(mean, int | float) and isinstance(n, int) and n > 0:
        return float(mean), n
    found = _intervals(broker_samples)
    total = sum(n for _d, n in found)
    return (sum(d * n for d, n in found) / total, total) if total else None


def batch_means(broker_samples: Mapping[str, Any] | None, max_batches: int = MAX_BATCHES) -> list[float]:
    """The depth's batch means: the intervals (in order) in at most ``max_batches`` groups of consecutive ones, as
    even as whole intervals allow, each the mean of its readings."""
    found = _intervals(broker_samples)
    b = min(len(found), max_batches)
    out = []
    for g in range(b):
        group = found[g * len(found) // b:(g + 1) * len(found) // b]
        out.append(sum(d * n for d, n in group) / sum(n for _d, n in group))
    return out


def depth_stderr(broker_samples: Mapping[str, Any] | None) -> float | None:
    """The mean depth's standard error: the batch means' standard deviation / √batches; None under 2 batches."""
    means = batch_means(broker_samples)
    if len(means) < 2:
        return None
    mean = sum(means) / len(means)
    return math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means))


def littles_law(broker_samples: Mapping[str, Any] | None, *, arrival_rate: float,
                mean_queue_wait_ms: float | None) -> tuple[dict[str, Any] | None, str | None]:
    """The Little's-law figures and a note when the ratio is more than ``TOLERANCE`` off 1 (what that most likely
    means), or None and a note saying why the run cannot be judged."""
    found = depth_mean(broker_samples)
    n = found[1] if found else 0
    if found is None or n < MIN_SAMPLES:
        return None, (f"Little's law not judged: only {n} broker depth sample"
                      f"{'' if n == 1 else 's'} ({MIN_SAMPLES} needed)")
    if mean_queue_wait_ms is None:
        return None, "Little's law not judged: no replies, so no queue wait"
    if arrival_rate <= 0:
        return None, "Little's law not judged: no requests were sent"
    predicted = arrival_rate * mean_queue_wait_ms / 1000
    if predicted <= 0:
        return None, "Little's law not judged: the queue wait was 0"
    mean = found[0]
    figures: dict[str, Any] = {"mean_depth": round(mean, 3), "arrival_rate": round(arrival_rate, 3),
                               "mean_queue_wait_ms": round(mean_queue_wait_ms, 4),
                               "predicted_depth": round(predicted, 3), "ratio": round(mean / predicted, 4)}
    err = ratio_stderr(broker_samples, figures)
    figures["ratio_stderr"] = round(err, 4) if err is not None else None
    figures["depth_samples"] = n
    return figures, _off_note(figures, err, n)


def _off_note(law: Mapping[str, Any], stderr: float | None, n: int) -> str | None:
    """What a ratio more than ``TOLERANCE`` off 1 most likely means; None when it is within it."""
    ratio = law["ratio"]
    if abs(ratio - 1) <= TOLERANCE:
        return None
    head = f"Little's law: the broker's sampled depth is {ratio:.0%} of λ·W ({law['predicted_depth']:,.1f})"
    if stderr is not None and abs(ratio - 1) <= 2 * stderr:
        return (f"{head}, within the sampling noise (± {stderr:.2f} from {n} samples): a longer run (more samples) "
                "tells")
    if ratio < 1:
        return (f"{head}: the rest waited where the broker no longer counts them as waiting (taken by a worker "
                "before its batch formed: RabbitMQ prefetch, Redis read-ahead) or in transit")
    return (f"{head}: the depth counts requests no longer waiting (Kafka: taken but not yet committed), or the run "
            "was not steady")


def ratio_stderr(broker_samples: Mapping[str, Any] | None, law: Mapping[str, Any] | None) -> float | None:
    """The ratio's standard error: the mean depth's (``depth_stderr``, batch means) over λ·W; None when it cannot be
    told."""
    err = depth_stderr(broker_samples)
    if law is None or err is None or not law.get("predicted_depth"):
        return None
    return float(err / float(law["predicted_depth"]))
