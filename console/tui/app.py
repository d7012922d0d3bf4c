"""The console app: wiring only. One poller per broker (an exclusive worker, re-armed by a timer after each poll
completes, backing off on failure); screens read the shared ``BrokerState``s. The top-level views are Textual
modes (each keeps its own screen stack, filter, sort and cursor); screens ask for navigation with messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.timer import Timer

from console.runner import backoff
from console.safe_text import safe
from console.tui.brokers import BrokersScreen
from console.tui.commands import ViewCommands
from console.tui.deadletters import DeadLettersScreen
from console.tui.detail import QueueDetailScreen
from console.tui.lag import LagScreen
from console.tui.messages import DataChanged, OpenQueue, PollFailed, SetScope, SnapshotArrived
from console.tui.overview import OverviewScreen
from console.tui.state import BrokerState, short_labels
from probes import BrokerTarget, Probe, ProbeError, open_probe
from probes.redact import redact_text


class QdeckApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "qdeck"
    COMMANDS: ClassVar = App.COMMANDS | {ViewCommands}
    MODES: ClassVar = {"overview": OverviewScreen, "deadletters": DeadLettersScreen, "lag": LagScreen,
                       "brokers": BrokersScreen}
    DEFAULT_MODE: ClassVar[str] = "overview"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "command_palette", "jump", show=True),
        Binding("question_mark", "help", "help"),
        Binding("o", "overview", "overview", show=False),
        Binding("d", "dead_letters", "dead letters"),
        Binding("l", "lag", "lag"),
        Binding("b", "brokers", "brokers", show=False),
        Binding("f", "freeze", "pause", show=False),
        Binding("ctrl+r", "refresh_now", "refresh", show=False),
        Binding("plus", "interval(2)", "slower", show=False),
        Binding("minus", "interval(0.5)", "faster", show=False),
    ]
    MIN_INTERVAL, MAX_INTERVAL = 0.5, 300.0

    def __init__(self, targets: Sequence[BrokerTarget], *, interval: float = 2.0, timeout: float = 15.0,
                 probes: Mapping[str, Probe] | None = None, clock: Callable[[], float] = time.time,
                 clipboard: bool = False) -> None:
        super().__init__()
        self.targets = {t.label: t for t in targets}
        self.interval, self.timeout = interval, timeout
        short = short_labels(targets)
        self.states = {label: BrokerState(label, t.kind, short[label]) for label, t in self.targets.items()}
        self.probes: dict[str, Probe] = dict(probes or {})
        self.polls = 0
        self.clock = clock  # the header's "polled Ns ago" (tests freeze it)
        self.paused = False  # f: polls stop (the figures stay, marked paused); f again polls every broker at once
        self._next: dict[str, Timer] = {}  # each broker's next poll
        self._waiting: set[str] = set()  # brokers whose poll came back while paused: polled again on resume
        self.scope: str | None = None  # the one broker every view shows (the brokers view sets it); None: all
        self.osc52 = clipboard  # y copies through OSC 52 only when the user turned it on (--clipboard)

    def on_mount(self) -> None:
        for label, target in self.targets.items():
            if label not in self.probes:
                self.probes[label] = open_probe(target)
        for label in self.targets:
            self.poll(label)

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
        self.states[label] = BrokerState(label, target.kind, short[label])
        for other, st in self.states.items():
            st.short = short[other]
        self.probes.setdefault(label, open_probe(target))
        self.poll(label)
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
        for probe in self.probes.values():
            with contextlib.suppress(ProbeError, TimeoutError, OSError):
                await asyncio.wait_for(probe.aclose(), 5)

    # -- polling -------------------------------------------------------------------------------------------------

    def poll(self, label: str) -> None:
        self.run_worker(self._poll_once(label), group=f"poll:{label}", exclusive=True, exit_on_error=False,
                        description=f"poll {label}")

    async def _poll_once(self, label: str) -> None:
        target = self.targets[label]
        try:
            snap = await asyncio.wait_for(self.probes[label].snapshot(), self.timeout)
        except ProbeError as exc:
            self.post_message(PollFailed(label, redact_text(str(exc), target.secrets)))
        except TimeoutError:
            self.post_message(PollFailed(label, f"no answer in {self.timeout:g} s"))
        except Exception as exc:  # a probe bug must not kill the poller: show it and keep polling
            self.post_message(PollFailed(label, redact_text(f"internal error: {type(exc).__name__}: {exc}",
                                                            target.secrets)))
        else:
            self.post_message(SnapshotArrived(label, snap, time.perf_counter()))

    def on_snapshot_arrived(self, message: SnapshotArrived) -> None:
        self.polls += 1
        self.states[message.broker].record(message.snapshot)
        self._again(message.broker, self.interval)
        self._changed(message.broker, message.arrived)

    def on_poll_failed(self, message: PollFailed) -> None:
        self.polls += 1
        state = self.states[message.broker]
        state.failed(message.error)
        self._again(message.broker, backoff(self.interval, state.health.failures))
        self._changed(message.broker, time.perf_counter())

    def _changed(self, broker: str, arrived: float) -> None:
        """Tell the screen on top that the data changed; a poll that lands while the app shuts down (no screen
        left: the modes' stacks are gone) has no one to tell."""
        if self.screen_stack:
            self.screen.post_message(DataChanged(broker, arrived))

    def _again(self, label: str, delay: float) -> None:
        """Arm ``label``'s next poll (one timer a broker), or, while paused, remember to poll it on resume."""
        old = self._next.pop(label, None)
        if old is not None:
            old.stop()
        if self.paused:
            self._waiting.add(label)
        else:
            self._next[label] = self.set_timer(delay, lambda: self.poll(label))

    # -- refresh control -----------------------------------------------------------------------------------------

    def poll_status(self) -> str:
        """The header's refresh state: paused, or the poll interval."""
        polling = "⏸ paused (f resumes)" if self.paused else f"every {self.interval:g}s"
        if self.scope is not None and self.scope in self.states:
            polling += f" · showing only {safe(self.states[self.scope].short or self.scope, 40)} (b: brokers)"
        return polling

    def action_freeze(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.action_refresh_now()
        self.notify("polling paused: the figures stay as they are (f resumes)" if self.paused else
                    "polling resumed")
        self._changed("", time.perf_counter())

    def action_refresh_now(self) -> None:
        """Ctrl-R: poll every broker now (a poll in flight is replaced), and go on at the interval from there."""
        if self.paused:
            return
        for label in self.targets:
            timer = self._next.pop(label, None)
            if timer is not None:
                timer.stop()
            self.poll(label)
        self._waiting.clear()

    def action_interval(self, factor: float) -> None:
        """+ / -: poll half as often or twice as often, from 0.5 s to 5 min; the next polls take the new interval."""
        self.interval = min(max(self.interval * factor, self.MIN_INTERVAL), self.MAX_INTERVAL)
        self.notify(f"polling every {self.interval:g}s")
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
