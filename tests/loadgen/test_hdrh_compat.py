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
    assert all(kind.buf is not None for kind in (rec._replies, rec._lags, rec._gaps))  # and bulk counting in numpy
    assert all(hdrh_compat.fast_path_ok(h) for h in (*rec.interval.values(), *rec.total.values()))


def test_a_histogram_without_the_internals_is_refused() -> None:
    class Bare(HdrHistogram):
        pass

    hist = Bare(1, 60_000_000, 3)
    del hist.counts  # an hdrh that keeps its counts elsewhere
    assert not hdrh_compat.fast_path_ok(hist)


def test_mean_and_stddev_are_hdrhs_own_figures() -> None:
    """The same figures as ``get_mean_value`` / ``get_stddev``, recorded or decoded, narrow or wide."""
    import random

    from hdrh.histogram import HdrHistogram

    from loadgen.results.hdrh_compat import mean_and_stddev
    from loadgen.results.stages import new_histogram

    rng = random.Random(7)
    assert mean_and_stddev(new_histogram()) == (0.0, 0.0)
    for _ in range(25):
        hist = new_histogram()
        for _ in range(rng.randint(1, 2000)):
            hist.record_value(max(1, int(rng.lognormvariate(rng.uniform(1, 15), rng.uniform(0.05, 2.5)))))
        assert mean_and_stddev(hist) == (hist.get_mean_value(), hist.get_stddev())
        decoded = HdrHistogram.decode(hist.encode())
        assert mean_and_stddev(decoded) == (decoded.get_mean_value(), decoded.get_stddev())


def test_interval_figures_never_walk_every_count(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """hdrh's ``get_mean_value`` and ``get_stddev`` walk all 23,552 counts in Python (30 and 60 ms on this machine):
    called per stage per interval by ``--csv``, by a mean ``--abort-on`` rule and by the summary, they held up the
    run's event loop (schedule lag). None of those calls them any more."""
    from hdrh.histogram import HdrHistogram

    from loadgen.results.interval_csv import IntervalCsv
    from loadgen.results.slo import stat_us
    from loadgen.results.stages import STAGES, new_histogram
    from loadgen.results.summary import stage_figures
    from loadgen.run.recorder import IntervalStats

    def walks(_self: HdrHistogram) -> float:
        raise AssertionError("walked every count")

    hists = {stage: new_histogram() for stage in STAGES}
    for hist in hists.values():
        for v in (900, 1_200, 40_000):
            hist.record_value(v)
    monkeypatch.setattr(HdrHistogram, "get_mean_value", walks)
    monkeypatch.setattr(HdrHistogram, "get_stddev", walks)
    csv = IntervalCsv(tmp_path / "i.csv")
    csv.write(IntervalStats(0.0, 1.0, 3, 3, 0, 0, 1_200, 40_000, 40_000, 0), hists)
    csv.close()
    assert stat_us(hists["end_to_end"], "mean") is not None
    assert stage_figures(hists["service"])["mean_ms"] > 0


def test_percentiles_are_hdrhs_own_values() -> None:
    """``percentiles`` gives what ``get_percentile_to_value_dict`` gives (which walks the counts from index 0 in
    Python: the live feed paid that on the run's event loop every interval), recorded or decoded, narrow or wide,
    p0 and p100 included."""
    import random

    from hdrh.histogram import HdrHistogram

    from loadgen.results.hdrh_compat import percentiles
    from loadgen.results.stages import new_histogram

    pcts = [0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
    assert percentiles(new_histogram(), pcts) == {}
    rng = random.Random(11)
    for _ in range(25):
        hist = new_histogram()
        for _ in range(rng.randint(1, 3000)):
            hist.record_value(max(1, int(rng.lognormvariate(rng.uniform(1, 15), rng.uniform(0.05, 2.5)))))
        assert percentiles(hist, pcts) == hist.get_percentile_to_value_dict(pcts)
        decoded = HdrHistogram.decode(hist.encode())
        assert percentiles(decoded, pcts) == decoded.get_percentile_to_value_dict(pcts)
