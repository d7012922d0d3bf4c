"""Everything qdeck touches inside hdrh (HdrHistogram for Python) beyond its public API, in one place.

Checked against hdrhistogram 0.10.x (pinned ``>=0.10.8,<0.11`` in pyproject.toml). ``fast_path_ok()`` says whether
the installed version still has what this module relies on; ``Recorder`` falls back to ``record_value`` when it does
not, and a test checks that the fast path is the one in use.

- the recording fast path: the histogram's bucket layout (``sub_bucket_mask``, ``unit_magnitude``,
  ``sub_bucket_half_count_magnitude``, ``sub_bucket_half_count``, ``counts_len``), its ``counts`` ctypes array and
  its ``total_count``/``min_value``/``max_value`` fields, applied after a batch of inlined records;
- ``reset``: a memset of ``counts`` (``HdrHistogram.reset`` zeroes counts one by one in Python);
- ``set_interval_stamps``: the start/end stamps (ms) an interval log line takes when its start is 0.
"""

from __future__ import annotations

import ctypes
import sys

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
