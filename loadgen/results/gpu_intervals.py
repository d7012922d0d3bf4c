"""GPU telemetry on the load generator's side: the samples replies carry, per interval, and the "GPU idle while
queue wait rises" rule.

Each reply (and each streamed reply's final chunk) may carry its worker's latest GPU sample (``loadgen.gpu_sample``);
many replies carry the same one, so a sample is counted once, in the interval whose replies first brought it (its
``at_ms`` only grows per worker). Intervals are the recorder's (``Recorder.roll``): the same time axis as the
stages' interval logs, ``t`` each interval's end in seconds from the run's start. summary.json's ``gpu`` (absent when
no reply carried a sample)::

    gpu {samples (distinct samples received),
         devices [{worker, index, mem_total_mib,
                   intervals [{t, util_pct (mean), mem_used_mib (largest), power_w (mean), sm_clock_mhz (mean),
                               samples}]}]  (the intervals in which that GPU was sampled),
         intervals [{t, util_pct (the mean over the GPUs sampled in it, or null), queue_wait_p50_ms (or null)}]}

``idle_flag`` states the one rule the summary's ``flags`` and the HTML report both use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loadgen.gpu_sample import DeviceSums, GpuSample

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

IDLE_UTIL_PCT = 50.0  # mean GPU utilisation under this: the GPUs were mostly idle
RISE_MS = 1.0  # the queue wait p50 rose by more than this (ms) ...
RISE_SHARE = 0.10  # ... and by more than this share of the interval before's
FLAG = "gpu_idle_while_queue_wait_rises"
LIKELY_CAUSES = (
    "prefetch too small: the worker holds too few requests to keep its GPU busy (on RabbitMQ its prefetch is "
    "--max-batch x (--concurrency + 1))",
    "too few model slots: raise the worker's --concurrency, so that a batch forms while another runs",
    "too few workers: add workers (on Kafka, and partitions for them)",
)


class GpuIntervals:
    """The run's GPU samples, per interval: ``add`` per reply that carries one, ``roll`` per interval."""

    def __init__(self) -> None:
        self.samples = 0
        self._last_at: dict[str, int] = {}  # per worker: the newest sample counted
        self._open: dict[tuple[str, int], DeviceSums] = {}  # (worker, GPU index): this interval's readings
        self._devices: dict[tuple[str, int], dict[str, Any]] = {}
        self._intervals: list[dict[str, Any]] = []

    def add(self, worker: str, sample: GpuSample) -> None:
        if sample.at_ms <= self._last_at.get(worker, -1):
            return  # counted already (a later reply carrying the same sample), or older than one counted
        self._last_at[worker] = sample.at_ms
        self.samples += 1
        for index, dev in enumerate(sample.devices):
            sums = self._open.get((worker, index))
            if sums is None:
                sums = self._open[(worker, index)] = DeviceSums()
            sums.add(dev)

    def roll(self, end_s: float, queue_wait: HdrHistogram) -> None:
        """Close the interval ending at ``end_s`` (s from the run's start); ``queue_wait``: its histogram (µs)."""
        t = round(end_s, 3)
        utils = []
        for key, sums in self._open.items():
            f = sums.figures(key[1])
            device = self._devices.get(key)
            if device is None:
                device = self._devices[key] = {"worker": key[0], "index": key[1], "mem_total_mib": None,
                                               "intervals": []}
            if f.mem_total_mib is not None:
                device["mem_total_mib"] = f.mem_total_mib
            device["intervals"].append({"t": t, "util_pct": f.util_pct, "mem_used_mib": f.mem_used_mib,
                                        "power_w": f.power_w, "sm_clock_mhz": f.sm_clock_mhz, "samples": f.samples})
            if f.util_pct is not None:
                utils.append(f.util_pct)
        self._open = {}
        wait = queue_wait.get_value_at_percentile(50) / 1000 if queue_wait.get_total_count() else None
        self._intervals.append({"t": t, "util_pct": round(sum(utils) / len(utils), 1) if utils else None,
                                "queue_wait_p50_ms": wait})

    def record(self) -> dict[str, Any] | None:
        """summary.json's ``gpu`` section (None: no reply carried a sample)."""
        if not self.samples:
            return None
        return {"samples": self.samples, "devices": [self._devices[k] for k in sorted(self._devices)],
                "intervals": list(self._intervals)}


