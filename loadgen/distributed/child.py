"""Run a child process with a document on its stdin, hand each line of its stdout to a callback as it comes, and
keep its stderr in a file (a pipe read only after stdout ends would fill at 64 KiB and deadlock both processes).

Free of gevent on purpose: the agent calls it under gevent's patched ``subprocess``; tests call it plainly.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChildResult:
    code: int
    stderr_lines: list[str]

    def last_error(self) -> str:
        return self.stderr_lines[-1] if self.stderr_lines else f"the run exited with {self.code}"


def run_child(argv: Sequence[str], stdin_text: str, on_line: Callable[[str], None],
              started: Callable[[subprocess.Popen[str]], None] | None = None) -> ChildResult:
    """Run ``argv``; ``on_line`` gets each stdout line as it is written; ``started`` gets the process (to stop it)."""
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="backslashreplace") as err:
        child = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                 encoding="utf-8", errors="backslashreplace")
        if started is not None:
            started(child)
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(stdin_text)
            child.stdin.close()
        except BrokenPipeError:  # it exited before reading: its stderr says why
            pass
        for line in child.stdout:
            on_line(line)
        code = child.wait()
        err.seek(0)
        return ChildResult(code, err.read().strip().splitlines())
