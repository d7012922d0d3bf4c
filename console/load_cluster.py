"""``qdeck load run --agents N``: the master side of a distributed run, in a child process of its own.

Locust's runners need gevent's patched standard library, which this process (asyncio, rich, httpx) must not get,
so the master runs as ``python -m loadgen.locust_nodes master``: it waits for the agents, deals the shares,
prints the live view on stderr and writes the merged files. This process then reads the merged ``summary.json``
and reports and judges it as for a local run. The spec and the broker go to the child on stdin, never in argv.
"""

from __future__ import annotations

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
    from loadgen.engine import RunSpec


def run_distributed(broker: str | None, spec: RunSpec, agents: int, *, bind: str, wait_s: float, out: Path | None,
                    quiet: bool) -> dict[str, Any]:
    from loadgen.report import load_summary
    from loadgen.shares import spec_to_dict

    target = resolve_broker(broker)  # a bad URL or unknown profile fails here, before any agent is involved
    with tempfile.TemporaryDirectory(prefix="qdeck-master-") as tmp:
        out_dir = out if out is not None else Path(tmp)
        args = [sys.executable, "-m", "loadgen.locust_nodes", "master", "--agents", str(agents), "--bind", bind,
                "--out", str(out_dir), "--wait", str(wait_s)] + (["--quiet"] if quiet else [])
        doc = {"spec": spec_to_dict(spec), "broker": broker, "display": target.display}
        try:
            done = subprocess.run(args, input=json.dumps(doc), text=True, stdout=sys.stderr, check=False)
        except KeyboardInterrupt:  # the child got the Ctrl-C too and told the agents to stop
            raise typer.Exit(130) from None
        if done.returncode != 0:  # the child printed its one-line error
            raise typer.Exit(done.returncode if done.returncode in (EXIT_USAGE, 130) else EXIT_USAGE)
        summary = load_summary(out_dir / "summary.json")
    return summary
