"""The ``qdeck`` command: wiring only; each command lives in a ``cmd_*`` module."""

from __future__ import annotations

import sys

import typer

from console import (
    cmd_brokers,
    cmd_check,
    cmd_console,
    cmd_dlq,
    cmd_dlq_actions,
    cmd_exporter,
    cmd_lag,
    cmd_load,
    cmd_queues,
    cmd_worker,
)
from console.runner import EXIT_USAGE, debug_enabled, print_error

EXIT_INTERRUPTED = 130

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
app.command("check")(cmd_check.check)
cmd_dlq_actions.register(cmd_dlq.app)
app.add_typer(cmd_dlq.app, name="dlq")
app.command("console")(cmd_console.console)
app.command("worker")(cmd_worker.worker)
app.add_typer(cmd_load.app, name="load")
app.command("exporter")(cmd_exporter.exporter)


def main() -> None:
    """Entry point. Every error is one line on stderr, ``qdeck: MESSAGE``: usage errors too (click's own boxed
    "Usage: ... Try --help" form is not used), exit 2; Ctrl-C exits 130; anything unexpected is one line and exit 1
    (the traceback only with QDECK_DEBUG=1)."""
    try:
        code = app(prog_name="qdeck", standalone_mode=False)
    except typer.TyperException as exc:  # click's (vendored by typer) UsageError, BadParameter, NoSuchOption, ...
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            print_error(_lowercase_first(exc.format_message().replace(": Value error, ", ": ")))
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:  # the last line of defence: no traceback for users
        if debug_enabled():
            raise
        print_error(f"internal error: {type(exc).__name__}: {exc} (set QDECK_DEBUG=1 for the traceback)")
        sys.exit(1)
    # standalone_mode=False: a command's typer.Exit(n) (and --help's exit) comes back as n; a plain return as None
    sys.exit(code if isinstance(code, int) else 0)


def _lowercase_first(message: str) -> str:
    """click says "Invalid value for '-n'", "No such option: --x"; qdeck's lines read "qdeck: invalid value ..."."""
    return message[:1].lower() + message[1:] if message[:2].isalpha() and not message[:2].isupper() else message


if __name__ == "__main__":
    main()
