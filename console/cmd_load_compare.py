"""``qdeck load compare BASE NEW``: a run against a baseline (``loadgen.results.compare``), exit 99 on a regression.

Runs of different tests (what ``differences`` lists), or an LLM-shaped run against a plain one, are refused in one
line (exit 2) unless ``--anyway``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from console.runner import cli_errors, fail
from loadgen.errors import LoadgenError

__all__ = ["compare"]


@cli_errors
def compare(
    base: Path = typer.Argument(..., help="Baseline summary.json."),
    new: Path = typer.Argument(..., help="New summary.json."),
    max_regression: str = typer.Option("10%", "--max-regression", help="Largest allowed worsening, e.g. 10%."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the checks as JUnit XML."),
    json_out: bool = typer.Option(False, "--json", help="Checks as JSON."),
    anyway: bool = typer.Option(False, "--anyway", help="Compare runs of different tests (broker, queue, schedule, "
                                                       "payload, workers, qdeck version, token lengths, "
                                                       "objectives, an LLM run with a plain one) all the same."),
) -> None:
    """Compare a run with a baseline: exit 99 when a latency percentile, the error share or the achieved rate
    regressed by more than --max-regression (two LLM runs: also TTFT, TPOT, ITL, output tokens/s, goodput and
    attainment). Runs of different tests are refused unless --anyway."""
    from console.load_view import print_checks
    from console.output import warn
    from loadgen.results.compare import compare as run_compare
    from loadgen.results.compare import differences, llm_mismatch
    from loadgen.results.slo import EXIT_SLO_FAILED
    from loadgen.results.summary import load_summary

    text = max_regression.strip().rstrip("%")
    try:
        limit = float(text) / 100
    except ValueError:
        raise fail(f"--max-regression {max_regression!r} is not a percentage (e.g. 10%)") from None
    if not 0 <= limit < math.inf:
        raise fail(f"--max-regression must be a percentage of 0 or more, not {max_regression!r}")
    try:
        base_doc, new_doc = load_summary(base), load_summary(new)
        checks = run_compare(base_doc, new_doc, limit)
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    differ = differences(base_doc, new_doc)
    llm_side = llm_mismatch(base_doc, new_doc)
    if llm_side is not None and not anyway:
        llm_run, plain = (base, new) if llm_side == "base" else (new, base)
        raise fail(f"{llm_run} is an LLM-shaped run (streamed replies) and {plain} is not: give --anyway to compare "
                   "what they share")
    if differ and not anyway:
        raise fail(f"the runs are of different tests ({'; '.join(differ)}): give --anyway to compare them all the "
                   "same")
    for line in differ:
        warn(f"compared anyway: {line}")
    if not checks:
        raise fail("nothing to compare: the two runs share no recorded stage")
    if json_out:
        print(json.dumps([{"metric": c.name, "base": c.base, "new": c.new, "change": c.change, "ok": c.ok}
                          for c in checks], indent=2, ensure_ascii=True))
    else:
        print_checks(checks)
    if junit is not None:
        from loadgen.results.junit import write_junit

        write_junit(junit, "qdeck.compare", [(c.name, c.ok, f"{c.name}: {c.base} → {c.new} ({c.change})")
                                             for c in checks])
    raise typer.Exit(EXIT_SLO_FAILED if any(not c.ok for c in checks) else 0)
