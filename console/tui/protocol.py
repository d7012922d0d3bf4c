"""What the screens need from the app, as a protocol: screens read the shared broker states through it and ask for
navigation by posting messages (``messages.OpenQueue``), so no screen imports the app and ``console/tui`` has no
import cycle (a test checks it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from console.tui.run_watch import RunWatch
from console.tui.state import BrokerState
from probes import BrokerTarget, Probe


class ConsoleApp(Protocol):
    states: Mapping[str, BrokerState]  # every broker of the session, by label
    targets: Mapping[str, BrokerTarget]
    probes: Mapping[str, Probe]
    clock: Callable[[], float]  # the header's "polled Ns ago" (tests freeze it)
    scope: str | None  # the one broker the views show (the brokers view sets it); None: every one
    osc52: bool  # whether copying through OSC 52 is on (--clipboard)
    runs: RunWatch  # the load run the load-run view shows (its feed, the process when the console started it)

    def shown_states(self) -> Mapping[str, BrokerState]:
        """The brokers the views show: every one, or the one in scope."""
        ...

    def poll_status(self) -> str:
        """The polling as the header shows it: its interval, or paused."""
        ...

    def go_back(self) -> None:
        """One view back; never quits."""
        ...
