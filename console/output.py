"""Writing results: JSON for scripts, rich for people (on a console that never interprets broker content)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from probes.serialize import to_jsonable


def stdout_console() -> Console:
    return Console(highlight=False, emoji=False, markup=False, soft_wrap=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, emoji=False, markup=False)


def emit_json(data: Any, *, lines: bool = False) -> None:
    """Write ``data`` as JSON (one line per document when ``lines``, as ``--watch --json`` does)."""
    text = json.dumps(to_jsonable(data), ensure_ascii=False, indent=None if lines else 2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    stderr_console().print(f"note: {message}", style="yellow")
