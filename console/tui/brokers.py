"""``b`` (or ``:`` brokers / ctx): every broker of the session and every profile in the profile file, with its state
and its full last error; Enter shows only that broker in every view (connecting first to a profile not polled yet),
and the "every broker" row shows them all again. k9s's ``:ctx``, for several brokers at once."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from console.queue_filter import name_matches
from console.render import fmt_duration
from console.safe_text import safe
from console.tui.base import TableScreen
from console.tui.messages import SetScope
from console.tui.state import BrokerState
from console.tui.table import Column, VirtualTable
from probes import ConfigError, Profile, config_path, load_profiles

ALL = ("all", "")  # the row that shows every broker again
COLUMNS = [Column("shown", "", 1), Column("name", "broker", 0, max_width=30),
           Column("kind", "kind", 8, priority=4), Column("state", "state", 0, max_width=20, min_width=5),
           Column("polled", "polled", 9, right=True, priority=3), Column("queues", "queues", 7, right=True, priority=2),
           Column("url", "url (password masked)", 0, max_width=60, priority=5),
           Column("error", "last error / description", 0, max_width=80, priority=1)]


def state_text(st: BrokerState, now: float) -> str:
    """A broker's state as the brokers view says it: up, DOWN (with how stale its figures are), connecting."""
    if st.health.up is None:
        return "connecting…"
    if st.health.up:
        return "up"
    age = st.stale_s(now)
    return "DOWN" + (f" · stale {fmt_duration(age)}" if age is not None else "")


class BrokersScreen(TableScreen):
    columns = COLUMNS
    caption = "brokers — Enter shows only that broker in every view (a profile is connected first); 'every broker' " \
              "shows them all · b or : ctx comes back here"
    filter_hint = "filter: a broker's or profile's name; substring or glob (Esc clears)"
    sortable: ClassVar[list[str]] = []  # the session's brokers first, in the order given, then the file's profiles

    def __init__(self) -> None:
        super().__init__(name="brokers")
        self.profiles: dict[str, Profile] = {}
        self.profile_error: str | None = None

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield Static("", id="broker-info")

    def on_screen_resume(self) -> None:
        """Read the profile file each time the view shows (the first time included); Textual then calls the base
        classes' handlers, which redraw (a handler never calls ``super()`` for its message: that ran them twice)."""
        self.load_profiles()

    def load_profiles(self) -> None:
        """The profile file, read again each time the view opens (a profile added meanwhile shows up); a file that
        cannot be read is said under the table, and the session's brokers are still listed."""
        try:
            self.profiles, _default = load_profiles()
            self.profile_error = None
        except ConfigError as exc:
            self.profiles, self.profile_error = {}, str(exc)

    def refresh_data(self) -> None:
        now = self.qapp.clock()
        states, targets = self.qapp.states, self.qapp.targets
        scope = self.qapp.scope
        keys: list[object] = [ALL]
        rows: list[tuple[str, ...]] = [("●" if scope is None else "", "every broker", "", "", "", "", "", "")]
        alerts: set[int] = set()
        stale: set[int] = set()
        in_session = {t.name for t in targets.values() if t.name}
        for label, st in states.items():
            target = targets[label]
            if not (name_matches(st.short or label, self.pattern) or name_matches(label, self.pattern)):
                continue
            if st.health.up is False:
                alerts.add(len(rows))
            if st.stale_s(now) is not None:
                stale.add(len(rows))
            age = st.health.age(now)
            keys.append(("session", label))
            rows.append(("●" if scope == label else "", safe(st.short or label, 60), st.kind,
                         state_text(st, now), f"{fmt_duration(age)} ago" if age is not None else "never",
                         f"{len(st.queues()):,}" if st.snapshot is not None else "-", safe(target.display, 120),
                         safe(st.health.last_error or "", 200) if st.health.up is False else ""))
        for name, profile in self.profiles.items():
            if name in in_session or not name_matches(name, self.pattern):
                continue
            keys.append(("profile", name))
            rows.append(("", safe(name, 60), profile.target.kind, "not connected", "-", "-",
                         safe(profile.target.display, 120), safe(profile.description or "", 200)))
        table = self.query_one(VirtualTable)
        table.set_rows(keys, rows, alerts, stale=stale)
        self.set_caption(len(rows) - 1, len(states) + len(set(self.profiles) - in_session))
        self._info(table.current_key)

    def _info(self, key: object) -> None:
        """Under the table: the highlighted broker in full (its URL, masked, and its whole last error), and a profile
        file that could not be read."""
        lines: list[Text] = []
        if isinstance(key, tuple) and key[0] == "session" and key[1] in self.qapp.states:
            st, target = self.qapp.states[key[1]], self.qapp.targets[key[1]]
            lines.append(Text(f"{safe(st.short or st.label, 80)}  {safe(target.display, 300)}", style="bold"))
            if st.health.up is False and st.health.last_error:
                lines.append(Text(f"last error ({st.health.failures} failed polls in a row): "
                                  f"{safe(st.health.last_error, 2000)}", style="red"))
        elif isinstance(key, tuple) and key[0] == "profile" and key[1] in self.profiles:
            p = self.profiles[key[1]]
            lines.append(Text(f"profile {safe(p.name, 80)}  {safe(p.target.display, 300)}  (Enter connects)",
                              style="bold"))
        if self.profile_error:
            lines.append(Text(f"! profiles in {safe(str(config_path()), 200)} not read: "
                              f"{safe(self.profile_error, 500)}", style="yellow"))
        box = self.query_one("#broker-info", Static)
        box.update(Text("\n").join(lines))
        box.display = bool(lines)

    def on_virtual_table_highlighted(self, message: VirtualTable.Highlighted) -> None:
        self._info(message.key)

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        key = message.key
        if not isinstance(key, tuple):
            return
        if key == ALL:
            self.post_message(SetScope(None))
        elif key[0] == "session":
            self.post_message(SetScope(self.qapp.targets[key[1]]))
        elif key[0] == "profile" and key[1] in self.profiles:
            self.post_message(SetScope(self.profiles[key[1]].target))
