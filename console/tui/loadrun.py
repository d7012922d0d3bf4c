"""The load-run view (``L``): a running or finished ``qdeck load run``, followed through its live feed, beside its
request queue as the console's own polls see it.

Top: what runs where and how it stands (running, or how it ended: pass, fail, stopped, aborted, interrupted).
Left: the stage percentiles (p50, p90, p99, max) of the newest interval while it runs, of the whole run once it has
ended; a figure that stands on timed-out requests shows as ``≥ TIMEOUT``, as everywhere. Right: the SLOs judged on
the run so far (the end: as the run judged them), and the request queue in the console's snapshots (depth, in
flight, consumers, rates). Below, one point per interval: the rate sent, end-to-end p99, errors and timeouts, the
depth the generator sampled at the broker, and the queue's depth as the console polls it.

``n`` starts a run from a plan file (``run_dialog``), ``S`` stops the run the console started (SIGINT: it writes its
files), ``L`` opens the newest run of this user (``loadgen.run.live_feed.latest_feed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from console.render import fmt_rate
from console.safe_text import safe
from console.tui.base import BaseScreen
from console.tui.messages import RunAction
from console.tui.run_feed import LiveRun, num
from loadgen.results.latency import fmt_figure
from loadgen.results.stages import STAGES

# (id, title, what the figure is)
SPARKS = [("rate", "sent/s", "requests sent per second"), ("p99", "p99 ms", "end-to-end p99 of the interval"),
          ("failed", "failed", "errors + timeouts per interval"),
          ("sampled", "sampled", "the queue's depth as the generator sampled it at the broker, per interval"),
          ("queue", "queue", "the queue's depth in the console's own polls")]
NARROW = 120  # below this many columns the SLOs and the queue go under the stage table, not beside it
VERDICT_STYLE = {"pass": "bold green", "done": "bold green", "fail": "bold red", "stopped": "bold red",
                 "aborted": "bold red", "interrupted": "bold yellow", "error": "bold red"}
NO_RUN = ("no load run open: n starts one from a plan file; L opens your newest run; qdeck console --run DIR "
          "follows one (qdeck load run writes DIR/live.jsonl)")


def _int(value: Any) -> str:
    n = num(value)
    return "-" if n is None else f"{int(n):,}"


def stage_table(title: str, stages: Mapping[str, Any], timeout_s: float) -> Table:
    t = Table(title=f"stages (ms) — {title}", title_justify="left", show_edge=False, expand=False)
    t.add_column("stage")
    for col in ("count", "p50", "p90", "p99", "max"):
        t.add_column(col, justify="right")
    for stage in STAGES:
        entry = stages.get(stage)
        if not isinstance(entry, dict) or not num(entry.get("count")):
            t.add_row(stage, _int(entry.get("count") if isinstance(entry, dict) else None), *["-"] * 4)
            continue
        raw_bounds = entry.get("at_least")
        bounds = set(raw_bounds) if isinstance(raw_bounds, list) else set()
        cells = []
        for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            value = num(entry.get(key))
            cells.append("-" if value is None else fmt_figure(value, key.removesuffix("_ms") in bounds, timeout_s,
                                                              key))
        t.add_row(stage, _int(entry["count"]), *cells)
    return t


def slo_table(verdicts: Sequence[Mapping[str, Any]], ended: bool) -> RenderableType:
    if not verdicts:
        return Text("no SLOs (the plan's [slo], or --slo)", style="dim")
    t = Table(show_edge=False)
    for col in ("SLO", "actual", "result"):
        t.add_column(col)
    for v in verdicts:
        detail = v.get("detail")
        t.add_row(safe(v.get("slo", "?"), 60), safe(f"{v.get('actual', '')}" + (f" ({detail})" if detail else ""),
                                                    80),
                  Text("pass", style="green") if v.get("ok") is True else Text("FAIL", style="bold red"))
    title = Text("SLOs — " + ("as the run judged them" if ended else "the run so far"), style="italic")
    return Group(title, t)  # a table title would wrap to the table's width


class LoadRunScreen(BaseScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "run('start')", "start a run"),
        Binding("S", "run('stop')", "stop the run"),
        Binding("L", "run('latest')", "newest run", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(name="loadrun")

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with VerticalScroll(id="loadrun"):
            yield Static("", id="run-title")
            with Horizontal(id="run-top"):
                yield Static("", id="run-stages")
                with Vertical(id="run-side"):
                    yield Static("", id="run-slo")
                    yield Static("", id="run-queue")
            for key, title, _what in SPARKS:
                with Horizontal(classes="history run-history"):
                    yield Label(title, classes="run-spark-title")
                    yield Sparkline([], id=f"spark-{key}")
                    yield Label("", classes="run-spark-now", id=f"now-{key}")
            yield Static("", id="run-notes")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self._fit()
        self.refresh_data()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        self.query_one("#run-top").set_class(0 < self.app.size.width < NARROW, "narrow")

    def action_run(self, what: str) -> None:
        self.post_message(RunAction(what))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run" and parameters == ("stop",):
            return self.qapp.runs.running()
        return True

    # -- drawing ---------------------------------------------------------------------------------------------------

    def refresh_data(self) -> None:
        watch = self.qapp.runs
        run = watch.run
        title = self.query_one("#run-title", Static)
        if run is None:
            title.update(Text(NO_RUN, style="dim"))
            for box in ("#run-stages", "#run-slo", "#run-queue", "#run-notes"):
                self.query_one(box, Static).update("")
            self._sparks(None, [])
            return
        title.update(self._title(run))
        label, stages = run.stages()
        self.query_one("#run-stages", Static).update(stage_table(label, stages, run.timeout_s))
        self.query_one("#run-slo", Static).update(slo_table(run.slo(), run.end is not None))
        queue_points = self._queue(run)
        self._sparks(run, queue_points)
        self.query_one("#run-notes", Static).update(self._notes(run))
        self.refresh_bindings()

    def _title(self, run: LiveRun) -> Text:
        watch = self.qapp.runs
        state = watch.state()
        out = Text()
        if not run.start:
            out.append(f"{safe(str(run.path), 200)}: ", style="bold")
            if state == "failed" and watch.launched is not None:
                out.append(f"the run ended (exit {watch.launched.code()}) before it started: "
                           f"{safe(watch.launched.log_tail(), 300)}", style="bold red")
            else:
                out.append("waiting for the run's first line…", style="yellow")
            return out
        out.append(f"run {safe(run.run_id, 20)} ", style="bold")
        out.append(f"{safe(run.text('schedule'), 60)} → {safe(run.queue, 60)} on {safe(run.broker, 80)}")
        planned = num(run.start.get("duration_s"))
        of = f" of {planned:g} s" if planned else ""
        elapsed = f"{run.elapsed_s:.1f} s"
        out.append("  ·  ")
        if state == "running":
            out.append(f"running {elapsed}{of}", style="bold green")
        elif state == "gone":
            out.append(f"gone after {elapsed}: no last line and its process has ended (killed?)", style="bold red")
        else:
            verdict = run.verdict() or "?"
            code = run.end.get("exit_code") if run.end else None
            out.append(f"ended: {safe(verdict, 20)} (exit {_int(code)}) after {elapsed}",
                       style=VERDICT_STYLE.get(verdict, "bold"))
            reason = run.end.get("reason") if run.end else None
            if isinstance(reason, str) and reason:
                out.append(f" — {safe(reason, 200)}", style="dim")
        if watch.launched is not None:
            out.append("  ·  started here" + (" (S stops it)" if watch.running() else ""), style="dim")
        return out

    def _queue(self, run: LiveRun) -> list[float]:
        """The request queue in the console's snapshots; its depth history for the sparkline."""
        box = self.query_one("#run-queue", Static)
        found = self.qapp.runs.queue_of(self.qapp.states, self.qapp.targets)
        if found is None:
            box.update(Text(f"the run's broker ({safe(run.broker, 80)}) is not one of this console's: "
                            f"qdeck console -b BROKER --run DIR shows its queue beside it", style="yellow"))
            return []
        label, row = found
        st = self.qapp.states[label]
        head = Text(f"request queue {safe(run.queue, 60)} on {safe(st.short or label, 60)}", style="bold")
        if row is None:
            box.update(Group(head, Text("not listed by the broker (yet)", style="yellow")))
            return []
        stale = st.stale_s(self.qapp.clock())
        body = Text(f"depth {row.depth:,} · in flight {row.in_flight:,} · consumers {row.consumers:,} · "
                    f"in/s {fmt_rate(row.publish_rate)} · out/s {fmt_rate(row.deliver_rate)}")
        if row.consumers == 0:
            body.append("  no consumer", style="bold red")
        if stale is not None:
            body.append(f"  (stale: {stale:.0f}s old)", style="dim italic")
        box.update(Group(head, body))
        hist = st.history.get(run.queue)
        return list(hist.depth) if hist else []

    def _sparks(self, run: LiveRun | None, queue_points: list[float]) -> None:
        series: dict[str, list[float]] = {key: [] for key, _t, _w in SPARKS}
        if run is not None:
            series["rate"] = run.series("rate")
            series["p99"] = run.series("p99_ms", "end_to_end")
            series["failed"] = run.series("failed")
            series["sampled"] = run.series("depth")
        series["queue"] = queue_points
        latest = run.latest() if run is not None else {}
        rates = run.end.get("rates") if run is not None and run.end else None
        achieved = num(rates.get("achieved")) if isinstance(rates, dict) else None
        now = {"rate": (f"{achieved:,.1f}/s over the run" if achieved is not None
                        else f"{num(latest.get('rate')) or 0:,.1f}/s" if latest else ""),
               "p99": self._p99_now(run) if run is not None else "",
               "failed": self._failed_now(run) if run is not None else "",
               "sampled": (f"depth {_int(latest.get('depth'))}" if latest and latest.get("depth") is not None
                           else "not sampled"),
               "queue": f"depth {int(queue_points[-1]):,}" if queue_points else "-"}
        for key, _title, _what in SPARKS:
            self.query_one(f"#spark-{key}", Sparkline).data = series[key]
            self.query_one(f"#now-{key}", Label).update(now[key])

    @staticmethod
    def _p99_now(run: LiveRun) -> str:
        _label, stages = run.stages()
        entry = stages.get("end_to_end") if isinstance(stages, dict) else None
        if not isinstance(entry, dict) or num(entry.get("p99_ms")) is None:
            return "-"
        bounds = entry.get("at_least")
        lower = isinstance(bounds, list) and "p99" in bounds
        return fmt_figure(num(entry.get("p99_ms")) or 0.0, lower, run.timeout_s, "p99_ms") + (
            "" if lower else " ms")

    @staticmethod
    def _failed_now(run: LiveRun) -> str:
        totals = run.totals()
        return (f"{_int(totals.get('errors'))} errors, {_int(totals.get('timeouts'))} timeouts of "
                f"{_int(totals.get('sent'))} sent")

    def _notes(self, run: LiveRun) -> Text:
        out = Text()
        latest = run.latest()
        outage = latest.get("outage") if latest else None
        if isinstance(outage, dict) and run.end is None:
            out.append(f"BROKER UNREACHABLE since {num(outage.get('from_s')) or 0:.1f} s: "
                       f"{_int(outage.get('unsent'))} not sent — {safe(outage.get('reason', ''), 200)}\n",
                       style="bold red")
        if latest and latest.get("behind") is True and run.end is None:
            out.append(f"GENERATOR BEHIND: schedule lag p99 {num(latest.get('schedule_lag_p99_ms')) or 0:.1f} ms\n",
                       style="bold red")
        totals = run.totals()
        if totals:
            out.append(f"sent {_int(totals.get('sent'))} · replied {_int(totals.get('replied'))} · errors "
                       f"{_int(totals.get('errors'))} · timeouts {_int(totals.get('timeouts'))} · unsent "
                       f"{_int(totals.get('unsent'))} · late {_int(totals.get('late'))} · duplicates "
                       f"{_int(totals.get('duplicates'))}", style="dim")
        if run.bad_lines:
            out.append(f"\n{run.bad_lines:,} lines of the feed were not qdeck feed lines and were skipped",
                       style="yellow")
        if run.end and isinstance(run.end.get("summary"), str):
            out.append(f"\nsummary: {safe(run.end['summary'], 200)}", style="dim")
        else:
            out.append(f"\nfeed: {safe(str(run.path), 200)}", style="dim")
        return out