def merge_sections(sections: Sequence[Any], queue_wait_p50_ms: Sequence[float | None]) -> dict[str, Any] | None:
    """The ``gpu`` sections of a distributed run's agents (``record()`` each) as one, or None when no agent received
    a sample. Agents share the workers, so a GPU is the same (worker, index) in every section. The agents roll on
    the same intervals, so their k-th intervals are one (as ``merge_logs`` merges them; the last one ends when
    each agent's share ends, the first agent's end is the merged one's ``t``); a GPU's figures in it are combined:
    utilisation, power and clock as means weighted by each agent's samples, memory used the largest. ``samples``
    adds the agents' counts: a sample that replies brought to two agents counts once for each.
    ``queue_wait_p50_ms``: the merged run's queue wait p50 of each interval, in order."""
    parts = [part for part in sections if isinstance(part, Mapping) and part.get("samples")]
    if not parts:
        return None
    ends: dict[int, float] = {}  # interval k -> its t (the first agent's that has it)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for part in parts:
        index_of: dict[Any, int] = {}
        for k, row in enumerate(part.get("intervals") or []):
            index_of[row.get("t")] = k
            ends.setdefault(k, float(row["t"]))
        for dev in part.get("devices") or []:
            key = (str(dev.get("worker")), int(dev.get("index") or 0))
            entry = found.setdefault(key, {"mem_total_mib": None, "by_k": {}})
            if dev.get("mem_total_mib") is not None:
                entry["mem_total_mib"] = dev["mem_total_mib"]
            for row in dev.get("intervals") or []:
                at = index_of.get(row.get("t"))
                if at is not None:
                    entry["by_k"].setdefault(at, []).append(row)
    devices = []
    utils: dict[int, list[float]] = {}
    for (worker, index), entry in sorted(found.items()):
        rows = []
        for k, same in sorted(entry["by_k"].items()):
            util = _weighted(same, "util_pct")
            mems = [r["mem_used_mib"] for r in same if _num(r.get("mem_used_mib")) is not None]
            clock = _weighted(same, "sm_clock_mhz")
            rows.append({"t": ends[k], "util_pct": None if util is None else round(util, 1),
                         "mem_used_mib": max(mems) if mems else None, "power_w": _rounded(_weighted(same, "power_w")),
                         "sm_clock_mhz": None if clock is None else round(clock),
                         "samples": sum(int(r.get("samples") or 0) for r in same)})
            if util is not None:
                utils.setdefault(k, []).append(util)
        devices.append({"worker": worker, "index": index, "mem_total_mib": entry["mem_total_mib"], "intervals": rows})
    intervals = [{"t": t, "util_pct": round(sum(utils[k]) / len(utils[k]), 1) if k in utils else None,
                  "queue_wait_p50_ms": queue_wait_p50_ms[k] if k < len(queue_wait_p50_ms) else None}
                 for k, t in sorted(ends.items())]
    return {"samples": sum(int(part["samples"]) for part in parts), "devices": devices, "intervals": intervals}


def _weighted(rows: Sequence[Mapping[str, Any]], name: str) -> float | None:
    """The mean of ``name`` over ``rows``, each weighted by its samples (rows without the figure left out)."""
    total = weight = 0.0
    for row in rows:
        value, n = _num(row.get(name)), _num(row.get("samples"))
        if value is not None and n:
            total += value * n
            weight += n
    return total / weight if weight else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _num(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) and value == value and abs(value) < 1e300 else None


def idle_while_queue_rises(intervals: Sequence[Any]) -> list[float]:
    """The ``t`` of each interval in which the GPUs were mostly idle — mean utilisation under ``IDLE_UTIL_PCT`` —
    while the queue wait p50 rose from the interval before's by more than ``RISE_MS`` and by more than
    ``RISE_SHARE`` of it: requests waited in the queue while the GPUs had room. ``intervals``: the ``gpu`` section's
    (values that are not numbers count as missing; an interval without a queue wait breaks the comparison)."""
    found: list[float] = []
    before: float | None = None
    for row in intervals:
        row = row if isinstance(row, Mapping) else {}
        t, util, wait = _num(row.get("t")), _num(row.get("util_pct")), _num(row.get("queue_wait_p50_ms"))
        if (t is not None and util is not None and wait is not None and before is not None
                and util < IDLE_UTIL_PCT and wait - before > max(RISE_MS, RISE_SHARE * before)):
            found.append(t)
        before = wait
    return found


def idle_flag(gpu: Any) -> dict[str, Any] | None:
    """The summary's ``flags`` entry for ``idle_while_queue_rises`` over a ``gpu`` section, or None when no
    interval raises it."""
    rows = gpu.get("intervals") if isinstance(gpu, Mapping) else None
    found = idle_while_queue_rises(rows if isinstance(rows, list) else [])
    if not found:
        return None
    at = ", ".join(f"{t:g}" for t in found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    return {"flag": FLAG,
            "message": f"GPU idle while queue wait rises: in {len(found)} interval{'s' if len(found) > 1 else ''} "
                       f"(ending at {at} s) the GPUs' mean utilisation was under {IDLE_UTIL_PCT:g} % while the queue "
                       f"wait p50 rose by more than {RISE_MS:g} ms and {RISE_SHARE:.0%}: requests waited in the queue "
                       "while the GPUs had room",
            "intervals_t": found, "likely_causes": list(LIKELY_CAUSES)}
