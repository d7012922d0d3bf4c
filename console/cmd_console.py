"""``qdeck console``: the Textual TUI over one or more brokers (``--serve``: in browser tabs, console/serve.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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
    serve: bool = typer.Option(False, "--serve",
                               help="Serve the console to web browsers (textual-serve) instead of showing it here: "
                                    "every browser tab runs a console of its own, as this user, on this machine."),
    host: str | None = typer.Option(None, "--host", show_default=False,
                                    help="With --serve: the address to listen on. Default: 127.0.0.1 (this machine "
                                         "only). Any other address exposes the console to the network, without a "
                                         "login: every queue name, depth and peeked message."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, show_default=False,
                                    help="With --serve: the port to listen on. Default: 8000; 0 picks a free one "
                                         "(the printed URL names it)."),
    clipboard: bool = typer.Option(False, "--clipboard",
                                   help="Let y copy a message body to your clipboard through OSC 52 (the terminal "
                                        "sets it, over SSH too; tmux needs set-clipboard on). Off by default: a "
                                        "console that writes your clipboard is a choice you make."),
    read_only: bool = typer.Option(False, "--read-only",
                                   help="Strictly read-only: no dead-letter action even where a profile allows writes, "
                                        "and no RabbitMQ peek (it requeues)."),
    rules_path: Path | None = typer.Option(None, "--rules", "-r", metavar="FILE", dir_okay=False,
                                           help="Health rules (TOML, as 'qdeck check --rules'): the health panel "
                                                "(h) and the overview's health column. Default: the built-in "
                                                "rules."),
    run: str | None = typer.Option(None, "--run", show_default=False,
                                   help="Follow a load run in the load-run view (L), beside its request queue: the "
                                        "run's --out directory or its live.jsonl, or 'latest' for your newest run."),
) -> None:
    """Live queues, consumers, lag and dead letters across brokers, keyboard-driven (? for the keys).

    Nothing on the brokers changes unless you ask: a RabbitMQ peek requeues messages (it asks first), and the dead-
    letter actions (R redrive, M move, X purge, E export) show a dry run and act only on y, and only on a broker
    whose profile says allow_write = true. --read-only turns both off.
    """
    from console.serve import DEFAULT_HOST, DEFAULT_PORT, child_specs, serve_console

    if not serve and (host is not None or port is not None):
        raise fail("--host and --port go with --serve")
    if serve and clipboard:
        raise fail("--clipboard works in a terminal, not with --serve (the browser keeps its own clipboard)")
    if serve and run is not None:
        raise fail("--run works in a terminal, not with --serve (open the run with L in a tab)")
    from console.health.rules_file import load_rules

    rules = load_rules(rules_path)  # a bad file: one line, exit 2 (ConfigError)
    run_path = run_feed_path(run) if run is not None else None
    specs: list[str | None] = list(broker) or (None if serve else child_specs()) or [None]
    targets = [resolve_broker(spec) for spec in specs]
    if read_only:
        targets = [dataclasses.replace(t, read_only=True) for t in targets]
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise fail("the same broker was given twice")
    if serve:
        serve_console(specs, interval, DEFAULT_HOST if host is None else host,
                      DEFAULT_PORT if port is None else port, read_only, rules_path)
        return
    from console.tui.app import QdeckApp

    QdeckApp(targets, interval=interval, clipboard=clipboard, run=run_path, rules=rules).run()


def run_feed_path(value: str) -> Path:
    """``--run``: a run's directory or feed file (one line and exit 2 when neither), or the newest run."""
    from loadgen.run.live_feed import FEED_NAME, latest_feed, runs_dir

    if value == "latest":
        feed = latest_feed()
        if feed is None:
            raise fail(f"--run latest: no load run in {runs_dir()} (qdeck load run writes its live feed there, or "
                       f"to --out DIR/{FEED_NAME})")
        return feed
    path = Path(value).expanduser()
    feed = path / FEED_NAME if path.is_dir() else path
    if not feed.is_file():
        raise fail(f"--run {value!r}: no {FEED_NAME} there (qdeck load run --out DIR writes DIR/{FEED_NAME})"
                   if path.is_dir() else f"--run {value!r}: no such run directory or feed file")
    return feed
