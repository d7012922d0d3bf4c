"""``qdeck console``: the Textual TUI over one or more brokers."""

from __future__ import annotations

import typer

from console.runner import cli_errors, complete_broker, fail, finite_at_most
from probes import resolve_broker


@cli_errors
def console(
    broker: list[str] = typer.Option([], "--broker", "-b", autocompletion=complete_broker,
                                     help="Broker URL or profile name; repeat for several brokers. Default: "
                                          "$QDECK_BROKER, then the profile file's default."),
    interval: float = typer.Option(2.0, "--interval", "-i", min=0.2, callback=finite_at_most(3600),
                                   help="Seconds between polls of each broker."),
) -> None:
    """Live queues, consumers, lag and dead letters across brokers, keyboard-driven (? for the keys).

    Read-only: nothing on the brokers changes, except that a RabbitMQ peek requeues messages (it asks first).
    """
    specs: list[str | None] = list(broker) or [None]
    targets = [resolve_broker(spec) for spec in specs]
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise fail("the same broker was given twice")
    from console.tui.app import QdeckApp

    QdeckApp(targets, interval=interval).run()
