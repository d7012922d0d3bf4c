"""Rules about a broker as a whole: RabbitMQ resource alarms, and a broker qdeck cannot read (UNKNOWN)."""

from __future__ import annotations

from collections.abc import Iterator

from console.health.catalog import UNREACHABLE
from console.health.context import Context
from console.health.model import Finding, Level


def findings(ctx: Context) -> Iterator[Finding | None]:
    if ctx.latest.kind != "rabbitmq":
        return
    alarms = ctx.latest.overview.alarms
    if alarms is None:  # the user may not read /api/nodes: the check cannot say, and says so
        if ctx.rules.thresholds("node_alarm", ctx.broker) is None:
            return
        why = next((n for n in ctx.latest.notes if n.startswith("node alarms unknown")), "node alarms unknown")
        yield Finding(rule="node_alarm", level=Level.UNKNOWN, broker=ctx.broker, queue=None, group=None, value=None,
                      threshold=None, summary=f"{why}; set node_alarm = \"off\" in the rules file to skip the rule")
        return
    said = "; ".join(f"{a.resource} alarm on {a.node}" + _figures(a.resource, a.value, a.limit) for a in alarms)
    yield ctx.judge("node_alarm", len(alarms), detail=said or "no memory or disk alarm")


def _figures(resource: str, value: int | None, limit: int | None) -> str:
    if value is None or limit is None:
        return ""
    if resource == "memory":
        return f" ({_bytes(value)} used, high watermark {_bytes(limit)})"
    return f" ({_bytes(value)} free, limit {_bytes(limit)})"


def _bytes(n: int) -> str:
    if abs(n) < 1024:
        return f"{n:,} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if abs(size) < 1024 or unit == "GiB":
            break
    return f"{size:,.1f} {unit}"


def unreachable(broker: str, error: str) -> Finding:
    """A broker that could not be read: UNKNOWN (Nagios exit 3), the reason as the summary."""
    return Finding(rule=UNREACHABLE, level=Level.UNKNOWN, broker=broker, queue=None, group=None, value=None,
                   threshold=None, summary=" ".join(str(error).split()) or "broker unreachable")
