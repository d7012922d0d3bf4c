"""Rules over the window: lag growing, dead-letter queues growing. They judge once the window holds two snapshots
of the subject; before that they say nothing (a trend needs two points).

- **lag_growing**: the figure is the lag's growth from the first to the last snapshot of the window, judged only
  when it **never shrank between two consecutive snapshots** (equal counts are fine: RabbitMQ's statistics refresh
  every 5 s). A consumer that makes any progress within the window is not "growing", however busy the queue: the
  rule is for the backlog that only ever goes up. The window is what the caller kept (``qdeck check --window``, the
  exporter's span); its length is in the summary.
- **dlq_growing**: the figure is the dead-letter queue's growth from the first to the last snapshot (net: a redrive
  in between lowers it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from console.health.context import Context, dead_letters, is_backlog
from console.health.model import Finding
from console.render import fmt_duration
from probes.lag import backlogs
from probes.models import BrokerSnapshot


def findings(ctx: Context) -> Iterator[Finding | None]:
    snapshots = ctx.window.snapshots
    if len(snapshots) < 2:
        return
    span = f"over {fmt_duration(ctx.window.covered_s)}"
    window = ctx.window
    each = [window.derived(snap, "backlogs", backlogs) for snap in snapshots]
    for row in ctx.rows:
        key = (row.source, row.group)
        points = [b[key] for b in each if key in b]
        if len(points) < 2 or not is_backlog(ctx, row):
            continue
        growth = points[-1] - points[0]
        monotone = all(b >= a for a, b in itertools.pairwise(points))
        shown = f"{points[0]:,} -> {points[-1]:,} {span} ({len(points)} snapshots)"
        if not monotone:
            yield ctx.judge("lag_growing", 0, queue=row.source, group=row.group,
                            detail=f"{shown}; it shrank in between: consumers are making progress")
        else:
            yield ctx.judge("lag_growing", max(0, growth), queue=row.source, group=row.group, detail=shown)
    held = [window.derived(snap, "dead_letters", _dead_letters) for snap in snapshots]
    for q in ctx.latest.queues:
        if not q.is_dead_letter:
            continue
        points = [h[q.name] for h in held if q.name in h]
        if len(points) >= 2:
            yield ctx.judge("dlq_growing", max(0, points[-1] - points[0]), queue=q.name,
                            detail=f"{points[0]:,} -> {points[-1]:,} {span}")


def _dead_letters(snap: BrokerSnapshot) -> dict[str, int]:
    """Each dead-letter queue's dead letters in one snapshot."""
    return {q.name: dead_letters(q) for q in snap.queues if q.is_dead_letter}
