"""Everything qdeck touches inside hdrh (HdrHistogram for Python) beyond its public API, in one place.

Checked against hdrhistogram 0.10.x (pinned ``>=0.10.8,<0.11`` in pyproject.toml). ``fast_path_ok()`` says whether
the installed version still has what this module relies on; ``Recorder`` falls back to ``record_value`` when it does
not, and a test checks that the fast path is the one in use.

- the recording fast path: the histogram's bucket layout (``sub_bucket_mask``, ``unit_magnitude``,
  ``sub_bucket_half_count_magnitude``, ``sub_bucket_half_count``, ``counts_len``), its ``counts`` ctypes array and
  its ``total_count``/``min_value``/``max_value`` fields, applied after a batch of inlined records;
- bulk recording: the same index arithmetic over a numpy array of values (``bulk_indices``), counted into a numpy
  view of ``counts`` (``counts_view``): hdrh's ``_counts_index_for`` for thousands of values in a few numpy calls;
- ``reset``: a memset of ``counts`` (``HdrHistogram.reset`` zeroes counts one by one in Python);
- ``set_interval_stamps``: the start/end stamps (ms) an interval log line takes when its start is 0;
- ``mean_and_stddev``: hdrh's own mean and standard deviation (``get_mean_value``, ``get_stddev``: each walks all
  23,552 counts in Python, 30 and 60 ms here, which held up a run's event loop once per stage per interval with
  ``--csv``) over the recorded range of ``counts`` only, with hdrh's median-equivalent values
  (``_hdr_median_equiv_value``, ``get_value_from_index``): the same figures, in well under a millisecond;
- ``percentiles``: hdrh's ``get_percentile_to_value_dict`` (a Python loop over the counts from index 0: about 1 ms
  per stage, which the live feed paid on the run's event loop every interval) from the running totals of the
  recorded range only (``itertools.accumulate`` and ``bisect``): the same values.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import math
import sys
from collections.abc import Iterable

import numpy as np
from hdrh.histogram import HdrHistogram

LAYOUT_FIELDS = ("sub_bucket_mask", "unit_magnitude", "sub_bucket_half_count_magnitude", "sub_bucket_half_count",
                 "counts_len")
_STATE_FIELDS = ("counts", "total_count", "min_value", "max_value", "start_time_stamp_msec", "end_time_stamp_msec")

Layout = tuple[int, int, int, int, int]


def fast_path_ok(hist: HdrHistogram) -> bool:
    """Whether ``hist`` has every internal this module uses, with the types it expects."""
    if not all(hasattr(hist, name) for name in LAYOUT_FIELDS + _STATE_FIELDS):
        return False
    return isinstance(hist.counts, ctypes.Array) and all(isinstance(getattr(hist, n), int) for n in LAYOUT_FIELDS)


def layout(hist: HdrHistogram) -> Layout:
    mask, unit, half_mag, half_count, counts_len = (int(getattr(hist, name)) for name in LAYOUT_FIELDS)
    return mask, unit, half_mag, half_count, counts_len


def counts_index(layout_: Layout, value: int) -> int:
    """The counts index of ``value`` (≥ 0), as ``HdrHistogram._counts_index_for`` computes it."""
    mask, unit, half_mag, half_count, _len = layout_
    bucket = (value | mask).bit_length() - (unit + half_mag + 1)
    return ((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half_count


EXACT_BELOW = 1 << 53  # integers a float64 holds exactly: bulk_indices takes bit lengths from their exponents


def bulk_ok(hist: HdrHistogram) -> bool:
    """Whether ``bulk_indices`` serves ``hist``: the fast path's internals, and every value it can hold below 2**53."""
    highest = getattr(hist, "highest_trackable_value", None)
    return (fast_path_ok(hist) and isinstance(highest, int) and highest < EXACT_BELOW
            and ctypes.sizeof(hist.counts) == 8 * len(hist.counts))  # 64-bit counts: what counts_view reads


def bulk_indices(layout_: Layout, values: np.ndarray) -> np.ndarray:
    """``counts_index`` of each of ``values`` (int64, ≥ 0, any shape), elementwise. The bit length comes from the
    exponent ``frexp`` gives (exact below 2**53); a value at or past 2**53 gets ``counts_len``, i.e. out of range,
    which it is for every histogram ``bulk_ok`` accepts."""
    mask, unit, half_mag, half_count, counts_len = layout_
    wide = values | mask
    bits = np.frexp(wide.astype(np.float64))[1].astype(np.int64)
    bucket = bits - (unit + half_mag + 1)
    index = ((bucket + 1) << half_mag) + (values >> (bucket + unit)) - half_count
    index[wide >= EXACT_BELOW] = counts_len
    return index


