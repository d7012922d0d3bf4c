"""Every health rule over one broker's window: the findings ``qdeck check`` prints, the exporter exports and the
console shows. OK findings are included (each rule's status per subject); a rule that is off for a subject gives
nothing there, and the trend rules give nothing until the window holds two snapshots."""

from __future__ import annotations

from console.health import broker_rules, group_rules, queue_rules, trend_rules
from console.health.broker_rules import unreachable
from console.health.context import Context
from console.health.model import Finding
from console.health.rules_file import RuleSet
from console.health.window import SnapshotWindow

FAMILIES = (queue_rules.findings, group_rules.findings, trend_rules.findings, broker_rules.findings)


def evaluate(rules: RuleSet, window: SnapshotWindow) -> list[Finding]:
    """Every rule × every subject it applies to in ``window``'s latest snapshot (nothing when it has none)."""
    latest = window.latest
    if latest is None:
        return []
    ctx = Context.of(rules, window, latest)
    return [f for family in FAMILIES for f in family(ctx) if f is not None]


__all__ = ["evaluate", "unreachable"]
