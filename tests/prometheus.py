"""A real Prometheus server for tests that scrape qdeck's exporter (Debian's ``prometheus`` package).

When the binary is missing it is installed with ``apt-get install -y --no-install-recommends prometheus`` (as root;
once per machine; the package's service is not started in a container, and the tests never use it), else the test
is skipped — or fails when ``QDECK_REQUIRE_BROKERS=1`` (CI), so that CI never passes by skipping.

Each server is the test's own: its own config, data dir (under the test's tmp_path) and free port on loopback,
stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.embedded_redis import free_port

PROMETHEUS = Path(os.environ.get("QDECK_TEST_PROMETHEUS", "/usr/bin/prometheus"))
REQUIRE = os.environ.get("QDECK_REQUIRE_BROKERS", "") not in ("", "0")
APT_TIMEOUT_S = 900
READY_TIMEOUT_S = 60.0


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"QDECK_REQUIRE_BROKERS=1 and Prometheus is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _apt_install() -> str | None:
    """Install Debian's prometheus; the reason it could not be, or None."""
    if os.geteuid() != 0:
        return f"{PROMETHEUS} is missing and installing it needs root (apt-get install prometheus)"
    if shutil.which("apt-get") is None:
        return f"{PROMETHEUS} is missing and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    for args in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"{' '.join(args)} took more than {APT_TIMEOUT_S} s"
        if done.returncode == 0 and args[1] == "install" and PROMETHEUS.exists():
            return None
    return f"apt-get install prometheus failed: {(done.stderr or done.stdout).strip()[-300:]}"


def prometheus_path() -> Path:
    """The binary's path, installing it if need be; skips (or fails under QDECK_REQUIRE_BROKERS=1) without one."""
    if not PROMETHEUS.exists():
        reason = _apt_install()
        if reason is not None:
            _unavailable(reason)
    return PROMETHEUS


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """``/api/v1/query``'s result vector (each ``{"metric": {...}, "value": [ts, "v"]}``)."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        doc = r.json()
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/targets", timeout=10)
        r.raise_for_status()
        active: list[dict[str, Any]] = r.json()["data"]["activeTargets"]
        return active


@contextmanager
def prometheus(tmp_path: Path, scrape: str, *, interval_s: int = 1) -> Iterator[Prometheus]:
    """A Prometheus of the test's own scraping ``scrape`` (``host:port``) every ``interval_s``; stopped by PID."""
    binary = prometheus_path()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {interval_s}s\n"
        f"  evaluation_interval: {interval_s}s\n"
        "scrape_configs:\n"
        "  - job_name: qdeck\n"
        f"    scrape_interval: {interval_s}s\n"
        f"    scrape_timeout: {interval_s}s\n"
        "    static_configs:\n"
        f"      - targets: ['{scrape}']\n")
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(binary), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp_path)
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready in {READY_TIMEOUT_S:g} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
