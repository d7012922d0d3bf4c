"""Run the real ``qdeck`` command in a subprocess and capture everything it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def all(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        return json.loads(self.out)


def qdeck(*args: str, config: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_") or k.startswith("QDECK_TEST_")}
    full_env["QDECK_CONFIG"] = str(config) if config else "/nonexistent/qdeck-brokers.toml"
    full_env["COLUMNS"] = "200"
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)
