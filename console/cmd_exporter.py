"""``qdeck exporter``: what qdeck sees, as Prometheus metrics, with ``/healthz``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from console.poller import DEFAULT_TIMEOUT_S, Poller, resolve_targets
from console.runner import brokers_option, cli_errors, fail, finite, finite_at_most
from console.safe_text import safe

if TYPE_CHECKING:
    from console.exporter.state import ExporterState

MIN_INTERVAL_S = 5.0  # a poll reads every queue of the broker: more often than this is hammering it
DEFAULT_PORT = 9808
SCAN_CALLS, SCAN_SECONDS = 100, 2.0  # the Redis key scan's budget per poll (the probe's own defaults)


@cli_errors
def exporter(
    broker: list[str] = brokers_option(),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", min=0, max=65535,
                             help="Port to serve /metrics and /healthz on (0: any free port, printed)."),
    bind: str = typer.Option("127.0.0.1", "--bind", metavar="ADDRESS",
                             help="Address to listen on; loopback unless you say otherwise (0.0.0.0, ::)."),
    interval: float = typer.Option(15.0, "--interval", "-i", callback=finite_at_most(86400), metavar="SECONDS",
                                   help=f"Seconds between polls of each broker (at least {MIN_INTERVAL_S:g})."),
    rules: Path | None = typer.Option(None, "--rules", metavar="FILE",
                                      help="Health rules (TOML) for qdeck_rule_status; default: the built-in "
                                           "thresholds (as qdeck check)."),
    window: float = typer.Option(300.0, "--window", callback=finite_at_most(86400), metavar="SECONDS",
                                 help="Seconds of snapshots the trend rules (lag growing, DLQ growing) judge."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", callback=finite_at_most(600), metavar="SECONDS",
                                  help="A poll with no answer in this long is a failed poll (qdeck_broker_up 0)."),
    scan_calls: int = typer.Option(SCAN_CALLS, "--scan-calls", min=1, max=100_000,
                                   help="Redis: SCAN calls (COUNT 1000) per poll to find streams and lists."),
    scan_seconds: float = typer.Option(SCAN_SECONDS, "--scan-seconds", callback=finite, min=0.1, max=60,
                                       help="Redis: seconds the key scan may take per poll."),
) -> None:
    """Serve Prometheus metrics of every broker given: depth, in flight, consumers and rates per queue; lag per
    consumer group and partition; time to drain; dead-letter depth; each health rule's status; and the exporter's
    own polls (up, age, duration, errors). /healthz answers 200 with each broker's state once every broker has
    been polled.

    What it costs the brokers: one poll per broker every --interval seconds, whatever the scrape rate (scrapes read
    the last poll), never two at once. A poll is what `qdeck queues` does: RabbitMQ, GET /api/overview, /api/nodes
    and the vhost's /api/queues (pages of 500, 3 at a time; the Prometheus plugin's /metrics for rates when
    enabled); Redis, at most --scan-calls SCAN calls within --scan-seconds, then XINFO and an XPENDING sample per
    stream and LLEN per list (a listing cut short is marked qdeck_broker_partial 1); Kafka, one metadata request,
    group listing and descriptions, committed offsets per group and watermarks per partition.
    """
    # imported here: every other command starts without prometheus_client and the health rules
    from prometheus_client import CollectorRegistry

    from console.exporter.metrics import SnapshotCollector
    from console.exporter.server import BindError, Server, make_app
    from console.exporter.state import ExporterState
    from console.health.rules_file import load_rules

    if interval < MIN_INTERVAL_S:
        raise fail(f"--interval {interval:g} is less than {MIN_INTERVAL_S:g} s: the exporter polls every queue of "
                   "each broker, and scrapes never trigger a poll, so a shorter interval only loads the brokers")
    if timeout <= 0 or window < 0:
        raise fail("--timeout must be more than 0 and --window at least 0")
    targets = resolve_targets(broker)
    rule_set = load_rules(rules)
    state = ExporterState(targets, rule_set, window_s=window, timeout=timeout)
    poller = Poller(targets, interval=interval, timeout=timeout, on_result=state.record,
                    probe_options={"scan_calls": scan_calls, "scan_seconds": scan_seconds})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(state))
    try:
        server = Server(bind, port, make_app(registry, state.health))
    except BindError as exc:
        raise fail(str(exc)) from None
    server.start()
    names = ", ".join(safe(t.label, 120) for t in targets)
    print(safe(f"qdeck exporter: serving {server.url}/metrics and /healthz; polling {names} every {interval:g}s",
               None), file=sys.stderr, flush=True)
    try:
        asyncio.run(_serve(poller, state))
    finally:
        server.close()


async def _serve(poller: Poller, state: ExporterState) -> None:
    """Run the poller until SIGTERM (a clean exit, 0) or Ctrl-C (130): probes closed, then the server shut."""
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    polling = asyncio.create_task(poller.run())
    stopping = asyncio.create_task(stop.wait())
    state.running = True
    try:
        await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        state.running = False
        for task in (polling, stopping):
            task.cancel()
        await asyncio.gather(polling, stopping, return_exceptions=True)
    if polling.done() and not polling.cancelled():
        polling.result()  # what ended the poller (a probe that cannot be built from its URL, a bug) ends the command
