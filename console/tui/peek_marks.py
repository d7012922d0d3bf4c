"""Acting on a queue's peeked messages (the queue detail's keys): ``space`` marks or unmarks the highlighted
message, ``/`` filters the page by id, death reason, original queue or body text, ``*`` marks every message shown
(all marked already: unmarks them); ``R`` redrive, ``M`` move, ``X`` delete, ``E`` export the marked messages, or,
with none marked, the whole queue (``X`` is then a purge), through the dead-letter action dialog
(``console/tui/dlq_action.py``: the dry run first). R M X are disabled on a broker that is read-only for qdeck.

Marks are kept by the id the broker's dead-letter store reads the message under (``probes.dlq.peek_ids``), so
they survive paging and re-sorting, and an action takes exactly the marked messages (``Selection(ids=...)``). A
message the peek cannot name (a RabbitMQ message without a message_id, a Redis list value whose body the peek
cut) cannot be marked: the key says why. When an action has changed the queue the marks are spent and the page
is read again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from textual.widgets import Input

from console.tui.base import BaseScreen
from console.tui.dlq_action import ActionDialog, writable
from console.tui.screenshot import screenshot_dir
from console.tui.table import VirtualTable
from probes.dlq.engine import Action, ActionKind
from probes.dlq.peek_ids import store_id
from probes.dlq.selection import Selection
from probes.errors import Unsupported
from probes.models import PeekedMessage

MARK = "✓ "  # before a marked message's id in the # column (every id gets two spaces while any is marked)


class Marks:
    """Marked messages of one queue, by store id, in marking order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ids: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def id_of(self, m: PeekedMessage) -> str | None:
        try:
            return store_id(self.kind, m)
        except Unsupported:
            return None

    def marked(self, m: PeekedMessage) -> bool:
        rid = self.id_of(m)
        return rid is not None and rid in self.ids

    def toggle(self, m: PeekedMessage) -> str | None:
        """Mark ``m``, or unmark it when it is marked; None, or why it cannot be marked."""
        try:
            rid = store_id(self.kind, m)
        except Unsupported as exc:
            return f"cannot mark this message: {exc}"
        if rid in self.ids:
            del self.ids[rid]
        else:
            self.ids[rid] = None
        return None

    def toggle_all(self, messages: Iterable[PeekedMessage]) -> int:
        """Mark every one of ``messages`` that can be marked; when all of those are marked already, unmark them.
        How many cannot be marked."""
        ids = [self.id_of(m) for m in messages]
        known = [i for i in ids if i is not None]
        if known and all(i in self.ids for i in known):
            for i in known:
                self.ids.pop(i, None)
        else:
            self.ids.update(dict.fromkeys(known))
        return len(ids) - len(known)

    def clear(self) -> None:
        self.ids.clear()

    def selection(self) -> Selection | None:
        """What an action takes: the marked messages, or None (the whole queue) when none is marked."""
        return Selection.parse(ids=list(self.ids)) if self.ids else None


def matches(m: PeekedMessage, ref: str, needle: str) -> bool:
    """Whether the peek filter ``needle`` (case-insensitive substring) is in the message's id, death reason,
    original queue or body (the bytes the peek holds, as UTF-8)."""
    if not needle:
        return True
    needle = needle.casefold()
    fields = (ref, m.death_reason or "", m.original_queue or "", m.body.decode("utf-8", "replace"))
    return any(needle in f.casefold() for f in fields)


def export_path(queue: str, marked: int = 0) -> Path:
    """Where E writes: ``qdeck-export-<queue>-<UTC time>.jsonl`` in the downloads directory (or here)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    part = f"-{marked}-marked" if marked else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"qdeck-export-{queue}{part}-{stamp}")[:150] + ".jsonl"
    return screenshot_dir() / name


class MarkingScreen(BaseScreen):
    """The keys' actions; the screen (``QueueDetailScreen``) binds them, holds the page and draws it."""

    broker: str
    queue: str
    messages: list[PeekedMessage]  # the page peeked
    marks: Marks
    needle: str  # the filter (/): the rows shown and what * marks

    def _rows(self) -> None:
        """Draw the page's rows that the filter shows (keys: their index in the page), marks and title."""
        raise NotImplementedError

    def _say(self, text: str) -> None:
        """A line under the peek title."""
        raise NotImplementedError

    def reread(self, kind: str) -> None:
        """Show the queue as it is now, after an action (``kind``) changed it."""
        raise NotImplementedError

    def action_mark(self) -> None:
        """space: mark or unmark the highlighted message, and go to the next one."""
        table = self.query_one("#messages", VirtualTable)
        key = table.current_key
        if not isinstance(key, int) or key >= len(self.messages):
            return
        problem = self.marks.toggle(self.messages[key])
        if problem is not None:
            self._say(problem)
            return
        self._rows()
        table.action_move(1)

    def action_mark_all(self) -> None:
        """*: mark every message shown (the page, or what the filter shows of it); when all are marked, unmark."""
        shown = [self.messages[i] for i in self.query_one("#messages", VirtualTable).keys if isinstance(i, int)]
        lost = self.marks.toggle_all(shown)
        self._rows()
        if lost:
            self._say(f"{lost} of these cannot be marked: " + ("RabbitMQ messages without a message_id" if
                                                                self.marks.kind == "rabbitmq" else "the peek "
                                                                "does not tell their ids"))
        elif not shown:
            self._say("nothing shown to mark")

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.needle = event.value.strip()
            self._rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.display = bool(self.needle)
            self.query_one("#messages", VirtualTable).focus()

    def action_escape(self) -> None:
        """Esc clears the peek filter first; then it goes back."""
        box = self.query_one("#filter", Input)
        if box.has_focus or self.needle:
            box.value, box.display, self.needle = "", False, ""
            self._rows()
            self.query_one("#messages", VirtualTable).focus()
            return
        super().action_escape()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """R, M and X are shown disabled on a broker that is read-only for qdeck (the info says why); E exports."""
        if action == "act":
            target = self.qapp.targets.get(self.broker)
            if target is None:
                return False
            return True if (parameters and parameters[0] == "export") or writable(target) else None
        return super().check_action(action, parameters)

    def action_act(self, kind: str) -> None:
        """R redrive, M move, X delete (none marked: purge), E export — the marked messages, or all of them."""
        target = self.qapp.targets.get(self.broker)
        if target is None:
            return
        selection = self.marks.selection()
        if kind == "delete" and selection is None:
            kind = "purge"
        export_to = export_path(self.queue, len(self.marks)) if kind == "export" else None
        dialog = ActionDialog(target, self.queue, Action(cast("ActionKind", kind)), selection, export_to=export_to)
        self.app.push_screen(dialog, lambda _none: self._acted(dialog))

    def _acted(self, dialog: ActionDialog) -> None:
        """The dialog closed: when it changed the queue (or may have: it failed), the page is read again; when
        it ran to the end, the marks are spent."""
        if dialog.action.kind == "export" or dialog.stage not in ("done", "failed"):
            return
        if dialog.stage == "done":
            self.marks.clear()
        self.reread(dialog.action.kind)
