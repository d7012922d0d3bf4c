"""One rule, one place (issue 16 item 17): SIGTERM, a grace period, then SIGKILL, written once in
``loadgen.stop_process`` and used by the worker child, the embedded Redis, the test harness and the benches'
private brokers (three copies before, already different: one left a killed child unreaped)."""

from __future__ import annotations

import ast
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadgen.stop_process import stop_process

ROOT = Path(__file__).resolve().parents[2]
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)")


def _child(code: str, **kwargs: object) -> tuple[subprocess.Popen[bytes], bytes]:
    """A child and the first line it printed (once printed, its signal handler is in place)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


def test_a_child_that_ends_on_sigterm() -> None:
    proc, _ = _child("import time; print('ready', flush=True); time.sleep(60)")
    assert stop_process(proc, 5) == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc, _ = _child(STUBBORN)
    assert stop_process(proc, 0.3) == -signal.SIGKILL
    assert stop_process(proc, 0.3) == -signal.SIGKILL  # already stopped: its code again, nothing sent


def test_a_whole_process_group_and_a_bare_pid() -> None:
    # the child starts a grandchild in its own session; signalling the group stops both
    proc, line = _child(f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], "
                        "stdout=subprocess.PIPE); p.stdout.readline(); print(p.pid, flush=True); time.sleep(60)",
                        start_new_session=True)
    grandchild = int(line)
    stop_process(proc, 0.3, group=True)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
    # a bare PID, not our child (a broker started by an earlier run), is stopped too
    launcher, line = _child(f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], "
                            "stdout=subprocess.PIPE, start_new_session=True); p.stdout.readline(); print(p.pid)")
    launcher.wait(5)
    orphan = int(line)
    assert _alive(orphan)
    assert stop_process(orphan, 0.3) is None
    assert not _alive(orphan)
    assert stop_process(None) is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _names(nodes: list[ast.stmt] | ast.expr | None) -> set[str]:
    if nodes is None:
        return set()
    roots = nodes if isinstance(nodes, list) else [nodes]
    return {n.attr if isinstance(n, ast.Attribute) else n.id for root in roots for n in ast.walk(root)
            if isinstance(n, ast.Attribute | ast.Name)}


def _kills_after_a_grace(fn: ast.FunctionDef) -> bool:
    """A SIGTERM (or terminate) right before a ``try`` that waits and kills when the wait times out."""
    for block in (getattr(n, field) for n in ast.walk(fn) for field in ("body", "orelse", "finalbody")
                  if isinstance(getattr(n, field, None), list)):
        for before, stmt in itertools.pairwise(block):
            if not isinstance(stmt, ast.Try) or not isinstance(before, ast.Expr | ast.With) \
                    or not ({"SIGTERM", "terminate"} & _names([before])):
                continue
            for handler in stmt.handlers:
                if "TimeoutExpired" in _names(handler.type) and {"kill", "SIGKILL", "killpg"} & _names(handler.body):
                    return True
    return False


def test_no_other_copy_of_the_rule() -> None:
    """No module but loadgen/stop_process.py sends SIGTERM, waits, and kills when the wait times out."""
    copies = []
    for path in [*ROOT.glob("console/**/*.py"), *ROOT.glob("probes/**/*.py"), *ROOT.glob("loadgen/**/*.py"),
                 *ROOT.glob("bench/*.py"), ROOT / "tests" / "brokers.py"]:
        if path.name == "stop_process.py":
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            if _kills_after_a_grace(fn):
                copies.append(f"{path.relative_to(ROOT)}:{fn.name}")
    assert copies == [], copies
