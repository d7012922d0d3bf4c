"""Every health rule over one broker's window: the findings ``qdeck check`` prints, the exporter exports and the
console shows. OK findings are included (each rule's status per subject); a rule that is off for a subject gives
nothing there, and the trend rules give nothing until the window holds two snapshots."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from console.health import broker_rules, group_rules, queue_rules, trend_rules
from console.health.broker_rules import unreachable
from console.health.context import Context
from console.health.model import Finding
from console.health.rules_file import RuleSet
from console.health.window import SnapshotWindow
from probes.lag import LagRow

FAMILIES = (queue_rules.findings, group_rules.findings, trend_rules.findings, broker_rules.findings)


def evaluate(rules: RuleSet, window: SnapshotWindow, rows: Sequence[LagRow] | None = None) -> list[Finding]:
    """Every rule × every subject it applies to in ``window``'s latest snapshot (nothing when it has none);
    ``rows``: the latest snapshot's lag rows against the previous one, when the caller has them already."""
    return [f for f in steps(rules, window, rows) if f is not None]


def steps(rules: RuleSet, window: SnapshotWindow, rows: Sequence[LagRow] | None = None) -> Iterator[Finding | None]:
    """``evaluate`` one subject at a time (None: a subject with no finding), for a caller that shares its thread
    between steps: the console judges a big broker on its event loop a slice at a time, since a judging thread
    starves the loop of the GIL (every paint waits on it) however little it runs."""
    latest = window.latest
    if latest is None:
        return
    ctx = Context.of(rules, window, latest, rows)
    for family in FAMILIES:
        yield from family(ctx)


__all__ = ["evaluate", "steps", "unreachable"]
