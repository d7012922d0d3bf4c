"""DESIGN.md rule 1 and rule 12: the layers import nothing above them, and results never import the run.

Every module of each part is imported (in a fresh interpreter), so a forbidden import anywhere in a part fails here.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCUST_ONLY = {"loadgen.distributed.locust_nodes"}  # gevent and locust live in this module alone (DESIGN rule 7)


def modules(package: str, *, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package.replace(".", "/"))], prefix=f"{package}."):
        if info.name not in exclude and not info.name.endswith("__main__"):
            found.append(info.name)
    return sorted(found)


def loaded_after_import(names: list[str]) -> set[str]:
    code = ("import importlib, json, sys\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


CASES = {
    # part: (modules imported, modules that must not be loaded)
    "probes": (modules("probes"), ["textual", "locust", "gevent", "typer", "loadgen", "console"]),
    "loadgen": (modules("loadgen", exclude=LOCUST_ONLY), ["textual", "locust", "gevent", "console"]),
    "console": (modules("console"), ["locust", "gevent"]),
    # Results never import the run: what `load gate` and `load compare` load holds no engine and no transport.
    "results": (modules("loadgen.results"),
                ["loadgen.run", "loadgen.run.engine", "loadgen.transports", "loadgen.worker", "loadgen.brokers",
                 "pika", "confluent_kafka", "redis"]),
    "gate and compare": (["console.cmd_load"], ["loadgen.run.engine", "loadgen.transports", "loadgen.worker"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_imports_nothing_forbidden(case: str) -> None:
    names, forbidden = CASES[case]
    loaded = loaded_after_import(names)
    leaked = [m for m in forbidden if m in loaded]
    assert leaked == [], f"{case} imports {leaked}"


def test_every_part_has_modules() -> None:
    """The walk above finds the modules (an empty list would make the checks pass by importing nothing)."""
    assert len(modules("loadgen")) > 30 and "loadgen.run.engine" in modules("loadgen")
    assert "loadgen.results.slo" in modules("loadgen.results") and len(modules("probes")) > 15


def test_gate_and_compare_run_without_the_engine(tmp_path: Path) -> None:
    """`qdeck load gate` / `load compare` end to end in one interpreter: neither the engine nor a transport loads."""
    code = ("import json, sys\n"
            "from typer.testing import CliRunner\n"
            "from console.cli import app\n"
            "r = CliRunner()\n"
            f"r.invoke(app, ['load', 'gate', {str(tmp_path / 'missing.json')!r}, '--slo', 'p99<1s'])\n"
            f"r.invoke(app, ['load', 'compare', {str(tmp_path / 'a.json')!r}, {str(tmp_path / 'b.json')!r}])\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "loadgen.results.slo" in loaded
    assert not {"loadgen.run.engine", "loadgen.transports", "loadgen.transports.base"} & loaded


def import_graph(names: set[str], *, everywhere: bool) -> dict[str, set[str]]:
    """Which of ``names`` each of them imports: at module level only (lazy imports inside functions are fine), or
    ``everywhere`` (inside functions and under TYPE_CHECKING too)."""
    import ast

    graph: dict[str, set[str]] = {}
    for name in names:
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in ast.walk(tree) if everywhere else tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.update(m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in names)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """The modules that reach themselves through their imports."""
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    return [name for name in sorted(graph) if reaches(name, name, set())]


def test_no_import_cycle_in_loadgen() -> None:
    """No module of loadgen/ imports (at module level) one that imports it back, directly or not."""
    found = cycles(import_graph(set(modules("loadgen")), everywhere=False))
    assert found == [], f"import cycles through {found}"


def test_console_tui_has_no_import_cycle() -> None:
    """Issue 17 item 13: the console's screens never import the app or each other in a cycle — counting every import
    anywhere in a module (inside functions and under TYPE_CHECKING too): screens ask the app for navigation with
    messages (``OpenQueue``) and see it through ``console.tui.protocol.ConsoleApp``."""
    names = {f"console.tui.{p.stem}" for p in (ROOT / "console" / "tui").glob("*.py") if p.stem != "__init__"}
    graph = import_graph(names, everywhere=True)
    assert cycles(graph) == []
    screens = names - {"console.tui.app"}
    assert not any("console.tui.app" in graph[s] for s in screens)  # the app is wiring; nothing imports it
