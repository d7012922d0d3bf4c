"""A small async client for RabbitMQ's management HTTP API that speaks only in ``ProbeError``s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from probes.errors import AuthFailed, BrokerUnreachable, ManagementDisabled, NotFound, ProbeError
from probes.netcause import connection_cause
from probes.redact import redact_text, redact_url
from probes.urls import BrokerTarget

PAGE_SIZE = 500  # the management API's maximum page size
PAGE_CONCURRENCY = 3  # pages in flight at once: quicker than serial, gentle on a production node


def management_base_url(target: BrokerTarget) -> str:
    """``?management_url=`` when given, else http://host:15672 (https://host:15671 for amqps)."""
    explicit = target.param("management_url")
    if explicit:
        return explicit.rstrip("/")
    scheme, port = ("https", 15671) if target.tls else ("http", 15672)
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{scheme}://{host}:{port}"


def vhost_path(vhost: str) -> str:
    return quote(vhost, safe="")


class ManagementClient:
    def __init__(self, target: BrokerTarget, *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.target = target
        self.base_url = management_base_url(target)
        self._shown_base = redact_url(self.base_url)
        user = target.username or "guest"
        password = target.password if target.password is not None else ("guest" if user == "guest" else "")
        self._user = user
        self._client = httpx.AsyncClient(base_url=self.base_url + "/api", auth=(user, password),
                                         timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                                         verify=_verify(target, self.base_url), transport=transport,
                                         headers={"user-agent": "qdeck"})

    @property
    def shown_base(self) -> str:
        """The management API's base URL, redacted, for messages."""
        return self._shown_base

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: Mapping[str, Any] | None = None, *, what: str = "") -> Any:
        return await self._request("GET", path, params=params, what=what)

    async def post(self, path: str, body: Mapping[str, Any], *, what: str = "") -> Any:
        return await self._request("POST", path, json_body=body, what=what)

    async def paged(self, path: str, params: Mapping[str, Any] | None = None, *, what: str = "",
                    page_size: int = PAGE_SIZE, concurrency: int = PAGE_CONCURRENCY) -> list[dict[str, Any]]:
        """Every item of a paginated listing: page 1 first (it tells the page count), then the rest,
        ``concurrency`` pages at a time."""
        base = dict(params or {}, page_size=page_size, pagination="true")
        first = await self.get(path, dict(base, page=1), what=what)
        items: list[dict[str, Any]] = list(first.get("items", []))
        page_count = int(first.get("page_count", 1) or 1)
        if page_count > 1:
            gate = asyncio.Semaphore(concurrency)

            async def fetch(page: int) -> list[dict[str, Any]]:
                async with gate:
                    data = await self.get(path, dict(base, page=page), what=what)
                    return list(data.get("items", []))

            for chunk in await asyncio.gather(*(fetch(p) for p in range(2, page_count + 1))):
                items.extend(chunk)
        # Queues created or deleted between pages can shift items across page boundaries: keep each once.
        seen: set[tuple[str, str]] = set()
        unique = []
        for item in items:
            key = (str(item.get("vhost", "")), str(item.get("name", "")))
            if key not in seen:
                seen.add(key)
                unique.append(item)
        return unique

    async def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                       json_body: Mapping[str, Any] | None = None, what: str = "") -> Any:
        try:
            response = await self._client.request(method, path, params=params, json=json_body)
        except httpx.TimeoutException:
            raise BrokerUnreachable(
                f"broker unreachable: the management API at {self._shown_base} timed out") from None
        except (httpx.ConnectError, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise await self._unreachable(exc) from None
        except httpx.HTTPError as exc:
            raise ProbeError(self._scrub(f"management API request failed: {type(exc).__name__}: {exc}")) from None
        if response.status_code == 401:
            raise AuthFailed(f"authentication failed for user {self._user!r} at {self._shown_base} "
                             "(management API): check the username and password")
        if response.status_code == 403:
            raise AuthFailed(f"user {self._user!r} is not allowed to do this at {self._shown_base}: the management "
                             "API needs the 'monitoring' or 'management' tag and permissions on the vhost")
        if response.status_code == 404:
            raise NotFound(f"{what or 'object'} not found at {self._shown_base}")
        if response.status_code >= 400:
            raise ProbeError(self._scrub(f"management API error {response.status_code} on {method} {path}: "
                                         f"{_reason(response)}"))
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProbeError(f"{self._shown_base} did not answer with JSON: is it RabbitMQ's management port? "
                             "(pass ?management_url=... to point elsewhere)") from None

    async def _unreachable(self, exc: Exception) -> ProbeError:
        """Tell 'plugin off' (AMQP answers, HTTP does not) from 'nothing there'."""
        cause = connection_cause(exc)
        amqp = f"{self.target.host}:{self.target.port}"
        if await _port_open(self.target.host, self.target.port):
            return ManagementDisabled(
                f"management API unreachable at {self._shown_base} ({cause}) although AMQP answers at {amqp}: "
                "enable it with 'rabbitmq-plugins enable rabbitmq_management' or pass ?management_url=URL")
        return BrokerUnreachable(f"broker unreachable: nothing answers at {amqp} (AMQP) nor "
                                 f"{self._shown_base} (management API): {cause}")

    def _scrub(self, text: str) -> str:
        return redact_text(text, self.target.secrets)


def _verify(target: BrokerTarget, base_url: str) -> ssl.SSLContext | bool:
    """httpx's ``verify``. https: certificates checked (httpx's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR) unless
    ``?verify=false``. Plain http never speaks TLS, yet httpx would load its CA bundle all the same (~20 ms a
    client): it gets an empty client context instead, which httpx takes as it is and which refuses any certificate."""
    if urlsplit(base_url).scheme.lower() == "https":
        return target.param("verify", "true") != "false"
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict):
            return str(data.get("reason") or data.get("error") or data)[:300]
    except ValueError:
        pass
    return response.text[:300].replace("\n", " ")


async def _port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
