"""``qdeck load report DIR [--compare BASE_DIR] [-o FILE]``: a run's or a search's results as one self-contained HTML
page.

A directory with a summary.json is a run (``qdeck load run --out``): its page is built by
``loadgen.results.html_report`` (summary.json and the interval logs, never the engine). One with a search.json and no
summary.json is a search (``qdeck load search --out``): ``loadgen.results.search_report`` draws latency against rate.
Either way the CLI's one sanitiser is handed in. ``--compare`` takes two runs only: a search is refused (compare two
of its probes' runs instead). Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from console.runner import cli_errors
from console.safe_text import json_text, safe
from loadgen.errors import ReportError

__all__ = ["report", "write_report"]


def write_report(run_dir: Path, out: Path, compare: Path | None = None) -> Path:
    """Write the report of the run (or the search) in ``run_dir`` (a run over the base run in ``compare``) to
    ``out``, whole or not at all (a temporary file renamed into place); ``ReportError`` (one line) for bad input.
    What ``qdeck load run --html`` calls after a run."""
    from loadgen.results.html_report import Sanitiser, build_report
    from loadgen.results.search_report import build_search_report, report_kind

    kind = report_kind(run_dir)
    if compare is not None:
        if kind == "search":
            raise ReportError(f"--compare: {str(run_dir)!r} is a search directory and a search report stands alone; "
                              "compare two probes' runs instead (qdeck load report DIR/probe-NN-RATE --compare "
                              "BASE/probe-NN-RATE)")
        if report_kind(compare) == "search":
            raise ReportError(f"--compare: {str(compare)!r} is a search directory, not a run; give one of its probes' "
                              "run directories (probe-NN-RATE)")
    if out.is_dir():
        raise ReportError(f"-o: {str(out)!r} is a directory")
    if not out.parent.is_dir():
        raise ReportError(f"-o: no directory {str(out.parent)!r}")
    sanitiser = Sanitiser(text=safe, json=lambda data: json_text(data, indent=None))
    try:
        page = (build_search_report(run_dir, sanitiser) if kind == "search" else
                build_report(run_dir, compare, sanitiser))
    except RecursionError:
        raise ReportError(f"{str(run_dir)!r}: the summary is nested too deeply to read") from None
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="ascii")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write {str(out)!r}: {exc.strerror}") from None
    return out


@cli_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory ('qdeck load run --out DIR' wrote it) or a search "
                                             "directory ('qdeck load search --out DIR': its search.json)."),
    compare: Path | None = typer.Option(None, "--compare", "-c", help="A base run directory: both runs are drawn on "
                                                                      "the same charts, with a table of changes "
                                                                      "(runs only, not searches)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="The HTML file to write (default: "
                                                                    "DIR/report.html)."),
) -> None:
    """Write a run's or a search's results as one self-contained HTML page (works offline). A run: percentile
    spectra, latency over time, requests per second, schedule lag, batch sizes, queue depth, SLO verdicts. A search:
    latency against rate with the SLOs, λ* and the failing rate marked, achieved rate, backlog slopes with their
    95 % CIs, every probe's verdict. Exit 2 on bad input."""
    out = output if output is not None else run_dir / "report.html"
    path = write_report(run_dir, out, compare)
    print(safe(str(path), None))
