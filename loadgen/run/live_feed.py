"""A run's live feed: every interval of ``qdeck load run`` as one JSON line, written and flushed as it closes.

Where: ``live.jsonl`` in the run's ``--out`` directory; a run without ``--out`` writes it to
``<runs>/<run id>/live.jsonl``, where ``<runs>`` is ``$QDECK_RUNS_DIR``, else ``$XDG_RUNTIME_DIR/qdeck/runs``, else
``<tmp>/qdeck-<uid>/runs`` (made private, 0700). A run with ``--out`` leaves a link ``<runs>/<run id>`` to its
directory, so the newest feed of this user is always found there (``latest_feed``: what ``qdeck console --run``
opens without a path); the oldest entries past ``KEEP_RUNS`` are removed (links and feed-only directories, never
an ``--out`` directory). ``qdeck console`` tails the file; ``tail -f`` and ``jq`` read it as well.

Every line is one JSON object, ASCII only (control characters, DEL and everything above 0x7f ``\\uXXXX``-escaped,
so a terminal showing the file interprets nothing), with ``"v": 1`` and a type ``t``:

- ``start`` (first line): ``run_id``, ``started_at`` (ISO 8601 UTC), ``pid`` (the generator's process),
  ``broker`` (the URL, password masked), ``broker_kind``, ``queue``, ``workload``, ``schedule`` (its description),
  ``duration_s`` (planned; null: until ``requests``), ``requests``, ``warmup_s``, ``timeout_s``, ``interval_s``,
  ``slo`` (the SLO texts the run is judged by), ``out`` (the ``--out`` directory or null).
- ``interval`` (one per interval, as ``--csv`` rows are): ``start_s``, ``end_s`` (seconds from the run's start),
  ``warmup`` (the interval ended inside the warm-up), the interval's ``intended``, ``sent``, ``replied``,
  ``errors``, ``timeouts``, ``duplicates``, ``late``, ``warmup_sent``, ``rate`` (sent per second of the interval's
  measured part), ``in_flight`` (awaiting a reply at its end), ``schedule_lag_p99_ms``, ``behind`` (the generator
  fell behind: schedule-lag p99 over 10 ms), ``stages`` (each stage's ``count`` and, when it has values, ``p50_ms``,
  ``p90_ms``, ``p99_ms``, ``max_ms`` of the interval, and ``at_least``: those figures that stand on timed-out
  requests, lower bounds as in summary.json), ``depth`` and ``consumers`` (the request queue sampled at the broker
  over the interval: mean depth, fewest consumers; null when not sampled), ``totals`` (the run so far: ``intended``,
  ``sent``, ``replied``, ``errors``, ``timeouts``, ``unsent``, ``late``, ``duplicates``), ``slo`` (each SLO judged
  on the run so far, as summary.json's ``slo`` entries ``{slo, ok, actual, detail}``, by
  ``loadgen.results.slo.judge``; null in the warm-up), ``outage`` (``{from_s, unsent, reason}`` while the broker is
  unreachable, else null).
- ``end`` (last line, once the run's files are written): ``verdict`` — ``pass`` (every SLO held), ``done`` (no
  SLO), ``fail`` (an SLO failed: exit 99), ``stopped`` (an ``--abort-on`` rule: exit 99), ``aborted`` (the broker
  went away: exit 2), ``interrupted`` (Ctrl-C / SIGINT: exit 130), ``error`` (the run could not run) —,
  ``exit_code``, ``reason`` (why it ended early, or null), and from the summary: ``slo``, ``counts``, ``rates``,
  ``duration_s``, ``stages`` (the whole run's figures, as the interval's), ``summary`` (summary.json's path, or
  null without ``--out``).

A run that is killed (SIGKILL) leaves no ``end`` line; a reader tells it from one still running by ``pid``.
Writing the feed never fails the run: a write that fails stops the feed, and ``error`` says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from loadgen.results.hdrh_compat import percentiles
from loadgen.results.latency import at_least
from loadgen.results.slo import Slo, judge_all, verdicts_json
from loadgen.results.stages import STAGES, TIMEOUT_STAGES
from loadgen.results.summary import BEHIND_LAG_US
from probes.redact import redact_text

if TYPE_CHECKING:
    from loadgen.run.engine import RunResult
    from loadgen.run.recorder import IntervalStats
    from loadgen.run.spec import RunSpec

VERSION = 1
FEED_NAME = "live.jsonl"
RUNS_ENV = "QDECK_RUNS_DIR"
KEEP_RUNS = 50  # entries kept in the runs directory (the newest)
FIGURES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0))
VERDICTS = ("pass", "done", "fail", "stopped", "aborted", "interrupted", "error")

BrokerFigures = Callable[[float, float], tuple[int | None, int | None]]  # an interval's (depth, consumers)


def dumps(record: Mapping[str, Any]) -> str:
    """One feed line: ASCII-only JSON (``ensure_ascii`` escapes C0, C1, bidi controls and the rest above 0x7f;
    DEL, the one ASCII control it leaves, is escaped here), so nothing in it is a terminal control sequence."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


