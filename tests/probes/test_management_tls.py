"""The management API client's TLS: a plain http:// client loads no CA bundle (httpx's default costs ~20 ms a
client), and an https:// one verifies certificates exactly as before. Real HTTP: the shared RabbitMQ's management
API, and a local HTTPS server with a certificate made here."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.embedded_redis import free_port
from probes import parse_broker_url
from probes.errors import BrokerUnreachable
from probes.rabbitmq.http import ManagementClient


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every CA bundle or verifying default context built while the test runs (they count, they do not change)."""
    loads: list[str] = []
    default, load = ssl.create_default_context, ssl.SSLContext.load_verify_locations

    def counted_default(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loads.append("create_default_context")
        return default(*args, **kwargs)

    def counted_load(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append("load_verify_locations")
        load(self, *args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted_default)
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted_load)
    return loads


@pytest.mark.rabbitmq
async def test_a_plain_http_client_loads_no_certificates(rabbitmq_url: str, ca_loads: list[str]) -> None:
    client = ManagementClient(parse_broker_url(rabbitmq_url))
    try:
        assert client.base_url.startswith("http://")
        assert ca_loads == []
        assert "rabbitmq_version" in await client.get("/overview")
    finally:
        await client.aclose()
    assert ca_loads == []


@pytest.fixture(scope="module")
def https_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A management-API stand-in over HTTPS with a self-signed certificate for 127.0.0.1: (base URL, certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)

    class Overview(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"rabbitmq_version": "stand-in"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Overview)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()


def _https_client(base: str, query: str = "") -> ManagementClient:
    return ManagementClient(parse_broker_url(f"amqps://guest:guest@127.0.0.1:{free_port()}/?management_url={base}"
                                             f"{query}"))


async def test_https_still_verifies_certificates(https_api: tuple[str, Path], ca_loads: list[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base, cert = https_api
    client = _https_client(base)
    assert ca_loads  # httpx's verifying context, as before
    try:
        with pytest.raises(BrokerUnreachable, match="TLS failed: CERTIFICATE_VERIFY_FAILED"):
            await client.get("/overview")
    finally:
        await client.aclose()

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # httpx's own CA settings still apply
    trusting = _https_client(base)
    try:
        assert await trusting.get("/overview") == {"rabbitmq_version": "stand-in"}
    finally:
        await trusting.aclose()


async def test_https_with_verify_false_skips_the_check(https_api: tuple[str, Path]) -> None:
    base, _cert = https_api
    client = _https_client(base, "&verify=false")
    try:
        assert await client.get("/overview") == {"rabbitmq_version": "stand-in"}
    finally:
        await client.aclose()
