"""The exporter's HTTP side: ``/metrics`` (``prometheus_client``'s exposition, OpenMetrics and gzip when the scraper
asks) and ``/healthz`` (JSON), served by threads while the poller runs on the event loop."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from console.safe_text import json_text

Health = Callable[[], tuple[bool, dict[str, Any]]]
StartResponse = Callable[..., Any]


class BindError(Exception):
    """The address could not be bound: one line, for ``fail``."""


def make_app(registry: CollectorRegistry, health: Health) -> Callable[[dict[str, Any], StartResponse],
                                                                      Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            ok, doc = health()
            return _reply(start_response, "200 OK" if ok else "503 Service Unavailable", "application/json",
                          json_text(doc, indent=None) + "\n")
        if path == "/":
            return _reply(start_response, "200 OK", "text/plain; charset=utf-8",
                          "qdeck exporter: /metrics (Prometheus), /healthz (JSON)\n")
        return _reply(start_response, "404 Not Found", "text/plain; charset=utf-8", "not found\n")

    return app


def _reply(start_response: StartResponse, status: str, content_type: str, body: str) -> list[bytes]:
    data = body.encode("ascii")
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None  # a scrape every few seconds is not news


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _server_class(host: str) -> type[WSGIServer]:
    """The IPv4 or IPv6 server class for ``host`` (``::1`` needs an AF_INET6 socket)."""
    try:
        family = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as exc:
        raise BindError(f"--bind {host!r} is not an address this machine has: {exc}") from None
    return type("ExporterServer", (_Threaded,), {"address_family": family})


class Server:
    """Bound at construction (so a port in use is an error before any broker is polled), served by ``start``."""

    def __init__(self, host: str, port: int, app: Callable[..., Iterable[bytes]]) -> None:
        try:
            self.httpd = make_server(host, port, app, server_class=_server_class(host), handler_class=_Quiet)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BindError(f"port {port} on {host} is in use (--port)") from None
            raise BindError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="qdeck-exporter-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()
