"""The ``qdeck`` command: wiring only; each command lives in a ``cmd_*`` module."""

from __future__ import annotations

import sys

import typer

from console import cmd_brokers, cmd_console, cmd_dlq, cmd_lag, cmd_load, cmd_queues, cmd_worker
from console.runner import debug_enabled

app = typer.Typer(
    name="qdeck",
    help="Operations console and load tester for the message queues in front of AI inference workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("brokers")(cmd_brokers.brokers)
app.command("queues")(cmd_queues.queues)
app.command("consumers")(cmd_queues.consumers)
app.command("lag")(cmd_lag.lag)
app.add_typer(cmd_dlq.app, name="dlq")
app.command("console")(cmd_console.console)
app.command("worker")(cmd_worker.worker)
app.add_typer(cmd_load.app, name="load")


def main() -> None:
    """Entry point: anything unexpected is one line (the traceback only with QDECK_DEBUG=1)."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback for users
        if debug_enabled():
            raise
        from probes.redact import redact_text

        print(f"qdeck: internal error: {type(exc).__name__}: {redact_text(str(exc))} "
              "(set QDECK_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
