"""Rules over the latest snapshot's queues and lag rows: dead letters, no consumers, lag, time to drain, a missing
dead-letter exchange."""

from __future__ import annotations

from collections.abc import Iterator

from console.health.context import Context, dead_letters, is_backlog, is_delay_queue
from console.health.model import Finding
from probes.lag import LagRow


def findings(ctx: Context) -> Iterator[Finding | None]:
    for q in ctx.latest.queues:
        if q.is_dead_letter:
            yield ctx.judge("dlq_not_empty", dead_letters(q), queue=q.name)
        if q.dead_letter_target is not None and q.kind == "queue":
            missing = q.dead_letter_exchange_missing
            yield ctx.judge("missing_dead_letter_exchange", int(missing), queue=q.name,
                            detail=f"dead-letters to {q.dead_letter_target}"
                                   + (", which does not exist: dead letters are dropped" if missing else ""))
    for row in ctx.rows:
        if not is_backlog(ctx, row):
            continue
        yield _no_consumers(ctx, row)
        yield ctx.judge("lag", row.backlog, queue=row.source, group=row.group,
                        detail=None if row.exact else "a lower bound: the count was cut short")
        if row.seconds_to_drain is not None:  # draining or idle; a growing or stalled backlog is lag_growing's
            yield ctx.judge("drain_time", row.seconds_to_drain, queue=row.source, group=row.group,
                            detail=f"net drain {row.net_rate:+,.1f}/s" if row.net_rate is not None else None)


def _no_consumers(ctx: Context, row: LagRow) -> Finding | None:
    q = ctx.row_queue(row)
    if row.group is None and (q is None or q.kind != "queue" or is_delay_queue(q)):
        return None  # Redis lists cannot tell their consumers; delay queues have none by design
    waiting = row.backlog if row.consumers == 0 else 0
    who = "member(s)" if row.group is not None else "consumer(s)"
    return ctx.judge("no_consumers", waiting, queue=row.source, group=row.group,
                     detail=f"{row.backlog:,} waiting, {row.consumers:,} {who}")
