"""The installed hdrh still has every internal ``loadgen.results.hdrh_compat`` uses, and the recorder uses them.

``Recorder`` falls back to ``record_value`` when ``hdrh_compat.fast_path_ok`` is False, with the same counts and
about a third of the speed: an hdrh upgrade that breaks the fast path fails here instead of going unnoticed."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

from loadgen.results import hdrh_compat
from loadgen.results.stages import new_histogram
from loadgen.run.recorder import Recorder


def test_a_new_histogram_has_the_internals_the_fast_path_uses() -> None:
    hist = new_histogram()
    assert hdrh_compat.fast_path_ok(hist)  # what they mean is checked value for value in test_recorder_exact.py


def test_the_recorder_takes_the_fast_path() -> None:
    rec = Recorder()
    assert rec.fast
    assert all(hdrh_compat.fast_path_ok(h) for h in (*rec.interval.values(), *rec.total.values()))


def test_a_histogram_without_the_internals_is_refused() -> None:
    class Bare(HdrHistogram):
        pass

    hist = Bare(1, 60_000_000, 3)
    del hist.counts  # an hdrh that keeps its counts elsewhere
    assert not hdrh_compat.fast_path_ok(hist)
