"""``qdeck load run --agents N``: the master side of a distributed run, in a child process of its own.

Locust's runners need gevent's patched standard library, which this process (asyncio, rich, httpx) must not get,
so the master runs as ``python -m loadgen.distributed.locust_nodes master``: it waits for the agents, deals the shares,
prints the live view on stderr and writes the merged files. This process then reads the merged ``summary.json``
and reports and judges it as for a local run. The spec and the broker go to the child on stdin, never in argv.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from console.runner import EXIT_USAGE
from probes import resolve_broker

if TYPE_CHECKING:
    from loadgen.run.llm_load import LlmLoad
    from loadgen.run.spec import RunSpec


def run_distributed(broker: str | None, spec: RunSpec, agents: int, *, bind: str, wait_s: float, out: Path | None,
                    quiet: bool, llm: LlmLoad | None = None) -> dict[str, Any]:
    """``llm``: the run is LLM-shaped; every agent sends its share with the same lengths and objectives (a dataset's
    rows travel with the share), drawn from the share's own seed."""
    from loadgen.distributed.shares import spec_to_dict
    from loadgen.results.summary import load_summary
    from loadgen.run.llm_load import llm_to_wire

    target = resolve_broker(broker)  # a bad URL or unknown profile fails here, before any agent is involved
    with tempfile.TemporaryDirectory(prefix="qdeck-master-") as tmp:
        out_dir = out if out is not None else Path(tmp)
        args = [sys.executable, "-m", "loadgen.distributed.locust_nodes", "master", "--agents", str(agents),
                "--bind", bind, "--out", str(out_dir), "--wait", str(wait_s)] + (["--quiet"] if quiet else [])
        doc = {"spec": spec_to_dict(spec), "broker": broker, "display": target.display, "kind": target.kind,
               "llm": llm_to_wire(llm) if llm is not None else None}
        try:
            code = _relay(args, json.dumps(doc))
        except KeyboardInterrupt:  # the child got the Ctrl-C too and told the agents to stop
            raise typer.Exit(130) from None
        if code != 0:  # the child printed its one-line error (relayed through the sanitiser)
            raise typer.Exit(code if code in (EXIT_USAGE, 130) else EXIT_USAGE)
        summary = load_summary(out_dir / "summary.json")
    return summary


def _relay(args: list[str], stdin_text: str) -> int:
    """Run the master child; every line it prints (progress, its one-line error) reaches stderr sanitised."""
    from console.safe_text import safe

    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             encoding="utf-8", errors="backslashreplace")
    assert child.stdin is not None and child.stdout is not None
    with contextlib.suppress(BrokenPipeError):
        child.stdin.write(stdin_text)
        child.stdin.close()
    for line in child.stdout:
        print(safe(line.rstrip("\n"), None), file=sys.stderr, flush=True)
    return child.wait()
