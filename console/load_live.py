"""``qdeck load run``'s live feed and its Ctrl-C: where the feed goes, how it ends, and a graceful first interrupt.

The feed itself (what each line holds, where it is written) is ``loadgen.run.live_feed``; ``qdeck console --run``
follows it. The first Ctrl-C (SIGINT) stops the run as an ``--abort-on`` rule would: nothing more is sent, the
replies in flight are awaited, the files and the feed's last line are written, and the run exits 130; a second
Ctrl-C stops at once (130, no summary).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.output import warn
from probes import BrokerTarget

if TYPE_CHECKING:
    from loadgen.results.slo import Slo
    from loadgen.run.engine import Engine, RunResult
    from loadgen.run.live_feed import LiveFeed
    from loadgen.run.spec import RunSpec

EXIT_INTERRUPTED = 130


def open_feed(spec: RunSpec, target: BrokerTarget, slos: Sequence[Slo], out: Path | None) -> LiveFeed | None:
    """The run's feed (``out/live.jsonl``, else in the runs directory); None, with a note, when it cannot be
    written there (the run goes on without it)."""
    from loadgen.run.live_feed import LiveFeed, feed_path, register

    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        path = feed_path(spec.run_id, out)
        feed = LiveFeed(path, spec, broker=target.display, broker_kind=target.kind, slos=slos, out=out,
                        secrets=target.secrets)
    except OSError as exc:
        warn(f"no live feed for this run: {exc}")
        return None
    if out is not None:
        with contextlib.suppress(OSError):  # only `qdeck console --run` without a path needs the link
            register(spec.run_id, out)
    return feed


async def run_interruptible(engine: Engine, files: Path | None, csv_file: Path | None) -> RunResult:
    """``engine.run`` with the first SIGINT turned into ``engine.interrupt()``; the second one is Python's own
    KeyboardInterrupt."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        engine.interrupt()
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C: KeyboardInterrupt, at once

    installed = False
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread, no signals
        loop.add_signal_handler(signal.SIGINT, first)
        installed = True
    try:
        return await engine.run(str(files) if files is not None else None, csv_path=csv_file)
    finally:
        if installed:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)


def end_feed(feed: LiveFeed | None, result: RunResult, summary: Mapping[str, Any], code: int,
             out: Path | None) -> None:
    """The feed's last line, once the run's files are written."""
    if feed is None:
        return
    from loadgen.run.live_feed import verdict_of

    slo = summary.get("slo") or []
    verdict = verdict_of(code=code, slo=slo, aborted=result.aborted, stopped_by_slo=result.stopped_by_slo,
                         interrupted=result.interrupted)
    feed.finish(verdict, code, reason=result.aborted, summary=summary,
                summary_path=None if out is None else out / "summary.json")


def fail_feed(feed: LiveFeed | None, exc: BaseException, message: str | None = None) -> None:
    """The feed's last line when the run ends in an exception: a second Ctrl-C, or an error (``message``: it said
    so, redacted)."""
    if feed is None:
        return
    if isinstance(exc, KeyboardInterrupt):
        feed.finish("interrupted", EXIT_INTERRUPTED, reason="interrupted (a second Ctrl-C): no summary")
    else:
        feed.finish("error", 2 if message is not None else 1, reason=message or f"internal error: {type(exc).__name__}")
