"""The keypress a RabbitMQ peek needs: it requeues messages (marked redelivered), and on a quorum queue with a
delivery limit each peek counts as a delivery."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from console.safe_text import safe


class ConfirmPeek(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "peek"),
                                             Binding("n,escape,q", "answer(False)", "cancel")]

    def __init__(self, queue: str, delivery_limit: int | None, force: bool) -> None:
        super().__init__()
        self.queue, self.delivery_limit, self.force = queue, delivery_limit, force

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("Peek on RabbitMQ changes the queue\n\n", style="bold yellow")
        text.append(f"Reading {safe(self.queue, 80)} takes up to 20 messages and puts them back "
                    "(ack_requeue_true): they keep their order but come back marked redelivered.\n")
        if self.delivery_limit is not None:
            text.append(f"\nThis quorum queue has a delivery limit of {self.delivery_limit}: every peek counts "
                        "as a delivery, and repeated peeks dead-letter or drop its messages.\n",
                        style="bold red")
            if not self.force:
                text.append("qdeck will refuse unless you confirm with P (peek anyway).\n", style="red")
        text.append("\ny: peek   n / Esc: cancel", style="bold")
        with Vertical(id="confirm"):
            yield Static(text)

    def action_answer(self, ok: bool) -> None:
        self.dismiss(ok)
