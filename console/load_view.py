"""How a load test looks in the terminal: live progress, the summary table, SLO and comparison verdicts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from console.output import stderr_console, stdout_console
from console.safe_text import safe
from loadgen.results.compare import Check
from loadgen.results.latency import at_least, fmt_figure, fmt_ms
from loadgen.results.littles_law import depth_mean, ratio_stderr
from loadgen.results.slo import Verdict

if TYPE_CHECKING:
    from loadgen.run.engine import RunResult
    from loadgen.run.recorder import IntervalStats
from loadgen.results.stages import STAGES


class Progress:
    """One line per interval on stderr: elapsed, requests sent (warm-up ones apart), achieved rate, p50/p99 (a
    figure that stands on timed-out requests shows as ``≥ TIMEOUT``), errors, timeouts, late and duplicate replies,
    in flight, generator health."""

    def __init__(self, warmup_s: float = 0.0, console: Console | None = None, every_s: float = 1.0, *,
                 timeout_s: float = 0.0) -> None:
        self.console = console or stderr_console()
        self.warmup_s = warmup_s
        self.timeout_s = timeout_s
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
        timeouts = sum(s.timeouts for s in acc)
        rec = result.recorder
        if stats.end_s <= self.warmup_s:
            warm_rate = sum(s.warmup_sent for s in acc) / span if span > 0 else 0.0
            head = f"{stats.end_s:6.1f}s warm-up sent {rec.warmup_sent:>8,}  {warm_rate:>8,.1f}/s"
        else:
            head = f"{stats.end_s:6.1f}s sent {rec.sent:>8,}  {rate:>8,.1f}/s"
        if any(s.replied or s.timeouts for s in acc):
            figures = "  ".join(
                f"{name} {fmt_ms(us, lower_bound=at_least(us, self.timeout_s, timeouts), timeout_s=self.timeout_s)}"
                for name, us in (("p50", p50), ("p99", p99)))
        else:
            figures = "no replies yet"
        line = Text(f"{head}  {figures}  errors {rec.error_count:,}  timeouts {rec.timeouts:,}"
                    + (f"  late {rec.late:,}" if rec.late else "")
                    + (f"  duplicates {rec.duplicates:,}" if rec.duplicates else "")
                    + f"  in flight {result.in_flight:,}")
        outage = result.outage
        if outage is not None:
            line.append(f"  BROKER UNREACHABLE since {outage.from_s:.1f}s: {outage.unsent:,} not sent, reconnecting",
                        style="bold red")
        if lag > 10_000:
            line.append(f"  GENERATOR BEHIND (schedule lag p99 {lag / 1000:.1f} ms)", style="bold red")
        self.console.print(line, soft_wrap=True)


def summary_table(summary: dict[str, Any]) -> Table:
    c = summary["counts"]
    r = summary["rates"]
    title = safe(f"qdeck load — {summary['schedule']['description']} → {summary['queue']} on {summary['broker']} "
                 f"({summary['duration_s']:g} s measured)", None)
    t = Table(title=title, title_justify="left", show_edge=False)
    t.add_column("stage")
    for col in ("count", "p50", "p90", "p99", "p99.9", "max", "mean"):
        t.add_column(col, justify="right")
    timeout_s = float(summary.get("timeout_s", 0.0))
    for stage in STAGES:
        s = summary["stages"][stage]
        if not s.get("count"):
            t.add_row(stage, "0", *["-"] * 6)
            continue
        bounds = set(s.get("at_least", ()))
        t.add_row(stage, f"{s['count']:,}", *(fmt_figure(s[k], k.removesuffix("_ms") in bounds, timeout_s, k)
                                              for k in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms", "mean_ms")))
    t.caption = (f"ms · sent {c['sent']:,} = replied {c['replied']:,} + errors {c['errors']:,} + timeouts "
                 f"{c['timeouts']:,} · unsent {c['unsent']:,} · late {c['late']:,} · "
                 f"duplicates {c.get('duplicates', 0):,} · "
                 f"rate {r['achieved']:,.1f}/s of {r['target']:,.1f}/s target"
                 + (f" · batch sizes {_batches(summary)}" if summary["batch_sizes"] else "")
                 + (f" · device {safe(', '.join(summary['devices']))}" if summary["devices"] else ""))
    t.caption_justify = "left"
    return t


def _batches(summary: dict[str, Any]) -> str:
    sizes = {int(k): v for k, v in summary["batch_sizes"].items()}
    total = sum(sizes.values())
    mean = sum(k * v for k, v in sizes.items()) / total if total else 0
    return f"mean {mean:.1f}, max {max(sizes)}"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or stdout_console()
    console.print(summary_table(summary))
    law = littles_law_line(summary)
    if law is not None:
        console.print(law)
    for note in summary["notes"]:
        style = "bold red" if note.startswith("THE LOAD GENERATOR") else "yellow"
        console.print(Text(f"note: {safe(note, None)}", style=style))
    if summary.get("aborted"):
        console.print(Text(f"aborted: {safe(summary['aborted'], None)}", style="bold red"))


def littles_law_line(summary: dict[str, Any]) -> Text | None:
    """``Little's law: mean depth 12.3 vs λ·W 12.9 (... ms; ratio 0.95 ± 0.03 from 600 samples every 0.1 s)``: the
    broker's sampled queue depth against arrival rate × mean queue wait (``loadgen.results.littles_law``; ± is the
    ratio's standard error, by batch means); None when not judged."""
    law = summary.get("littles_law")
    if not isinstance(law, dict):
        return None
    samples = summary.get("broker_samples")
    err = ratio_stderr(samples, law)
    spread = f" ± {err:.2f}" if err is not None else ""
    read = depth_mean(samples)
    period = samples.get("sample_period_s") if isinstance(samples, dict) else None
    every = f" every {period:g} s" if isinstance(period, int | float) and period > 0 else ""
    return Text(f"Little's law: mean depth {law['mean_depth']:,.1f} vs λ·W {law['predicted_depth']:,.1f} "
                f"({law['arrival_rate']:,.1f}/s × {law['mean_queue_wait_ms']:,.2f} ms; ratio {law['ratio']:.2f}"
                f"{spread} from {read[1] if read else 0:,} samples{every})")


def print_verdicts(verdicts: list[Verdict], console: Console | None = None) -> None:
    console = console or stdout_console()
    t = Table(title="SLOs", title_justify="left", show_edge=False)
    for col in ("SLO", "actual", "result"):
        t.add_column(col)
    for v in verdicts:
        t.add_row(safe(v.slo.text), safe(v.actual + (f" ({v.detail})" if v.detail else ""), None),
                  Text("pass", style="green") if v.ok else Text("FAIL", style="bold red"))
    console.print(t)


def print_checks(checks: list[Check], console: Console | None = None) -> None:
    console = console or stdout_console()
    t = Table(title="baseline comparison", title_justify="left", show_edge=False)
    for col in ("metric", "base", "new", "change", "result"):
        t.add_column(col)
    for c in checks:
        verdict = Text("ok", style="green") if c.ok else Text("REGRESSED", style="bold red")
        t.add_row(*(safe(x) for x in (c.name, c.base, c.new, c.change)), verdict)
    console.print(t)
