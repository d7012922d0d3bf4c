"""The console app: wiring only. The brokers are polled by ``console.poller.Poller`` (the poll-and-backoff loop
written once: ``queues --watch``, ``check --window`` and the exporter run on it too), in one worker; each result
comes in as a message, and screens read the shared ``BrokerState``s. The top-level views are Textual
modes (each keeps its own screen stack, filter, sort and cursor); screens ask for navigation with messages."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.timer import Timer
from textual.worker import Worker

from console.health.rules_file import RuleSet, default_rules
from console.health.window import SnapshotWindow
from console.poller import Poller, PollResult
from console.safe_text import safe
from console.tui.brokers import BrokersScreen
from console.tui.commands import ViewCommands
from console.tui.deadletters import DeadLettersScreen
from console.tui.detail import QueueDetailScreen
from console.tui.health_panel import HealthPanelScreen
from console.tui.health_state import judge_in_slices
from console.tui.lag import LagScreen
from console.tui.loadrun import LoadRunScreen
from console.tui.messages import (
    DataChanged,
    HealthJudged,
    OpenQueue,
    PollFailed,
    RunAction,
    RunRead,
    SetScope,
    SnapshotArrived,
)
from console.tui.overview import OverviewScreen
from console.tui.run_dialog import RunDialog, RunRequest
from console.tui.run_watch import Launched, RunWatch, launch
from console.tui.state import BrokerState, short_labels
from probes import BrokerTarget, Probe, ProbeError, resolve_broker

# The cycle collector's thresholds while the console runs. Every poll of a big broker makes ~10,000 snapshot rows
# that live for a minute (the trend rules keep them) and the health rules ~35,000 findings: with Python's
# defaults (700, 10, 10) that set off 8 full collections in 30 s idle with 10,000 queues, 0.8 s of CPU (2.6 % of
# a core, half the console's idle budget). Collections of the young generation every 10,000 allocations and of
# the whole heap after 100 of the middle one: none in those 30 s, 0.4 s of collecting in all. Nothing it keeps
# is cyclic garbage for long: snapshots and findings are freed by reference counting when they are replaced.
GC_THRESHOLDS = (10_000, 20, 100)


class QdeckApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "qdeck"
    COMMANDS: ClassVar = App.COMMANDS | {ViewCommands}
    MODES: ClassVar = {"overview": OverviewScreen, "deadletters": DeadLettersScreen, "lag": LagScreen,
                       "brokers": BrokersScreen, "loadrun": LoadRunScreen, "health": HealthPanelScreen}
    DEFAULT_MODE: ClassVar[str] = "overview"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "command_palette", "jump", show=True),
        Binding("question_mark", "help", "help"),
        Binding("o", "overview", "overview", show=False),
        Binding("d", "dead_letters", "dead letters"),
        Binding("l", "lag", "lag"),
        Binding("b", "brokers", "brokers", show=False),
        Binding("L", "load_run", "load run", show=False),
        Binding("h", "health", "health", show=False),
        Binding("f", "freeze", "pause", show=False),
        Binding("ctrl+r", "refresh_now", "refresh", show=False),
        Binding("plus", "interval(2)", "slower", show=False),
        Binding("minus", "interval(0.5)", "faster", show=False),
    ]
    MIN_INTERVAL, MAX_INTERVAL = 0.5, 300.0
    FOLLOW_S, FOLLOW_ENDED_S = 0.5, 2.0  # how often the followed run's feed is read: while it runs, once ended

    def __init__(self, targets: Sequence[BrokerTarget], *, interval: float = 2.0, timeout: float = 15.0,
                 probes: Mapping[str, Probe] | None = None, clock: Callable[[], float] = time.time,
                 clipboard: bool = False, run: Path | None = None, rules: RuleSet | None = None) -> None:
        super().__init__()
        self.targets = {t.label: t for t in targets}
        self.poller = Poller(targets, interval=interval, timeout=timeout, on_result=self._on_poll_result,
                             probes=probes)
        self._polling: Worker[None] | None = None
        self._gc_thresholds = gc.get_threshold()  # put back when the app ends
        short = short_labels(targets)
        self.rules = rules or default_rules()  # the health rules every broker is judged by (--rules FILE)
        self.states = {label: BrokerState(label, t.kind, short[label], rules=self.rules)
                       for label, t in self.targets.items()}
        self.polls = 0
        self.clock = clock  # the header's "polled Ns ago" (tests freeze it)
        self.scope: str | None = None  # the one broker every view shows (the brokers view sets it); None: all
        self.osc52 = clipboard  # y copies through OSC 52 only when the user turned it on (--clipboard)
        self.runs = RunWatch()  # the load run the load-run view follows (--run, L, or one started with n there)
        self.run_path = run
        self._run_timer: Timer | None = None

    @property
    def probes(self) -> dict[str, Probe]:
        """The open probes by label (the poller's own)."""
        return self.poller.probes

    @property
    def interval(self) -> float:
        return self.poller.interval

    @property
    def timeout(self) -> float:
        return self.poller.timeout

    @property
    def paused(self) -> bool:
        """f: no poll starts (the figures stay, marked paused); f again polls every broker at once."""
        return self.poller.paused

    def on_mount(self) -> None:
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        self._polling = self.run_worker(self.poller.run(), group="poller", description="poll the brokers")
        if self.run_path is not None:  # --run: the run first (o, d, l, b are the other views)
            self.open_run(self.run_path)
            self.switch_mode("loadrun")

    def shown_states(self) -> Mapping[str, BrokerState]:
        """The brokers the views show: every one, or the one the brokers view scoped them to."""
        if self.scope is None or self.scope not in self.states:
            return self.states
        return {self.scope: self.states[self.scope]}

    def add_broker(self, target: BrokerTarget) -> str:
        """Connect to a profile that is not in this session yet (the brokers view): a state, a probe, a poller."""
        label = target.label
        if label in self.targets:
            return label
        self.targets[label] = target
        short = short_labels(list(self.targets.values()))
        self.states[label] = BrokerState(label, target.kind, short[label], rules=self.rules)
        for other, st in self.states.items():
            st.short = short[other]
        self.poller.add(target)  # polled at once
        return label

    def on_set_scope(self, message: SetScope) -> None:
        message.stop()
        if message.target is not None:
            self.add_broker(message.target)
        self.scope = message.target.label if message.target is not None else None
        what = f"only {safe(self.states[self.scope].short or self.scope, 60)}" if self.scope else "every broker"
        self.notify(f"showing {what} (b: brokers)", timeout=3)
        self.action_overview()

    async def on_unmount(self) -> None:
        gc.set_threshold(*self._gc_thresholds)
        if self.runs.running() and self.runs.launched is not None:
            self.runs.launched.interrupt()  # a run the console started stops with it (it writes its files)
        if self._polling is not None:
            self._polling.cancel()
            with contextlib.suppress(Exception):
                await self._polling.wait()
        await self.poller.aclose()  # the poller closes its probes when it stops; this covers a poller never run

    # -- polling -------------------------------------------------------------------------------------------------

    def poll(self, label: str) -> None:
        """Poll ``label`` once more now, outside its loop's turn (after a poll in flight, never beside it)."""
        self.run_worker(self._poll_now(label), group=f"poll:{label}", exit_on_error=False,
                        description=f"poll {label}")

    async def _poll_now(self, label: str) -> None:
        self._on_poll_result(await self.poller.poll_once(label))

    def _on_poll_result(self, result: PollResult) -> None:
        if result.snapshot is not None:
            self.post_message(SnapshotArrived(result.label, result.snapshot, result.arrived))
        else:
            self.post_message(PollFailed(result.label, result.error or "no snapshot"))

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.polls += 1
        state = self.states[message.broker]
        state.record(message.snapshot)  # a small broker is judged by the health rules here, at once
        self._changed(message.broker, message.arrived)
        judged = state.judged
        if not judged.inline and judged.due() and state.snapshot is not None:  # a big one: in slices, once the
            judged.busy = True  # new figures are painted
            window, label, rules = judged.window(state.snapshot), message.broker, state.rules
            self.call_after_refresh(self.run_worker, self._judge(label, rules, window), group=f"health:{label}",
                                    exit_on_error=False, description=f"health rules {label}")

    async def _judge(self, label: str, rules: RuleSet, window: SnapshotWindow) -> None:
        self.post_message(HealthJudged(label, *await judge_in_slices(rules, window)))

    def on_health_judged(self, message: HealthJudged) -> None:
        state = self.states.get(message.broker)
        if state is not None:
            state.judged.take(message.findings, message.levels, message.seconds)
            self._changed(message.broker, time.perf_counter())

    def on_poll_failed(self, message: PollFailed) -> None:
        self.polls += 1
        state = self.states[message.broker]
        state.failed(message.error)
        self._changed(message.broker, time.perf_counter())

    def _changed(self, broker: str, arrived: float) -> None:
        """Tell the screen on top that the data changed; a poll that lands while the app shuts down (no screen
        left: the modes' stacks are gone) has no one to tell."""
        if self.screen_stack:
            self.screen.post_message(DataChanged(broker, arrived))

    # -- refresh control -----------------------------------------------------------------------------------------

    def poll_status(self) -> str:
        """The header's refresh state: paused, or the poll interval."""
        polling = "⏸ paused (f resumes)" if self.paused else f"every {self.interval:g}s"
        if self.scope is not None and self.scope in self.states:
            polling += f" · showing only {safe(self.states[self.scope].short or self.scope, 40)} (b: brokers)"
        return polling

    def action_freeze(self) -> None:
        self.poller.paused = not self.poller.paused  # resuming polls every broker at once
        self.notify("polling paused: the figures stay as they are (f resumes)" if self.paused else
                    "polling resumed")
        self._changed("", time.perf_counter())

    def action_refresh_now(self) -> None:
        """Ctrl-R: poll every broker now (one whose poll is in flight takes that one), and go on at the interval
        from there; nothing while paused."""
        self.poller.refresh_now()

    def action_interval(self, factor: float) -> None:
        """+ / -: poll half as often or twice as often, from 0.5 s to 5 min; the next polls take the new interval."""
        self.poller.interval = min(max(self.interval * factor, self.MIN_INTERVAL), self.MAX_INTERVAL)
        self.notify(f"polling every {self.interval:g}s")
        self._changed("", time.perf_counter())

    # -- the load run ----------------------------------------------------------------------------------------------

    def open_run(self, path: Path, launched: Launched | None = None) -> None:
        """Follow the run at ``path`` (a directory or its feed) from its first line."""
        self.runs.open(path, launched)
        self._read_run()

    def _read_run(self) -> None:
        self.run_worker(self._read_run_once(), group="run-feed", exclusive=True, exit_on_error=False,
                        description="read the run's feed")

    async def _read_run_once(self) -> None:
        tail = self.runs.tail
        if tail is None:
            return
        lines = await asyncio.to_thread(tail.read)
        self.post_message(RunRead(tail.path, lines, tail.restarted))

    def on_run_read(self, message: RunRead) -> None:
        if message.path != self.runs.path:  # a run opened since: its own reads follow
            return
        self.runs.take(message.lines, message.restarted)
        if self._run_timer is not None:
            self._run_timer.stop()
        ended = self.runs.state() in ("ended", "failed", "gone") and not self.runs.running()
        self._run_timer = self.set_timer(self.FOLLOW_ENDED_S if ended else self.FOLLOW_S, self._read_run)
        if message.lines or message.restarted:
            self._changed("", time.perf_counter())

    def on_run_action(self, message: RunAction) -> None:
        message.stop()
        if message.what == "start":
            target = self._run_broker()
            self.push_screen(RunDialog(fallback_broker=target.display if target else ""), self._start_run)
        elif message.what == "stop":
            launched = self.runs.launched
            if launched is not None and launched.interrupt():
                self.notify("stopping the run: it sends nothing more, waits for its replies and writes its files"
                            if launched.interrupts == 1 else "stopping the run at once (no summary)")
        elif message.what == "latest":
            self.open_latest_run()

    def open_latest_run(self, *, quiet: bool = False) -> None:
        """Follow this user's newest run (``loadgen.run.live_feed.latest_feed``)."""
        from loadgen.run.live_feed import latest_feed

        feed = latest_feed()
        if feed is not None:
            self.open_run(feed)
            self._changed("", time.perf_counter())
        elif not quiet:
            self.notify("no load run found: n starts one from a plan file", severity="warning")

    def _run_broker(self) -> BrokerTarget | None:
        """What a plan without a broker runs against: the broker in scope, else the session's first."""
        label = self.scope if self.scope in self.targets else next(iter(self.targets), None)
        return self.targets[label] if label is not None else None

    def _start_run(self, request: RunRequest | None) -> None:
        if request is None:
            return
        if self.runs.running():
            self.notify("a run started here is still running: S stops it first", severity="warning")
            return
        if request.broker is not None:  # the run's queue is shown beside it: poll the plan's broker too
            try:
                self.add_broker(resolve_broker(request.broker))
            except ProbeError as exc:
                self.notify(safe(f"the plan's broker: {exc}", 300), severity="error")
                return
        try:
            launched = launch(request.plan, request.out, self._run_broker(), request.broker is not None)
        except OSError as exc:
            self.notify(safe(f"cannot start the run: {exc}", 300), severity="error")
            return
        self.open_run(request.out, launched)
        self.notify(f"run started: {safe(str(request.out), 120)}")
        self._changed("", time.perf_counter())

    # -- navigation ----------------------------------------------------------------------------------------------

    def _switch_to(self, mode: str) -> None:
        """A view's key: its mode, on its own list (a detail opened there is closed; filter and sort stay)."""
        self.switch_mode(mode)
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_overview(self) -> None:
        self._switch_to("overview")

    def action_dead_letters(self) -> None:
        self._switch_to("deadletters")

    def action_lag(self) -> None:
        self._switch_to("lag")

    def action_brokers(self) -> None:
        self._switch_to("brokers")

    def action_health(self) -> None:
        self._switch_to("health")

    def action_load_run(self) -> None:
        """L: the load-run view; with no run open yet, the newest run of this user."""
        if self.runs.run is None:
            self.open_latest_run(quiet=True)
        self._switch_to("loadrun")

    def action_help(self) -> None:
        from console.tui.help import HelpScreen

        self.push_screen(HelpScreen())

    def go_back(self) -> None:
        """Esc: one view back, then from another view's list to the overview; on the overview it does nothing (only
        ``q`` there, or ``:`` quit, leaves)."""
        if len(self.screen_stack) > 1:
            self.pop_screen()
        elif self.current_mode != "overview":
            self.switch_mode("overview")

    def action_back_or_quit(self) -> None:
        """q: back, like Esc; on the overview's list, quit."""
        if len(self.screen_stack) > 1 or self.current_mode != "overview":
            self.go_back()
        else:
            self.exit()

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        """The palette's Screenshot: in a terminal, saved to a directory that exists and notified with its path."""
        if self.is_web:
            return super().deliver_screenshot(filename, path, time_format)
        from console.tui.screenshot import save_screenshot

        save_screenshot(self, filename, path, time_format)
        return None

    def open_queue(self, broker: str, queue: str, *, auto_peek: bool = False) -> None:
        """The one way a queue's detail opens (screens and the palette post ``OpenQueue``), over the current view."""
        self.push_screen(QueueDetailScreen(broker, queue, auto_peek=auto_peek))

    def on_open_queue(self, message: OpenQueue) -> None:
        message.stop()
        self.open_queue(message.broker, message.queue, auto_peek=message.auto_peek)
