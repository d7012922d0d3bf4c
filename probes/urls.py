"""Broker URLs: ``amqp(s)://``, ``redis(s)://``, ``kafka://``, ``memory://`` parsed into one frozen target.

The target keeps the password out of its ``repr`` and offers ``display`` (the redacted URL) for every
message a person or a script will see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from probes.errors import ConfigError
from probes.redact import redact_url

BrokerKind = Literal["rabbitmq", "redis", "kafka", "memory"]

SCHEMES: dict[str, BrokerKind] = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "kafka": "kafka",
    "memory": "memory",
}
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379, "kafka": 9092}


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    """A parsed broker URL. ``password`` never appears in ``repr``; use ``display`` in messages."""

    url: str = field(repr=False)
    kind: BrokerKind
    scheme: str
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None = field(repr=False)
    path: str  # the RabbitMQ vhost, the Redis db number, or "" for Kafka
    params: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    name: str | None = None  # the profile name when it came from a profile
    allow_write: bool = False  # the profile says allow_write = true: dead-letter actions may write (probes.dlq.writes)
    read_only: bool = False  # --read-only: refuse every write, and RabbitMQ peeks (they requeue)

    @property
    def display(self) -> str:
        return redact_url(self.url)

    @property
    def label(self) -> str:
        """A short name for tables and headers: the profile name, else the redacted URL."""
        return self.name or self.display

    @property
    def place(self) -> str:
        """Where it is, without scheme or user: ``host:port/vhost`` (RabbitMQ), ``host:port/db`` (Redis),
        ``host:port`` (Kafka; the first bootstrap host)."""
        where = f"{self.host}:{self.port}"
        return f"{where}/{self.path}" if self.path else where

    @property
    def host(self) -> str:
        return self.hosts[0][0]

    @property
    def port(self) -> int:
        return self.hosts[0][1]

    @property
    def tls(self) -> bool:
        return self.scheme in ("amqps", "rediss")

    def param(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.params:
            if k == key:
                return v
        return default

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret this target holds, for scrubbing driver error text."""
        found = [self.password or ""]
        found += [v for k, v in self.params if any(s in k.lower() for s in ("password", "secret", "token"))]
        for _k, v in self.params:  # a URL inside a parameter (management_url=http://user:pass@...)
            if "://" in v and "@" in v:
                userinfo = urlsplit(v).netloc.rpartition("@")[0]
                found.append(unquote(userinfo.partition(":")[2]))
        return tuple(s for s in found if s)


def parse_broker_url(url: str, *, name: str | None = None) -> BrokerTarget:
    """Parse and validate ``url``; raise ``ConfigError`` with a one-line, credential-free reason."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
    except ValueError as exc:
        raise ConfigError(f"malformed broker URL {shown!r}: {exc}") from None
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ConfigError(f"malformed broker URL {shown!r}: unknown scheme {scheme + '://' if scheme else '(none)'}"
                          f" (expected one of {known}, or a profile name)")
    kind = SCHEMES[scheme]
    netloc = parts.netloc
    userinfo, _, hostlist = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if sep else None
    hosts: list[tuple[str, int]] = []
    if kind != "memory":
        if not hostlist:
            raise ConfigError(f"malformed broker URL {shown!r}: no host")
        for item in hostlist.split(","):
            hosts.append(_host_port(item, DEFAULT_PORTS[scheme], shown))
        if kind != "kafka" and len(hosts) > 1:
            raise ConfigError(f"malformed broker URL {shown!r}: only kafka:// takes several hosts")
    else:
        hosts.append((hostlist or "local", 0))
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    path = unquote(path)
    if kind == "rabbitmq" and not parts.path:
        path = "/"  # amqp://host means the default vhost
    if kind == "redis":
        path = path or "0"
        if not path.isdigit():
            raise ConfigError(f"malformed broker URL {shown!r}: the Redis database must be a number, not {path!r}")
    try:
        params = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise ConfigError(f"malformed broker URL {shown!r}: unreadable query string") from None
    return BrokerTarget(url=url.strip(), kind=kind, scheme=scheme, hosts=tuple(hosts), username=username,
                        password=password, path=path, params=params, name=name)


def _host_port(item: str, default_port: int, shown: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:5672
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ConfigError(f"malformed broker URL {shown!r}: empty host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"malformed broker URL {shown!r}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)
