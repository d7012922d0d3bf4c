"""Headless Chromium for tests that open qdeck's HTML in a real browser (Playwright driving Debian's ``chromium``).

Playwright cannot download its own browsers here, so it drives ``/usr/bin/chromium`` through ``executable_path``.
When the browser is missing it is installed with ``apt-get install -y chromium`` (as root; once per machine), else
the test is skipped — or fails when ``QDECK_REQUIRE_BROKERS=1`` (CI), so that CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("QDECK_TEST_CHROMIUM", "/usr/bin/chromium"))
REQUIRE = os.environ.get("QDECK_REQUIRE_BROKERS", "") not in ("", "0")
APT_TIMEOUT_S = 900


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"QDECK_REQUIRE_BROKERS=1 and the browser is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _apt_install() -> str | None:
    """Install Debian's chromium; the reason it could not be, or None."""
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"{' '.join(args)} took more than {APT_TIMEOUT_S} s"
        if done.returncode == 0 and args[1] == "install" and CHROMIUM.exists():
            return None
    return f"apt-get install chromium failed: {(done.stderr or done.stdout).strip()[-300:]}"


def chromium_path() -> Path:
    """The browser's path, installing it if need be; skips (or fails under QDECK_REQUIRE_BROKERS=1) without one."""
    if not CHROMIUM.exists():
        reason = _apt_install()
        if reason is not None:
            _unavailable(reason)
    return CHROMIUM


@dataclass
class Opened:
    """A page and what it said: console errors, uncaught exceptions, requests to anything but the page itself."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)  # alert(), confirm(), ...: dismissed and recorded


@dataclass
class Browser:
    _browser: Any

    def open(self, path: Path, *, width: int = 1300, height: int = 900) -> Opened:
        page = self._browser.new_page(viewport={"width": width, "height": height})
        opened = Opened(page)
        page.on("console", lambda msg: opened.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: opened.page_errors.append(str(exc)))
        url = path.resolve().as_uri()
        page.on("request", lambda req: opened.requests.append(req.url) if req.url != url else None)

        def dialog(d: Any) -> None:
            opened.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        page.goto(url, wait_until="load")
        return opened


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """One headless Chromium for a test module, through Playwright's sync API. Module-scoped: Playwright's own event
    loop is closed before the next module's asyncio tests run."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(path), args=["--no-sandbox"], headless=True)
        try:
            yield Browser(chromium)
        finally:
            chromium.close()
