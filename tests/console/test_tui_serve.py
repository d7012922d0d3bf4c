"""``qdeck console --serve``: the console in a real headless Chromium (textual-serve, xterm.js), and its bad input.

The page draws the terminal with xterm.js on a canvas (WebGL or 2D), so the text is read from xterm's own buffer:
an init script catches the ``Terminal`` textual.js creates (the bundle keeps it private, as ``this.terminal`` of its
session object) and the test reads ``buffer.active`` line by line — the cells the user sees, not the bytes on the
websocket.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from console import serve
from console.cli import main
from tests.browser import Browser, browser_fixture  # noqa: F401 (the browser fixture)
from tests.cli import Run, qdeck
from tests.workers import unique

PASSWORD = "s3cr3tPW"
NOWHERE_REDIS = "redis://127.0.0.1:1/0"  # resolving a URL connects to nothing: bad-input cases need no broker
START_S = 10.0

# Catch xterm's Terminal as textual.js stores it (``this.terminal = new Terminal(...)``): a one-shot setter on
# Object.prototype that turns itself back into a plain own property and removes itself after the first terminal.
CATCH_TERMINAL = """
(() => {
  Object.defineProperty(Object.prototype, "terminal", {
    configurable: true,
    set(value) {
      Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
      if (value && typeof value.loadAddon === "function" && "buffer" in value && !window.qdeckTerminal) {
        window.qdeckTerminal = value;
        delete Object.prototype.terminal;
      }
    },
  });
})();
"""

# The screen as text: every row of xterm's active buffer (the viewport), trailing blanks trimmed.
SCREEN_TEXT = """
() => {
  const term = window.qdeckTerminal;
  if (!term) return null;
  const buf = term.buffer.active, rows = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buf.getLine(buf.viewportY + y);
    rows.push(line ? line.translateToString(true) : "");
  }
  return rows.join("\\n");
}
"""


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str  # the page
    password: str  # the broker URL's
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_") or k.startswith("QDECK_TEST_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    return env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (textual-serve's per-tab consoles are in it), SIGKILL what outlives 5 s."""
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def _group_cmdlines(pgid: int) -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return lines


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[Served]:
    """``qdeck console --serve --port 0`` over the shared Redis, a password in its URL (Redis 6+ takes any password
    for a ``nopass`` user), in a process group of its own."""
    parts = urlsplit(redis_url)
    password = parts.password or PASSWORD
    url = redis_url if parts.password else urlunsplit(
        parts._replace(netloc=f"{parts.username or 'default'}:{PASSWORD}@{parts.netloc}"))
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "console", "--serve", "--port", "0",
                                 "--interval", "0.5", "--broker", url], stdout=fout, stderr=ferr,
                                stdin=subprocess.DEVNULL, env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + START_S
        while not (found := re.search(r"http://\S+", out.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no URL from qdeck console --serve (exit {proc.poll()}): "
                                     f"{out.read_text()}{err.read_text()}")
            time.sleep(0.05)
        yield Served(proc, found.group(0), password, out, err)
    finally:
        _stop(proc)


@pytest.mark.redis
@pytest.mark.browser
def test_served_console_shows_the_overview_in_chromium(served: Served, browser: Browser, redis_url: str) -> None:
    stream = unique("qdeck-serve")
    r = redis.Redis.from_url(redis_url)
    r.xadd(stream, {"body": b"hello"})
    port = urlsplit(served.url).port
    page = browser._browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the page asks Google for a font: nothing outside this server is fetched (and nothing can be, here)
    page.route(lambda url: not url.startswith(served.url), lambda route: route.abort())
    page.add_init_script(CATCH_TERMINAL)
    try:
        page.goto(served.url, wait_until="domcontentloaded")

        def screen_with(*patterns: str, timeout_s: float = 10.0) -> str:
            """The screen once every pattern (a regular expression, JavaScript's) matches it."""
            try:
                page.wait_for_function(f"ps => {{ const s = ({SCREEN_TEXT})(); return s !== null && "
                                       "ps.every(p => new RegExp(p, 'm').test(s)); }", arg=list(patterns),
                                       timeout=timeout_s * 1000, polling=100)
            except Exception as exc:
                raise AssertionError(f"the terminal never showed {patterns}; it shows:\n"
                                     f"{page.evaluate(SCREEN_TEXT)}\npage errors: {errors}\n"
                                     f"server: {served.output()}") from exc
            text: str = page.evaluate(SCREEN_TEXT)
            return text

        # the overview: its table's columns and the broker it polls (named without the password)
        where = urlsplit(redis_url)
        screen_with(r"queue / topic / stream\s+type\s+depth", rf"\*+@{re.escape(f'{where.hostname}:{where.port}')}",
                    timeout_s=20)
        # keys travel too: "/" opens the filter, the stream's name narrows the table to it
        page.focus(".xterm-helper-textarea")
        page.keyboard.press("/")
        screen_with("filter: substring")  # the filter box has the focus (keys before that go to the table)
        page.keyboard.type(stream)
        shown = screen_with(rf"^{re.escape(stream)}\s+stream\s+1\s+0\s+0\b")  # name, type, depth, in flight, consumers

        # another name for 127.0.0.1 (DNS rebinding) gets no page; a page of another site gets no websocket
        assert httpx.get(served.url, headers={"Host": f"rebound.example:{port}"}).status_code == 421
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        assert httpx.get(f"{served.url}ws", headers={**upgrade, "Origin": "http://evil.example"}).status_code == 403
        assert httpx.get(f"{served.url}ws", headers={**upgrade, "Host": "rebound.example"}).status_code == 421

        # a console process for the tab, in the server's process group, with no password on its command line (the
        # server's own has it: the test gave it there)
        consoles = [c for c in _group_cmdlines(served.proc.pid) if "console.cli console --interval" in c]
        assert len(consoles) == 1, _group_cmdlines(served.proc.pid)
        assert served.password not in consoles[0]
        assert served.password not in shown
        assert errors == []

        # SIGTERM to the server alone, the tab still open: it closes the tab and its console exits with it
        os.kill(served.proc.pid, signal.SIGTERM)
        assert served.proc.wait(10) == 0, served.output()
        assert _group_cmdlines(served.proc.pid) == []
        page.wait_for_selector("body.-closed", state="attached", timeout=5000)  # textual-serve's "Session ended"
    finally:
        page.close()
        r.delete(stream)
        r.close()
    out = served.output()
    assert served.password not in out
    assert len(served.out.read_text().splitlines()) == 1, out  # the one URL line: no banner, no access log


def _no_serving(*_args: object) -> None:
    raise AssertionError("a bad-input case got as far as serving")


def run_in_process(args: list[str], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
                   env: dict[str, str] | None = None) -> Run:
    """``qdeck ARGS`` as the console script runs it (``console.cli.main()``), in this process: a subprocess per case
    would cost ~1.5 s of imports each."""
    for key in list(os.environ):
        if key.startswith("QDECK_") and not key.startswith("QDECK_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("QDECK_CONFIG", "/nonexistent/qdeck-brokers.toml")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["qdeck", *args])
    monkeypatch.setattr(serve, "_server", _no_serving)
    capfd.readouterr()
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capfd.readouterr()
    return Run(code if isinstance(code, int) else 1, out, err)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


BAD = [
    (["--port", "70000"], "'--port'"),
    (["--port", "http"], "'--port'"),
    (["--port", "-1"], "'--port'"),
    (["--port", "{busy}"], "cannot listen on 127.0.0.1 port {busy}: Address already in use"),
    (["--host", "203.0.113.7"], "cannot listen on 203.0.113.7 port 8000"),  # TEST-NET-3: not this machine's
    (["--host", ""], "--host is empty"),
    (["--host", "bad host\x1b[2J", "--port", "0"], "--host 'bad host\\x1b[2J'"),
    (["--host", "::1", "--interval", "inf"], "'--interval'"),
    (["-b", "nosuch://x"], "nosuch"),
    (["-b", NOWHERE_REDIS, "-b", NOWHERE_REDIS], "the same broker was given twice"),
]


@pytest.mark.timeout(15)
@pytest.mark.parametrize(("args", "says"), BAD, ids=["port-range", "port-word", "port-negative", "port-in-use",
                                                     "host-foreign", "host-empty", "host-hostile", "interval",
                                                     "broker-scheme", "broker-twice"])
def test_bad_serve_input_is_one_line_and_exit_2(args: list[str], says: str, busy_port: int,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    args = [a.replace("{busy}", str(busy_port)) for a in args]
    broker = [] if "-b" in args else ["-b", f"redis://u:{PASSWORD}@127.0.0.1:1/0"]
    run = run_in_process(["console", "--serve", *broker, *args], monkeypatch, capfd)
    lines = run.err.splitlines()
    assert (run.code, run.out, len(lines)) == (2, "", 1), run
    assert lines[0].startswith("qdeck: ") and says.replace("{busy}", str(busy_port)) in lines[0], lines[0]
    assert PASSWORD not in run.all and "\x1b" not in run.all and "Traceback" not in run.all


def test_host_and_port_need_serve(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(["console", "-b", NOWHERE_REDIS, "--port", "8123"], monkeypatch, capfd)
    assert (run.code, run.err.splitlines(), run.out) == (2, ["qdeck: --host and --port go with --serve"], "")


@pytest.mark.parametrize(("value", "says"), [
    ("redis://127.0.0.1:1/0", f"${serve.SPECS_ENV} is not a JSON list"),
    ("[]", f"${serve.SPECS_ENV} is not a JSON list"),
    (json.dumps([NOWHERE_REDIS, NOWHERE_REDIS]), "the same broker was given twice"),  # read: the brokers are in it
])
def test_a_served_console_takes_its_brokers_from_the_environment(value: str, says: str,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    run = run_in_process(["console"], monkeypatch, capfd, env={serve.SPECS_ENV: value})
    assert (run.code, run.out, len(run.err.splitlines())) == (2, "", 1), run
    assert says in run.err


def test_a_subprocess_says_the_same(busy_port: int, monkeypatch: pytest.MonkeyPatch,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    args = ["console", "--serve", "-b", NOWHERE_REDIS, "--port", str(busy_port)]
    real = qdeck(*args, timeout=20)
    here = run_in_process(args, monkeypatch, capfd)
    assert (real.code, real.out, real.err) == (here.code, here.out, here.err) == (
        2, "", f"qdeck: cannot listen on 127.0.0.1 port {busy_port}: Address already in use\n")


def test_served_tabs_judge_health_by_the_rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--serve --rules FILE``: every tab's console gets the file, by its absolute path (it was refused before)."""
    import shlex

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules.toml").write_text("[defaults]\nlag = { warn = 5 }\n")
    argv = shlex.split(serve.child_command(2.0, True, Path("rules.toml")).removeprefix("exec "))
    assert argv[-3:] == ["--read-only", "--rules", str(tmp_path / "rules.toml")], argv
    assert "--rules" not in serve.child_command(2.0)
