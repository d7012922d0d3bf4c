"""DESIGN.md rule 1: the layers import nothing above them (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = {
    "probes": ["textual", "locust", "gevent", "typer"],
    "loadgen": ["textual"],
    "loadgen.share_run": ["textual", "locust", "gevent"],  # a distributed share runs on asyncio, without gevent
    "console": ["locust", "gevent"],
}
MODULES = {
    "probes": ["probes", "probes.rabbitmq.probe", "probes.fake", "probes.serialize"],
    "loadgen": ["loadgen"],
    "loadgen.share_run": ["loadgen.share_run", "loadgen.merge_runs", "loadgen.shares"],
    "console": ["console.cli", "console.cmd_load", "console.load_cluster"],
}


@pytest.mark.parametrize("layer", sorted(MODULES))
def test_layer_imports_nothing_forbidden(layer: str) -> None:
    code = ("import importlib, json, sys\n"
            f"for m in {MODULES[layer]!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    leaked = [m for m in FORBIDDEN[layer] if m in loaded]
    assert leaked == [], f"{layer} imports {leaked}"
