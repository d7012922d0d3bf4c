"""``qdeck check``: health rules over every broker, as a Nagios / Icinga / Sensu check plugin."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.text import Text

from console.health.collect import BrokerReading, read_once, read_window
from console.health.model import Level, worst
from console.health.report import check_document, findings_table, status_line
from console.health.rules_file import load_rules
from console.output import emit_json, stdout_console
from console.poller import DEFAULT_TIMEOUT_S, resolve_targets
from console.runner import brokers_option, cli_errors, fail, finite_at_most
from console.safe_text import safe

MAX_WINDOW_S = 3600.0


@cli_errors
def check(
    broker: list[str] = brokers_option(),
    rules_path: Path | None = typer.Option(None, "--rules", "-r", metavar="FILE", dir_okay=False,
                                           help="Rule thresholds (TOML); default: the built-in thresholds."),
    window: str | None = typer.Option(None, "--window", "-w", metavar="DURATION",
                                      help="Poll repeatedly over this long (30s, 2m) so the trend rules (lag_growing, "
                                           "dlq_growing) and drain_time can judge; default: one poll."),
    interval: float = typer.Option(5.0, "--interval", "-i", min=0.2, callback=finite_at_most(600),
                                   metavar="SECONDS",
                                   help="With --window: seconds between polls (at most the window)."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", min=0.5, callback=finite_at_most(600),
                                  metavar="SECONDS",
                                  help="A broker that does not answer a poll in this long is UNKNOWN."),
    as_json: bool = typer.Option(False, "--json", help="Print every finding as JSON (OK ones too)."),
    show_all: bool = typer.Option(False, "--all", "-a", help="List OK findings too."),
) -> None:
    """Judge every broker by the health rules; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, as Nagios, Icinga and
    Sensu expect of a check plugin.

    The first line is the plugin's status line (QDECK CRITICAL - 2 critical, 1 warning | perfdata), then a table of
    the findings that are not OK (--all: every finding). The worst finding decides the exit code, in the order
    CRITICAL > UNKNOWN > WARNING > OK: a broker that cannot be read is UNKNOWN (3) unless another one is CRITICAL.
    Bad input (an unreadable rules file, an unknown key, a bad --window) is one line on stderr and exit 2, which
    Nagios shows as CRITICAL: a broken check is never silent.

    \b
    Rules, with the built-in thresholds (a figure at least one is WARN / CRIT):
      dlq_not_empty                 dead letters held: warn 1, crit 1000
      dlq_growing                   dead letters added over --window: warn 1
      no_consumers                  messages waiting, no consumer: warn 1
      lag                           messages behind: warn 1000, crit 10000
      drain_time                    seconds to drain (--window): warn 300, crit 1800
      lag_growing                   growth over --window, never shrinking: warn 1
      pending_idle                  Redis oldest pending entry, seconds: warn 60, crit 600
      no_committed_offset           Kafka partitions with records, no commit: warn
      offset_before_log_start       Kafka messages lost unread: crit
      node_alarm                    RabbitMQ memory or disk alarm: crit
      missing_dead_letter_exchange  RabbitMQ dead letters dropped: warn

    \b
    A rules file (TOML); the last \\[\\[queue]] entry that matches and names a rule wins:
      \\[defaults]
      lag = { warn = 1000, crit = 10000 }
      drain_time = { warn = "5m", crit = "30m" }
      \\[\\[queue]]
      match = "batch-*"     # also group = "GLOB", broker = "GLOB"
      lag = { warn = 100000 }
      no_consumers = "off"
    """
    rules = load_rules(rules_path)
    window_s = _window_seconds(window)
    targets = resolve_targets(broker)
    if window_s:
        readings = asyncio.run(read_window(targets, window_s, interval, timeout))
    else:
        readings = asyncio.run(read_once(targets, timeout))
    findings = [f for r in readings for f in r.findings(rules)]
    level = worst(findings)
    if as_json:
        emit_json(check_document(findings, [_broker_doc(r) for r in readings], rules.source, window_s))
        raise typer.Exit(int(level))
    out = stdout_console()
    out.print(Text(status_line(findings)))
    shown = findings if show_all else [f for f in findings if f.level is not Level.OK]
    if shown:
        out.print(findings_table(shown))
    for r in readings:
        latest = r.window.latest
        if r.error is None and latest is not None and latest.partial:
            out.print(Text(f"! {safe(r.label)}: partial snapshot (a listing budget ran out): some queues were not "
                           "judged", style="yellow"))
    raise typer.Exit(int(level))


def _window_seconds(window: str | None) -> float:
    if window is None:
        return 0.0
    from loadgen.units import parse_duration

    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise fail(f"--window: {exc}") from None
    if not 0 < seconds <= MAX_WINDOW_S:
        raise fail(f"--window {window!r} must be more than 0 and at most {MAX_WINDOW_S / 60:g} minutes")
    return seconds


def _broker_doc(r: BrokerReading) -> dict[str, object]:
    latest = r.window.latest
    return {"broker": r.label, "kind": r.kind, "reachable": r.error is None,
            "error": r.error, "polls": r.polls, "snapshots": len(r.window.snapshots),
            "window_covered_s": r.window.covered_s, "partial": bool(latest and latest.partial),
            "notes": list(latest.notes) if latest else []}
