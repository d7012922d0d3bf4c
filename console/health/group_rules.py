"""Rules over consumer groups: Redis pending entries left idle, Kafka groups with no committed offset, and Kafka
committed offsets that retention has passed (records deleted before the group read them)."""

from __future__ import annotations

from collections.abc import Iterator

from console.health.context import Context
from console.health.model import Finding
from probes.models import GroupLag


def findings(ctx: Context) -> Iterator[Finding | None]:
    for g in ctx.latest.groups:
        if not g.source:
            continue  # a Kafka group with neither commits nor assignments: no topic to judge it on
        if ctx.latest.kind == "redis" and g.pending is not None:
            idle_ms = g.oldest_pending_idle_ms if g.pending else 0
            if idle_ms is not None:
                yield ctx.judge("pending_idle", idle_ms / 1000, queue=g.source, group=g.group,
                                detail=f"{g.pending:,} pending" + (f", delivered up to {g.max_delivery_count} times"
                                                                    if g.max_delivery_count else ""))
        if ctx.latest.kind == "kafka" and g.partitions:
            yield _no_commit(ctx, g)
            yield _before_log_start(ctx, g)


def _no_commit(ctx: Context, g: GroupLag) -> Finding | None:
    """Partitions holding records (high > low) where the group has committed nothing: where it starts there depends
    on its auto.offset.reset, which the broker does not know. An empty partition is not counted: nothing there is
    read twice or skipped whatever the policy."""
    missing = [p.partition for p in g.partitions if p.committed is None and p.high > p.low]
    return ctx.judge("no_committed_offset", len(missing), queue=g.source, group=g.group,
                     detail=f"partition(s) {', '.join(map(str, missing[:20]))}" if missing else None)


def _before_log_start(ctx: Context, g: GroupLag) -> Finding | None:
    """A committed offset below the partition's log start: retention (or a delete-records) removed records the group
    never read; the figure is how many."""
    lost = {p.partition: p.low - p.committed for p in g.partitions if p.committed is not None and p.committed < p.low}
    detail = ", ".join(f"partition {p}: {n:,}" for p, n in sorted(lost.items())[:20]) if lost else None
    return ctx.judge("offset_before_log_start", sum(lost.values()), queue=g.source, group=g.group, detail=detail)
