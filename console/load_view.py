"""How a load test looks in the terminal: live progress, the summary table, SLO and comparison verdicts."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from loadgen.compare import Check
from loadgen.engine import RunResult
from loadgen.recorder import STAGES, IntervalStats
from loadgen.slo import Verdict


class Progress:
    """One line per interval on stderr: elapsed, achieved rate, p50/p99, errors, timeouts, generator health."""

    def __init__(self, warmup_s: float = 0.0, console: Console | None = None, every_s: float = 1.0) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.warmup_s = warmup_s
        self.every_s = every_s if self.console.is_terminal else max(every_s, 5.0)
        self._acc: list[IntervalStats] = []

    def __call__(self, stats: IntervalStats, result: RunResult) -> None:
        self._acc.append(stats)
        span = stats.end_s - self._acc[0].start_s
        if span + 1e-6 < self.every_s:
            return
        acc, self._acc = self._acc, []
        sent = sum(s.sent for s in acc)
        measured_span = stats.end_s - max(acc[0].start_s, self.warmup_s)
        rate = sent / measured_span if measured_span > 0 else 0.0
        p50 = max(s.p50_us for s in acc)
        p99 = max(s.p99_us for s in acc)
        lag = max(s.schedule_lag_p99_us for s in acc)
        rec = result.recorder
        phase = "warm-up " if stats.end_s <= self.warmup_s else ""
        line = Text(f"{stats.end_s:6.1f}s {phase}sent {rec.sent:>8,}  {rate:>8,.1f}/s  p50 {p50 / 1000:.2f}ms  "
                    f"p99 {p99 / 1000:.2f}ms  errors {rec.error_count:,}  timeouts {rec.timeouts:,}  "
                    f"in flight {result.in_flight:,}")
        if lag > 10_000:
            line.append(f"  GENERATOR BEHIND (schedule lag p99 {lag / 1000:.1f} ms)", style="bold red")
        self.console.print(line, soft_wrap=True)


def summary_table(summary: dict[str, Any]) -> Table:
    c = summary["counts"]
    r = summary["rates"]
    title = (f"qdeck load — {summary['schedule']['description']} → {summary['queue']} on {summary['broker']} "
             f"({summary['duration_s']:g} s measured)")
    t = Table(title=title, title_justify="left", show_edge=False)
    t.add_column("stage")
    for col in ("count", "p50", "p90", "p99", "p99.9", "max", "mean"):
        t.add_column(col, justify="right")
    for stage in STAGES:
        s = summary["stages"][stage]
        if not s.get("count"):
            t.add_row(stage, "0", *["-"] * 6)
            continue
        t.add_row(stage, f"{s['count']:,}", *(f"{s[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms",
                                                                        "max_ms", "mean_ms")))
    t.caption = (f"ms · sent {c['sent']:,} = replied {c['replied']:,} + errors {c['errors']:,} + timeouts "
                 f"{c['timeouts']:,} · unsent {c['unsent']:,} · late {c['late']:,} · "
                 f"rate {r['achieved']:,.1f}/s of {r['target']:,.1f}/s target"
                 + (f" · batch sizes {_batches(summary)}" if summary["batch_sizes"] else "")
                 + (f" · device {', '.join(summary['devices'])}" if summary["devices"] else ""))
    t.caption_justify = "left"
    return t


def _batches(summary: dict[str, Any]) -> str:
    sizes = {int(k): v for k, v in summary["batch_sizes"].items()}
    total = sum(sizes.values())
    mean = sum(k * v for k, v in sizes.items()) / total if total else 0
    return f"mean {mean:.1f}, max {max(sizes)}"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(summary_table(summary))
    for note in summary["notes"]:
        style = "bold red" if note.startswith("THE LOAD GENERATOR") else "yellow"
        console.print(Text(f"note: {note}", style=style))
    if summary.get("aborted"):
        console.print(Text(f"aborted: {summary['aborted']}", style="bold red"))


def print_verdicts(verdicts: list[Verdict], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    t = Table(title="SLOs", title_justify="left", show_edge=False)
    for col in ("SLO", "actual", "result"):
        t.add_column(col)
    for v in verdicts:
        t.add_row(v.slo.text, v.actual + (f" ({v.detail})" if v.detail else ""),
                  Text("pass", style="green") if v.ok else Text("FAIL", style="bold red"))
    console.print(t)


def print_checks(checks: list[Check], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    t = Table(title="baseline comparison", title_justify="left", show_edge=False)
    for col in ("metric", "base", "new", "change", "result"):
        t.add_column(col)
    for c in checks:
        t.add_row(c.name, c.base, c.new, c.change, Text("ok", style="green") if c.ok else Text("REGRESSED",
                                                                                              style="bold red"))
    console.print(t)



def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, force_terminal=None if sys.stderr.isatty() else False)
