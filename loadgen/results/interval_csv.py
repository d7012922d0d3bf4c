"""``qdeck load run --csv FILE``: the run's figures per interval and stage, one row each, as Locust's stats history.

Columns: the interval (``start_s``, ``end_s``, seconds from the run's start), the ``stage``, its ``count`` and its
percentiles, max and mean in ms (empty when the stage has no values in the interval), then the interval's request
counts (``sent``, ``replied``, ``errors``, ``timeouts``, ``duplicates``, ``late``), repeated on each of its rows so
that one row reads on its own. Timeouts enter ``end_to_end`` and ``end_to_end_uncorrected`` at no less than the
timeout, as in the summary: in an interval with timeouts, a figure at or above the timeout is a lower bound.
The last two columns, ``depth`` and ``consumers``, are the interval's broker sample (``broker_samples`` in the
summary): the mean of the requests waiting in the broker over the interval's readings (rounded to a whole request)
and the fewest consumers seen; empty when there is none (warm-up, the memory transport, ``--no-broker-samples``,
every reading failed).
Written and flushed as each interval closes, so ``tail -f`` follows a run.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

from hdrh.histogram import HdrHistogram

from loadgen.results.hdrh_compat import mean_and_stddev
from loadgen.results.stages import STAGES

if TYPE_CHECKING:
    from loadgen.run.recorder import IntervalStats

COLUMNS = ("start_s", "end_s", "stage", "count", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "mean_ms",
           "sent", "replied", "errors", "timeouts", "duplicates", "late", "depth", "consumers")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


class IntervalCsv:
    def __init__(self, path: Path) -> None:
        self._fh: IO[str] = path.open("w", newline="")
        self._out = csv.writer(self._fh)
        self._out.writerow(COLUMNS)
        self._fh.flush()
        # (depth, consumers) of the broker sample for the interval [start_s, end_s), set by the run when it samples
        self.broker_figures: Callable[[float, float], tuple[int | None, int | None]] | None = None

    def write(self, stats: IntervalStats, histograms: Mapping[str, HdrHistogram]) -> None:
        broker = self.broker_figures(stats.start_s, stats.end_s) if self.broker_figures else (None, None)
        counts = (stats.sent, stats.replied, stats.errors, stats.timeouts, stats.duplicates, stats.late,
                  *("" if v is None else v for v in broker))
        for stage in STAGES:
            hist = histograms[stage]
            n = hist.get_total_count()
            figures = ([_ms(hist.get_value_at_percentile(p)) for p in PERCENTILES]
                       + [_ms(hist.get_max_value()), _ms(mean_and_stddev(hist)[0])]) if n else [""] * 6
            self._out.writerow([f"{stats.start_s:.3f}", f"{stats.end_s:.3f}", stage, n, *figures, *counts])
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