def counts_view(hist: HdrHistogram) -> np.ndarray:
    """``hist``'s counts as a numpy int64 array over the same memory (what is added to it is in the histogram;
    hdrh's 64-bit counts never come near the sign bit)."""
    view = np.ctypeslib.as_array(hist.counts)
    return view if view.dtype == np.int64 else view.view(np.int64)


def counts_array(hist: HdrHistogram) -> ctypes.Array[ctypes.c_int64]:
    counts: ctypes.Array[ctypes.c_int64] = hist.counts
    return counts


def apply_totals(hist: HdrHistogram, n: int, lo: int, hi: int) -> None:
    """After ``n`` values (min ``lo``, max ``hi``) were added straight to ``counts``: bring the totals up to date."""
    hist.total_count += n
    hist.min_value = min(hist.min_value, lo)
    hist.max_value = max(hist.max_value, hi)


def reset(hist: HdrHistogram) -> None:
    """Zero ``hist`` in microseconds (hdrh's own ``reset`` loops over every count in Python)."""
    ctypes.memset(ctypes.addressof(hist.counts), 0, ctypes.sizeof(hist.counts))
    hist.total_count = 0
    hist.min_value = sys.maxsize
    hist.max_value = 0
    hist.start_time_stamp_msec = sys.maxsize
    hist.end_time_stamp_msec = 0


def set_interval_stamps(hist: HdrHistogram, start_s: float, end_s: float) -> None:
    """hdrh's log writer takes a start of 0 to mean "the histogram's own stamps" (ms): make those right."""
    hist.start_time_stamp_msec, hist.end_time_stamp_msec = start_s * 1000, end_s * 1000


def mean_and_stddev(hist: HdrHistogram) -> tuple[float, float]:
    """``(hist.get_mean_value(), hist.get_stddev())``, computed over the counts between the lowest and the highest
    recorded value only (hdrh walks every count); the same arithmetic, so the same figures."""
    n = int(hist.total_count)
    if not n:
        return 0.0, 0.0
    if not fast_path_ok(hist):
        return float(hist.get_mean_value()), float(hist.get_stddev())
    lay = layout(hist)
    counts_len = lay[4]
    lo, hi = int(hist.min_value), int(hist.max_value)
    start = counts_index(lay, lo) if 0 <= lo <= hi else 0
    end = counts_index(lay, hi) + 1 if 0 <= lo <= hi else counts_len
    start, end = max(start, 0), min(end, counts_len)
    segment = hist.counts[start:end]
    median = hist._hdr_median_equiv_value
    value_at = hist.get_value_from_index
    found: list[tuple[int, int]] = []
    total = 0
    for offset, count in enumerate(segment):
        if count:
            value = median(value_at(start + offset))
            found.append((value, count))
            total += count * value
    if sum(c for _v, c in found) != n:  # min/max not kept up to date (a decoded histogram): walk everything
        return float(hist.get_mean_value()), float(hist.get_stddev())
    mean = float(total) / n
    dev_total = 0.0
    for value, count in found:
        dev = (value * 1.0) - mean
        dev_total += (dev * dev) * count
    return mean, math.sqrt(dev_total / n)


def percentiles(hist: HdrHistogram, pcts: Iterable[float]) -> dict[float, int]:
    """``hist.get_percentile_to_value_dict(pcts)``: for each percentile (0 to 100) the value at it, found in the
    running totals of the counts between the lowest and the highest recorded value (hdrh walks from index 0)."""
    wanted = sorted({float(p) for p in pcts if p <= 100})
    n = int(hist.total_count)
    if not wanted or not n:
        return {}
    if not fast_path_ok(hist):
        return {float(k): int(v) for k, v in hist.get_percentile_to_value_dict(wanted).items()}
    lay = layout(hist)
    lo, hi = int(hist.min_value), int(hist.max_value)
    if not 0 <= lo <= hi:
        return {float(k): int(v) for k, v in hist.get_percentile_to_value_dict(wanted).items()}
    start, end = max(counts_index(lay, lo), 0), min(counts_index(lay, hi) + 1, lay[4])
    running = list(itertools.accumulate(hist.counts[start:end]))
    if not running or running[-1] != n:  # min/max not kept up to date (a decoded histogram): hdrh's own walk
        return {float(k): int(v) for k, v in hist.get_percentile_to_value_dict(wanted).items()}
    out: dict[float, int] = {}
    for p in wanted:
        target = max(int(p * n / 100 + 0.5), 1)  # hdrh's get_target_count_at_percentile
        index = start + bisect.bisect_left(running, target)
        value = hist.get_value_from_index(index)
        out[p] = int(hist.get_highest_equivalent_value(value) if p else hist.get_lowest_equivalent_value(value))
    return out
