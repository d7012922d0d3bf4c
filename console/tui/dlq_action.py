"""The dialog behind R (redrive), M (move), X (purge / delete) and E (export): the dry run first, then, on ``y``,
the action with a progress bar, and at the end the ledger — the same engine, journal and words as ``qdeck dlq``.

On RabbitMQ even the dry run reads every message and requeues it (they come back marked redelivered; a quorum
queue counts a delivery), so there the dialog says so and waits for ``y`` before it reads anything. A broker whose
profile does not say ``allow_write = true`` gets the dry run and no ``y``: the dialog says why. Esc cancels; during
the action it stops after the batch in hand (the journal resumes it, from the CLI or here).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import ClassVar, Literal

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, ProgressBar, Static

from console.dlq_report import VERBS, ledger_line, make_journal, report_view, start_export
from console.safe_text import safe
from probes.dlq.engine import Action, Report, run_action
from probes.dlq.journal import Journal
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.errors import ProbeError
from probes.redact import redact_text
from probes.urls import BrokerTarget

Stage = Literal["ask-to-read", "destination", "planning", "planned", "running", "done", "failed"]


def writable(target: BrokerTarget) -> bool:
    return target.allow_write and not target.read_only


class ActionDialog(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "go", "do it"), Binding("escape", "close", "close / stop")]

    def __init__(self, target: BrokerTarget, source: str, action: Action, selection: Selection | None = None,
                 export_to: Path | None = None) -> None:
        super().__init__()
        self.target, self.source = target, source
        self.action, self.selection = action, selection or Selection()
        self.export_to = export_to
        self.stage: Stage = "ask-to-read" if target.kind == "rabbitmq" else "planning"
        if action.kind == "move" and action.to is None:
            self.stage = "destination"
        if action.kind == "export":
            self.stage = "planned"  # one pass: y writes the file
        self.to_name: str | None = None
        self.stop = asyncio.Event()
        self.report: Report | None = None

    # -- layout ----------------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="action"):
            yield Label(Text(self.title_text(), style="bold"), id="action-title")
            yield Input(placeholder="destination queue / topic / stream (Enter)", id="action-to")
            yield Static("", id="action-report")
            yield ProgressBar(id="action-progress", show_eta=True)
            yield Label("", id="action-hint")

    def title_text(self) -> str:
        what = {"redrive": "Redrive", "move": "Move", "purge": "Purge", "delete": "Delete", "export": "Export"}
        return f"{what[self.action.kind]} {safe(self.source, 80)} on {safe(self.target.label, 60)}"

    def on_mount(self) -> None:
        self.query_one("#action-to", Input).display = self.stage == "destination"
        self.query_one("#action-progress", ProgressBar).display = False
        if self.stage == "destination":
            self.query_one("#action-to", Input).focus()
        elif self.stage == "planning":
            self._start(dry=True)
        self._say()

    def _say(self, extra: Text | None = None) -> None:
        """The report box and the hint line for the current stage."""
        hints = {
            "ask-to-read": "y: dry run (reads and requeues) · Esc: cancel",
            "destination": "Enter: plan the move · Esc: cancel",
            "planning": "reading… Esc: cancel",
            "planned": ("y: do it · Esc: cancel" if self.can_act() else "Esc: close"),
            "running": "Esc: stop after the batch in hand",
            "done": "Esc: close", "failed": "Esc: close",
        }
        box = self.query_one("#action-report", Static)
        if self.stage == "ask-to-read":
            box.update(Text("On RabbitMQ the dry run reads every message of the queue and puts it back: they keep "
                            "their order but come back marked redelivered, and a quorum queue counts a delivery "
                            "against its delivery limit. Nothing is moved until you say y a second time.",
                            style="yellow"))
        elif self.action.kind == "export" and self.stage == "planned":
            text = Text(f"y writes every message of {safe(self.source, 80)} to "
                        f"{safe(str(self.export_to), 300)}: every property, header and body byte.")
            if self.target.kind == "rabbitmq":
                text.append(" On RabbitMQ reading requeues them: they come back marked redelivered.",
                            style="yellow")
            box.update(text)
        elif self.report is not None:
            parts: list[RenderableType] = [report_view(self.report)]
            if self.stage == "planned" and not self.can_act() and self.action.kind != "export":
                parts.append(Text(self.read_only_text(), style="bold yellow"))
            if extra is not None:
                parts.append(extra)
            box.update(Group(*parts))
        elif extra is not None:
            box.update(extra)
        self.query_one("#action-hint", Label).update(Text(hints[self.stage], style="dim"))

    def read_only_text(self) -> str:
        if self.target.read_only:
            return "read-only (--read-only): this console does not write"
        return (f"read-only: {safe(self.target.label, 60)} has no allow_write = true in its profile, so the console "
                "only shows what would happen")

    def can_act(self) -> bool:
        return self.action.kind == "export" or writable(self.target)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "go":
            return self.stage == "ask-to-read" or (self.stage == "planned" and self.can_act())
        return True

    # -- keys ------------------------------------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            return
        self.to_name = name
        event.input.display = False
        self.stage = "planning"
        self._start(dry=True)
        self._say()

    def action_go(self) -> None:
        if self.stage == "ask-to-read":
            self.stage = "planning"
            self._start(dry=True)
        elif self.stage == "planned" and self.can_act():
            self.stage = "running"
            self.query_one("#action-progress", ProgressBar).display = True
            self._start(dry=False)
        self._say()
        self.refresh_bindings()

    def action_close(self) -> None:
        if self.stage == "running":
            self.stop.set()
            self.query_one("#action-hint", Label).update(Text("stopping after the batch in hand…", style="yellow"))
            return
        self.stop.set()
        self.dismiss(None)

    # -- the work --------------------------------------------------------------------------------------------------

    def _start(self, dry: bool) -> None:
        self.run_worker(self._run(dry), exclusive=True, group="dlq-action", exit_on_error=False)

    async def _run(self, dry: bool) -> None:
        action = dataclasses.replace(self.action, dry_run=dry or self.action.kind == "export")
        journal: Journal | None = None
        out = None
        try:
            store = open_store(self.target, self.source)
            async with store:
                if self.to_name is not None:
                    action = dataclasses.replace(action, to=await store.resolve(self.to_name))
                if not action.dry_run and action.kind in ("redrive", "move"):
                    journal = make_journal(self.target, self.source, action, self.selection)
                on_export = None
                if action.kind == "export" and not dry and self.export_to is not None:
                    out = self.export_to.open("w", encoding="ascii")
                    on_export = start_export(out, self.target, self.source)
                self.report = await run_action(store, action, self.selection, journal=journal,
                                               stop=self.stop, progress=None if dry else self._progress,
                                               on_export=on_export)
        except (ProbeError, OSError) as exc:
            self.stage = "failed"
            self._say(Text(f"{action.kind} failed: {safe(redact_text(str(exc), self.target.secrets), 500)}",
                           style="bold red"))
            return
        finally:
            if journal is not None:
                journal.close()
            if out is not None:
                out.close()
        if dry and self.action.kind != "export":
            self.stage = "planned"
            self._say()
        else:
            self.stage = "done"
            note = None
            if self.action.kind == "export" and self.export_to is not None:
                note = Text(f"written to {safe(str(self.export_to.resolve()), 300)}", style="green")
            elif journal is not None:
                note = Text(f"journal: {safe(str(journal.path), 300)}", style="dim")
            self._say(note)
            self.notify(f"{self.action.kind} {safe(self.source, 60)}: {ledger_line(self.report)}",
                        title=VERBS[self.action.kind], markup=False)
        self.refresh_bindings()

    def _progress(self, report: Report) -> None:
        self.query_one("#action-progress", ProgressBar).update(total=report.expected, progress=report.progressed)

