"""The keypress a RabbitMQ peek needs: it requeues messages (marked redelivered). On a quorum queue with a delivery
limit each peek also counts as a delivery, so the dialog says so and offers only the forced peek (``P``), the one
the broker side will accept; it never offers a ``y`` that would then be refused."""

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
    """Dismissed with True to peek (forced when the queue has a delivery limit), False to cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "peek", "peek"),
                                             Binding("P", "peek_anyway", "peek anyway"),
                                             Binding("n,escape,q", "cancel", "cancel")]

    def __init__(self, queue: str, delivery_limit: int | None, count: int = 20) -> None:
        super().__init__()
        self.queue, self.delivery_limit, self.count = queue, delivery_limit, count

    @property
    def limited(self) -> bool:
        return self.delivery_limit is not None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "peek":
            return not self.limited
        if action == "peek_anyway":
            return self.limited
        return True

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("Peek on RabbitMQ changes the queue\n\n", style="bold yellow")
        text.append(f"Reading {safe(self.queue, 80)} takes up to {self.count} messages and puts them back "
                    "(ack_requeue_true): they keep their order but come back marked redelivered.\n")
        if self.delivery_limit is not None:
            if self.delivery_limit < 0:
                text.append(f"\nThis quorum queue has a delivery limit of {self.delivery_limit}: on RabbitMQ 3.x a "
                            "negative limit drops or dead-letters every message the first time it is requeued, "
                            "so this peek loses every message it reads.\n", style="bold red")
            else:
                text.append(f"\nThis quorum queue has a delivery limit of {self.delivery_limit}: peeking counts "
                            "as a delivery of every message it reads, and repeated peeks dead-letter or drop "
                            "them.\n", style="bold red")
            text.append("\nP: peek anyway   n / Esc: cancel", style="bold")
        else:
            text.append("\ny: peek   n / Esc: cancel", style="bold")
        with Vertical(id="confirm"):
            yield Static(text)

    def action_peek(self) -> None:
        self.dismiss(True)

    def action_peek_anyway(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