def runs_dir() -> Path:
    """``$QDECK_RUNS_DIR``, else ``$XDG_RUNTIME_DIR/qdeck/runs``, else ``<tmp>/qdeck-<uid>/runs``."""
    explicit = os.environ.get(RUNS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "qdeck" / "runs"
    return Path(tempfile.gettempdir()) / f"qdeck-{os.getuid()}" / "runs"


def private_runs_dir() -> Path:
    """The runs directory, made if need be (0700); OSError when it is not a directory of this user's alone (a
    ``/tmp`` path someone else made first)."""
    path = runs_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{path} is not a private directory of this user")
    return path


def feed_path(run_id: str, out: Path | None) -> Path:
    """Where a run's feed goes: ``out/live.jsonl``, else ``<runs>/<run id>/live.jsonl`` (the directory made)."""
    if out is not None:
        return out / FEED_NAME
    directory = private_runs_dir() / run_id
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / FEED_NAME


def register(run_id: str, out: Path) -> None:
    """A run with ``--out``: link ``<runs>/<run id>`` to ``out`` so that ``latest_feed`` finds it; old entries go."""
    entry = private_runs_dir() / run_id
    if not entry.exists() and not entry.is_symlink():
        entry.symlink_to(out.resolve(), target_is_directory=True)
    prune(entry.parent)


def prune(directory: Path, keep: int = KEEP_RUNS) -> None:
    """Remove the oldest entries of the runs directory past ``keep``: links (never what they point to) and the
    directories of runs without ``--out`` that hold nothing but their feed."""
    entries = sorted(directory.iterdir(), key=_age_key, reverse=True)
    for entry in entries[keep:]:
        try:
            if entry.is_symlink():
                entry.unlink()
            elif entry.is_dir() and {p.name for p in entry.iterdir()} <= {FEED_NAME}:
                shutil.rmtree(entry)
        except OSError:
            continue


def _age_key(entry: Path) -> float:
    try:
        return (entry / FEED_NAME).stat().st_mtime
    except OSError:
        try:
            return entry.lstat().st_mtime
        except OSError:
            return 0.0


def latest_feed(directory: Path | None = None) -> Path | None:
    """The newest feed (by its last write) in the runs directory, or None."""
    directory = directory or runs_dir()
    try:
        feeds = [entry / FEED_NAME for entry in directory.iterdir()]
    except OSError:
        return None
    found = [(mtime, feed) for feed in feeds if (mtime := _mtime(feed)) is not None]
    return max(found)[1] if found else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime if path.is_file() else None
    except OSError:
        return None


def stage_figures(hist: HdrHistogram, timeout_s: float, timeouts: int) -> dict[str, Any]:
    """A stage's figures for a feed line: count, p50/p90/p99/max (ms) and which of them are lower bounds."""
    n = hist.get_total_count()
    if not n:
        return {"count": 0}
    values = percentiles(hist, [p for _k, p in FIGURES])
    figures: dict[str, Any] = {"count": n}
    for key, pct in FIGURES:
        figures[key] = values[pct] / 1000
    figures["max_ms"] = hist.get_max_value() / 1000
    figures["at_least"] = [key.removesuffix("_ms") for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms")
                           if at_least(figures[key] * 1000, timeout_s, timeouts)]
    return figures


class LiveFeed:
    """Writes one run's feed: ``start`` when made, ``capture`` + ``interval`` per interval (the engine calls them),
    ``finish`` at the end (``qdeck load run``, with the summary and exit code)."""

    def __init__(self, path: Path, spec: RunSpec, *, broker: str, broker_kind: str, slos: Sequence[Slo] = (),
                 out: Path | None = None, secrets: Iterable[str] = ()) -> None:
        self.path, self.spec, self.slos = path, spec, tuple(slos)
        self.secrets = tuple(secrets)
        self.broker_figures: BrokerFigures | None = None  # the sampler's, when the run samples the broker
        self.error: str | None = None  # why the feed stopped (a write failed)
        self._stages: dict[str, Any] = {}
        self._intended = 0
        self._fh: IO[str] | None = path.open("w", encoding="ascii")
        self._write({"t": "start", "run_id": spec.run_id,
                     "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"), "pid": os.getpid(),
                     "broker": broker, "broker_kind": broker_kind, "queue": spec.queue, "workload": spec.workload,
                     "schedule": spec.schedule.describe(), "duration_s": spec.duration_s, "requests": spec.requests,
                     "warmup_s": spec.warmup_s, "timeout_s": spec.timeout_s, "interval_s": spec.interval_s,
                     "slo": [s.text for s in self.slos], "out": None if out is None else str(out)})

    def _write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(dumps({"v": VERSION, **record}) + "\n")
            self._fh.flush()
        except (OSError, ValueError) as exc:  # a full disk, a closed file: the feed stops, the run goes on
            self.error = f"the live feed {self.path} stopped: {exc}"
            self.close()

    def capture(self, stats: IntervalStats, histograms: Mapping[str, HdrHistogram]) -> None:
        """The interval's own histograms, while the recorder still holds them (``Recorder.on_interval``)."""
        timeout_s = self.spec.timeout_s
        self._stages = {stage: stage_figures(histograms[stage], timeout_s,
                                             stats.timeouts if stage in TIMEOUT_STAGES else 0) for stage in STAGES}

    def interval(self, stats: IntervalStats, result: RunResult) -> None:
        """One interval's line, once the recorder has rolled it into the run's totals."""
        rec = result.recorder
        intended, self._intended = result.intended - self._intended, result.intended
        warmup = stats.end_s <= self.spec.warmup_s + 1e-9
        measured = stats.end_s - max(stats.start_s, self.spec.warmup_s)  # the measured part of the interval
        depth, consumers = (self.broker_figures(stats.start_s, stats.end_s) if self.broker_figures is not None
                            else (None, None))
        outage = result.outage
        self._write({
            "t": "interval", "start_s": round(stats.start_s, 3), "end_s": round(stats.end_s, 3), "warmup": warmup,
            "intended": intended, "sent": stats.sent, "replied": stats.replied, "errors": stats.errors,
            "timeouts": stats.timeouts, "duplicates": stats.duplicates, "late": stats.late,
            "warmup_sent": stats.warmup_sent, "rate": round(stats.sent / measured, 3) if measured > 0 else 0.0,
            "in_flight": result.in_flight,
            "schedule_lag_p99_ms": stats.schedule_lag_p99_us / 1000,
            "behind": stats.schedule_lag_p99_us > BEHIND_LAG_US, "stages": self._stages,
            "depth": depth, "consumers": consumers,
            "totals": {"intended": result.intended, "sent": rec.sent, "replied": rec.replied,
                       "errors": rec.error_count, "timeouts": rec.timeouts, "unsent": result.unsent,
                       "late": rec.late, "duplicates": rec.duplicates},
            "slo": None if warmup or not rec.sent else self._slo_so_far(stats, result),
            "outage": None if outage is None else {"from_s": round(outage.from_s, 3), "unsent": outage.unsent,
                                                   "reason": redact_text(outage.reason, self.secrets)},
        })
        self._stages = {}

    def _slo_so_far(self, stats: IntervalStats, result: RunResult) -> list[dict[str, Any]]:
        """Every SLO judged by ``judge`` on the run so far (the totals, this interval included): the summary's
        figures it reads, made from the running totals; only the stages an SLO names are encoded."""
        if not self.slos:
            return []
        rec = result.recorder
        stages = {s.stage for s in self.slos if s.metric == "latency"}
        elapsed = max(stats.end_s - self.spec.warmup_s, 1e-9)
        ratio = (rec.sent / result.intended if result.intended and not self.spec.closed_loop else None)
        doc = {"counts": {"sent": rec.sent, "errors": rec.error_count, "timeouts": rec.timeouts},
               "timeout_s": self.spec.timeout_s,
               "rates": {"achieved": rec.sent / elapsed, "achieved_ratio": ratio},
               "stages": {stage: {"histogram": rec.total[stage].encode().decode()
                                  if rec.total[stage].get_total_count() else None,
                                  "timeouts": rec.timeouts_by_stage.get(stage, 0)} for stage in stages}}
        return verdicts_json(judge_all(doc, self.slos))

    def finish(self, verdict: str, exit_code: int, *, reason: str | None = None,
               summary: Mapping[str, Any] | None = None, summary_path: Path | None = None) -> None:
        """The last line: how the run ended and, when it made one, what its summary says."""
        record: dict[str, Any] = {"t": "end", "run_id": self.spec.run_id, "verdict": verdict, "exit_code": exit_code,
                                  "reason": None if reason is None else redact_text(reason, self.secrets)}
        if summary is not None:
            record.update(slo=summary.get("slo", []), counts=summary.get("counts"), rates=summary.get("rates"),
                          duration_s=summary.get("duration_s"),
                          stages={stage: _whole_run(entry) for stage, entry in summary.get("stages", {}).items()},
                          summary=None if summary_path is None else str(summary_path))
        self._write(record)
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):
                fh.close()


def _whole_run(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A summary.json stage entry as a feed's stage figures (no histogram)."""
    if not entry.get("count"):
        return {"count": 0}
    out = {"count": entry["count"], **{key: entry.get(key) for key, _p in FIGURES}, "max_ms": entry.get("max_ms")}
    bounds = set(entry.get("at_least", ()))
    out["at_least"] = [k for k in ("p50", "p90", "p99", "max") if k in bounds]
    return out


def verdict_of(*, code: int, slo: Sequence[Mapping[str, Any]], aborted: str | None, stopped_by_slo: bool,
               interrupted: bool) -> str:
    """The end line's verdict from how the run ended (see the module docstring)."""
    if interrupted:
        return "interrupted"
    if stopped_by_slo:
        return "stopped"
    if aborted:
        return "aborted"
    if not slo:
        return "done"
    return "pass" if code == 0 and all(v.get("ok") for v in slo) else "fail"
