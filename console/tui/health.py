"""The header: one badge per broker — up (green), down (red, with the error), not yet polled (yellow) — and the
age of its last good poll."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from rich.text import Text
from textual.widgets import Static

from console.health.model import Level
from console.render import totals_text
from console.safe_text import safe
from console.tui.state import BrokerState

WIDE = 120  # below this many columns the header leaves out the totals and queue counts (one line at 80)


def health_text(states: Mapping[str, BrokerState], now: float | None = None, status: str = "",
                width: int = 0) -> Text:
    """One badge per broker, then ``status`` (the polling: its interval, or paused); narrower than ``WIDE``
    (``width`` > 0), only what fits a line: health, the poll's age, the error."""
    narrow = 0 < width < WIDE
    now = now or time.time()
    out = Text()
    for i, (label, st) in enumerate(states.items()):
        if i:
            out.append("   ")
        h = st.health
        age = h.age(now)
        age_text = f"{age:.0f}s ago" if age is not None else "never"
        if h.up is None:
            out.append(f"◌ {safe(label, 40)} ", style="bold yellow")
            out.append("connecting…", style="yellow")
        elif h.up:
            out.append(f"● {safe(label, 40)} ", style="bold green")
            extra = f"polled {age_text}" if narrow else f"{st.kind} · {len(st.queues()):,} queues · polled {age_text}"
            if st.snapshot is not None:
                extra += ("" if narrow else f" · {totals_text(st.snapshot)}") + (" · partial" if st.snapshot.partial
                                                                                 else "")
            out.append(extra, style="green")
            for f in st.broker_findings():  # about the broker itself (a resource alarm): h lists every finding
                out.append(f" · {f.level} {safe(f.summary, 60)}", style="bold red" if f.level is Level.CRIT
                           else "bold yellow")
        else:
            out.append(f"✖ {safe(label, 40)} DOWN ", style="bold red")
            out.append(f"last ok {age_text} · {safe(h.last_error or '', 90)}", style="red")
    if status:
        out.append(f"   {status}", style="bold yellow" if "paused" in status else "dim")
    return out


class HealthBar(Static):
    DEFAULT_CSS = """
    HealthBar { height: auto; max-height: 3; padding: 0 1; background: $panel; }
    """

    def __init__(self, states: Mapping[str, BrokerState], clock: Callable[[], float] = time.time,
                 status: Callable[[], str] = str) -> None:
        super().__init__(id="health")
        self.states, self.clock, self.status = states, clock, status
        self.shown: Text | None = None  # the header on screen

    def on_mount(self) -> None:
        self.update_health()
        self.set_interval(1.0, self.tick)

    def update_health(self) -> None:
        # the terminal's width, not the widget's: before its first layout the widget's is 0, and a header drawn
        # wide then wraps to two lines at 80 columns (the screen's width is known from the start)
        text = health_text(self.states, self.clock(), self.status(), self.app.size.width or self.size.width)
        self.shown = text
        self.update(text)

    def tick(self) -> None:
        """Every second, for the ages ("polled 3s ago"): on the screen on show, and without a new layout while
        the header keeps its height (every layout repaints the whole screen: with 10,000 queues, an ~8 ms frame a
        second for "3s" becoming "4s")."""
        if not self.screen.is_current:
            return
        old = self.shown
        text = health_text(self.states, self.clock(), self.status(), self.app.size.width or self.size.width)
        if old is not None and text == old:
            return
        self.shown = text
        self.update(text, layout=old is None or text.plain.count("\n") != old.plain.count("\n"))

    def on_resize(self) -> None:
        self.update_health()
