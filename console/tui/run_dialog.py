"""``n`` in the load-run view: start ``qdeck load run`` from a plan file (the TOML of ``qdeck load run --plan``).

The dialog asks for the plan and the directory the run writes to (default ``qdeck-run-<plan>-<time>`` here), checks
the plan as ``qdeck load run`` would (unknown keys, wrong types: the same one-line error) and dismisses with what to
start; the app starts it and follows its feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from console.safe_text import safe
from console.tui.run_watch import default_out
from loadgen.errors import LoadgenError


@dataclass(frozen=True)
class RunRequest:
    plan: Path
    out: Path
    broker: str | None  # the broker the plan names (None: the console's)
    queue: str | None


class RunDialog(ModalScreen[RunRequest | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, plan: str = "", fallback_broker: str = "") -> None:
        super().__init__()
        self.plan_text = plan
        self.fallback_broker = fallback_broker  # what a plan without a broker runs against (shown, masked)

    def compose(self) -> ComposeResult:
        with Vertical(id="run-dialog"):
            yield Label(Text("Start a load run from a plan file", style="bold"))
            yield Static("qdeck load run --plan PLAN --out DIR, in a process of its own; the console follows its "
                         "live feed, S stops it (as Ctrl-C: it writes its files)." +
                         (f" A plan that names no broker runs against {safe(self.fallback_broker, 80)}."
                          if self.fallback_broker else ""), id="run-dialog-help")
            yield Input(value=self.plan_text, placeholder="plan file (TOML), Enter", id="run-plan")
            yield Input(placeholder="results directory (Enter starts the run)", id="run-out")
            yield Label("", id="run-dialog-error")

    def on_mount(self) -> None:
        self.query_one("#run-plan", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        plan_box, out_box = self.query_one("#run-plan", Input), self.query_one("#run-out", Input)
        plan = Path(plan_box.value.strip()).expanduser()
        error = self.query_one("#run-dialog-error", Label)
        if not plan_box.value.strip():
            error.update(Text("give a plan file", style="red"))
            return
        try:
            from loadgen.run.plan import read_plan_file

            doc = read_plan_file(plan)
        except LoadgenError as exc:
            error.update(Text(safe(str(exc), 300), style="red"))
            plan_box.focus()
            return
        if event.input is plan_box:
            if not out_box.value.strip():
                out_box.value = str(default_out(plan))
            error.update("")
            out_box.focus()
            return
        out = Path(out_box.value.strip() or str(default_out(plan))).expanduser()
        if out.exists() and not out.is_dir():
            error.update(Text(f"{safe(str(out), 200)} is not a directory", style="red"))
            return
        broker, queue = doc.get("broker"), doc.get("queue")
        self.dismiss(RunRequest(plan, out, broker if isinstance(broker, str) else None,
                                queue if isinstance(queue, str) else None))

    def action_cancel(self) -> None:
        self.dismiss(None)
