"""The gevent-free parts of the distributed run: the agent's child process runner and the master's deadline."""

from __future__ import annotations

import sys

import pytest

from loadgen.distributed.child import run_child
from loadgen.distributed.shares import run_deadline_s
from loadgen.run.schedules import ClosedLoop, Constant
from loadgen.run.spec import RunSpec

# A child that writes 1 MiB to stderr before its stdout ends: with stderr on a pipe read only after stdout ends,
# both processes block for good once the pipe holds 64 KiB.
NOISY = ("import sys\n"
         "doc = sys.stdin.read()\n"
         "sys.stderr.write('x' * 1023 + '\\n' * 1 + ('y' * 1023 + '\\n') * 1023)\n"
         "sys.stderr.flush()\n"
         "for i in range(3): print('{\"i\": %d}' % i, flush=True)\n"
         "sys.stderr.write('qdeck: the last line ' + doc + '\\n')\n"
         "sys.exit(3)\n")


def test_child_with_a_lot_of_stderr_does_not_deadlock() -> None:
    lines: list[str] = []
    done = run_child([sys.executable, "-c", NOISY], "hello", lines.append)
    assert lines == ['{"i": 0}\n', '{"i": 1}\n', '{"i": 2}\n']
    assert done.code == 3
    assert len(done.stderr_lines) == 1025
    assert done.last_error() == "qdeck: the last line hello"


def test_child_that_exits_before_reading_its_stdin() -> None:
    done = run_child([sys.executable, "-c", "import sys; sys.stderr.write('qdeck: no\\n'); sys.exit(2)"],
                     "x" * 1_000_000, lambda _line: None)
    assert (done.code, done.last_error()) == (2, "qdeck: no")


@pytest.mark.parametrize(("spec", "expected"), [
    (RunSpec(queue="q", schedule=Constant(100), duration_s=60, warmup_s=5, timeout_s=10), 5 + 60 + 10 + 120),
    (RunSpec(queue="q", schedule=Constant(100), duration_s=None, requests=1000, timeout_s=2), 10 + 2 + 120),
    (RunSpec(queue="q", schedule=ClosedLoop(4), duration_s=None, requests=100, timeout_s=1), 25 + 1 + 120),
])
def test_master_deadline_covers_the_plan(spec: RunSpec, expected: float) -> None:
    assert run_deadline_s(spec) == pytest.approx(expected)
