"""``qdeck console --serve``: the console in a browser tab, through textual-serve.

textual-serve's ``Server`` runs a shell command per browser tab (each tab its own console process, drawn by
xterm.js over a websocket). The command is ``qdeck console`` again, with this very Python; the brokers travel to it
in ``$QDECK_SERVE_BROKERS`` (the environment, not the command line: a broker URL may hold a password, and a command
line is in every process list and in textual-serve's own log lines).

The server listens on a socket bound here first, so that a bad ``--host`` or a port in use is one line and exit 2
(and ``--port 0`` picks a free port, which the printed URL names). Pages and websockets answer only to the names of
a loopback address when bound to one (a web page elsewhere cannot reach the console by DNS rebinding), and a
websocket opened by a page of another origin is refused.

textual-serve's internals used here (the one place qdeck touches them; pinned in pyproject.toml, exercised by
tests/console/test_tui_serve.py in a real browser): ``Server._process_messages(websocket, app_service)``, the
template's context keys in ``handle_index``, ``AppService._process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console.runner import fail

SPECS_ENV = "QDECK_SERVE_BROKERS"  # set by --serve for its children: a JSON list of --broker values (null: default)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SHUTDOWN_S = 3.0  # Ctrl-C: how long open tabs get to close before their consoles are stopped
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def child_specs() -> list[str | None] | None:
    """The ``--broker`` values a ``--serve`` parent handed down, or None outside a served console."""
    raw = os.environ.get(SPECS_ENV)
    if not raw:
        return None
    try:
        specs = json.loads(raw)
    except ValueError:
        specs = None
    if not isinstance(specs, list) or not specs or not all(s is None or isinstance(s, str) for s in specs):
        raise fail(f"${SPECS_ENV} is not a JSON list of broker URLs and profile names")
    return specs


def child_command(interval: float, read_only: bool = False, rules: Path | None = None) -> str:
    """The shell command textual-serve runs for every tab: this Python, ``qdeck console``, no broker on it (``exec``:
    the tab's process is the console itself, not a shell waiting on it). ``rules``: the health rules file, by its
    absolute path (the tabs start in the server's directory, but say it whole anyway)."""
    return "exec " + shlex.join([sys.executable, "-m", "console.cli", "console", "--interval", repr(interval),
                                 *(["--read-only"] if read_only else []),
                                 *(["--rules", str(rules.resolve())] if rules is not None else [])])


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (the first address the name resolves to), or one line and exit 2."""
    if not host.strip():
        raise fail("--host is empty (0.0.0.0 listens on every IPv4 address)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise fail(f"--host {host!r} does not resolve: {getattr(exc, 'strerror', None) or exc}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise fail(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def page_url(host: str, sock: socket.socket) -> str:
    """The URL to open: the bound port; a wildcard address named by this machine's host name."""
    address, port = sock.getsockname()[:2]
    if ip_address(address).is_unspecified:
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def serve_console(specs: list[str | None], interval: float, host: str, port: int, read_only: bool = False,
                  rules: Path | None = None) -> None:
    """Serve ``qdeck console`` (one process per browser tab) until Ctrl-C or SIGTERM."""
    try:
        import textual_serve.server  # noqa: F401 (the check only; _server imports what it needs)
    except ImportError as exc:  # textual-serve (or aiohttp) is missing from this environment
        raise fail(f"--serve needs the textual-serve package (pip install textual-serve): {exc}") from None
    sock = listen(host, port)
    loopback = ip_address(sock.getsockname()[0]).is_loopback
    names = LOOPBACK_NAMES | {host.lower().strip("[]")} if loopback else None
    os.environ[SPECS_ENV] = json.dumps(specs)  # textual-serve hands its environment to every child
    server = _server(child_command(interval, read_only, rules), names)
    print(f"qdeck console: open {page_url(host, sock)} in a browser (one console per tab; Ctrl-C stops the server)",
          flush=True)
    server.run(sock)


def host_allowed(request_host: str, allowed: frozenset[str] | None) -> bool:
    """Whether a request's ``Host`` header names the server (always, when ``allowed`` is None)."""
    if allowed is None:
        return True
    try:
        name = urlsplit(f"//{request_host}").hostname
    except ValueError:
        return False
    return name is not None and name.lower() in allowed


def origin_allowed(origin: str | None, request_host: str) -> bool:
    """A websocket from a page of this server, or from no page at all (browsers always send ``Origin``)."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request_host.lower()


async def _reap(process: asyncio.subprocess.Process | None) -> None:
    """Wait up to SHUTDOWN_S for a tab's console to exit; then kill it."""
    if process is None:
        return
    try:
        await asyncio.wait_for(process.wait(), SHUTDOWN_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _server(command: str, allowed_hosts: frozenset[str] | None) -> Any:
    """textual-serve's ``Server`` with qdeck's checks, its own startup line and no access log (imported here: plain
    ``qdeck console`` never loads aiohttp)."""
    import aiohttp_jinja2
    from aiohttp import WSCloseCode, web
    from textual_serve.server import Server

    def to_int(text: str, default: int) -> int:
        return int(text) if text.isdigit() and 4 <= int(text) <= 64 else default

    class ConsoleServer(Server):
        tabs: dict[web.WebSocketResponse, Any]  # each open tab's websocket and its textual-serve AppService

        async def on_startup(self, app: web.Application) -> None:
            """textual-serve prints a banner and the command; qdeck has printed its one line already."""

        async def on_shutdown(self, app: web.Application) -> None:
            """Close every tab (textual-serve then tells its console to quit) and wait for the consoles to exit,
            killing what is still running after SHUTDOWN_S: no console outlives the server."""
            tabs = list(self.tabs.items())
            await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"qdeck console stopped")
                                   for ws, _service in tabs), return_exceptions=True)
            await asyncio.gather(*(_reap(getattr(service, "_process", None)) for _ws, service in tabs))

        async def _process_messages(self, websocket: web.WebSocketResponse, app_service: Any) -> None:
            """textual-serve's loop over a tab's websocket (it runs while the tab is open), the tab counted."""
            self.tabs[websocket] = app_service
            try:
                await super()._process_messages(websocket, app_service)
            finally:
                self.tabs.pop(websocket, None)

        @aiohttp_jinja2.template("app_index.html")
        async def handle_index(self, request: web.Request) -> dict[str, Any]:
            """textual-serve's page, its URLs taken from the request (the name the browser used), not the bind
            address (0.0.0.0 is no address a browser can open)."""
            if not host_allowed(request.host, allowed_hosts):
                raise web.HTTPMisdirectedRequest(text="this qdeck console answers to localhost only\n")
            secure = request.scheme == "https"
            return {"font_size": to_int(request.query.get("fontsize", "16"), 16),
                    "app_websocket_url": f"{'wss' if secure else 'ws'}://{request.host}/ws",
                    "config": {"static": {"url": f"{request.scheme}://{request.host}/static/"}},
                    "application": {"name": self.title}}

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            if not host_allowed(request.host, allowed_hosts):
                raise web.HTTPMisdirectedRequest(text="this qdeck console answers to localhost only\n")
            if not origin_allowed(request.headers.get("Origin"), request.host):
                raise web.HTTPForbidden(text="a page of another site may not open this console\n")
            return await super().handle_websocket(request)

        def run(self, sock: socket.socket) -> None:
            """``Server.serve`` on qdeck's socket: Ctrl-C and SIGTERM stop it (tabs get SHUTDOWN_S to close)."""
            self.initialize_logging()
            loop = asyncio.new_event_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_exit)
            web.run_app(self._make_app(), sock=sock, handle_signals=False, loop=loop, print=None, access_log=None,
                        shutdown_timeout=SHUTDOWN_S)

    server = ConsoleServer(command, title="qdeck console")
    server.tabs = {}
    return server
