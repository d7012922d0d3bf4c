"""Writing results: JSON for scripts, rich for people (on a console that never interprets broker content)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from console.safe_text import json_text, safe
from probes.serialize import to_jsonable

PIPE_WIDTH = 1_000_000  # off a terminal a table is as wide as its widest row: no cell is ever wrapped or cut


def stdout_console() -> Console:
    """The one console for stdout. On a terminal rich fits tables to its width; off one (a pipe, a file) nothing
    wraps or folds: a name split across two lines breaks grep and awk."""
    if sys.stdout.isatty():
        return Console(highlight=False, emoji=False, markup=False, soft_wrap=False)
    return Console(highlight=False, emoji=False, markup=False, soft_wrap=False, width=PIPE_WIDTH,
                   force_terminal=False)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def stderr_console() -> Console:
    """The one console for stderr (notes, the load run's header and progress): plain text, never wrapped — rich
    wraps at 80 columns when stderr is not a terminal, and a message cut in two is two lines to a script."""
    return Console(stderr=True, highlight=False, emoji=False, markup=False, soft_wrap=True,
                   force_terminal=None if sys.stderr.isatty() else False)


def emit_json(data: Any, *, lines: bool = False) -> None:
    """Write ``data`` as JSON (one line per document when ``lines``, as ``--watch --json`` does)."""
    sys.stdout.write(json_text(to_jsonable(data), indent=None if lines else 2) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    stderr_console().print(f"note: {safe(message, None)}", style="yellow")
