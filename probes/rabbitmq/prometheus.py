"""Queue rates from RabbitMQ's Prometheus plugin (``rabbitmq_prometheus``, port 15692), where it offers them.

The management API's ``message_stats`` are deprecated upstream in favour of this plugin. Rates come from two
scrapes' counter deltas (the previous snapshot's and this one's), like Kafka's committed offsets:

- consumed: ``rabbitmq_detailed_queue_messages_delivered_ack_total`` + ``..._delivered_total`` (deliveries to
  consumers; ``basic.get``, qdeck's peeks included, is counted apart and is not consumption);
- published: ``rabbitmq_detailed_queue_exchange_messages_published_total`` summed over exchanges.

Those per-queue families (``queue_delivery_metrics``, ``queue_exchange_metrics`` on ``/metrics/detailed``) arrived
after 3.10: RabbitMQ 3.10 has only per-*channel* counters (``channel_queue_metrics``), which vanish with their
channel, so a short-lived publisher's messages would be missed. Where the families are absent, the plugin is off,
the scrape is another cluster's, or the cluster has several nodes (the plugin's figures are per node), the probe
says why and the rates come from ``message_stats``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from probes.errors import ConfigError
from probes.redact import redact_url
from probes.urls import BrokerTarget

PROMETHEUS = "prometheus"
MESSAGE_STATS = "management message_stats"

DELIVERED = ("rabbitmq_detailed_queue_messages_delivered_ack_total", "rabbitmq_detailed_queue_messages_delivered_total")
PUBLISHED = "rabbitmq_detailed_queue_exchange_messages_published_total"
FAMILIES = ("queue_delivery_metrics", "queue_exchange_metrics")
RETRY_AFTER_S = 60.0  # after the plugin did not answer, ask again only this much later

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_base_url(target: BrokerTarget) -> str | None:
    """``?prometheus_url=`` when given (``off`` disables it), else http://host:15692 (https://host:15691 for
    amqps)."""
    explicit = target.param("prometheus_url")
    if explicit is not None:
        if explicit.strip().lower() in ("", "off", "none", "false"):
            return None
        try:
            url = httpx.URL(explicit)
        except (httpx.InvalidURL, TypeError, ValueError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ConfigError("?prometheus_url= is not an http:// or https:// URL with a host (or 'off')")
        return explicit.rstrip("/")
    scheme, port = ("https", 15691) if target.tls else ("http", 15692)
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class QueueCounters:
    """One scrape: per queue (published, consumed) totals, and whose figures they are."""

    taken_at: float  # time.monotonic()
    counters: Mapping[str, tuple[float, float]]
    cluster: str | None
    node: str | None


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def parse_counters(text: str, vhost: str, taken_at: float = 0.0) -> QueueCounters | None:
    """The per-queue counters of ``vhost`` in a ``/metrics/detailed`` answer; None when the answer does not carry
    the per-queue families at all (RabbitMQ before they existed ignores unknown families)."""
    offered = False
    published: dict[str, float] = {}
    delivered: dict[str, float] = {}
    cluster = node = None
    for line in text.splitlines():
        if line.startswith("#"):
            if line.startswith("# TYPE ") and line.split()[2] in DELIVERED:
                offered = True
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        if name not in DELIVERED and name != PUBLISHED and name != "rabbitmq_identity_info":
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(raw_labels or "")}
        if name == "rabbitmq_identity_info":
            cluster, node = labels.get("rabbitmq_cluster"), labels.get("rabbitmq_node")
            continue
        if labels.get("vhost", labels.get("queue_vhost")) != vhost or "queue" not in labels:
            continue
        try:
            value = float(raw_value)
        except ValueError:
            continue
        into = delivered if name in DELIVERED else published
        into[labels["queue"]] = into.get(labels["queue"], 0.0) + value
    if not offered:
        return None
    names = set(published) | set(delivered)
    return QueueCounters(taken_at, {n: (published.get(n, 0.0), delivered.get(n, 0.0)) for n in names}, cluster, node)


def rates_between(old: QueueCounters, new: QueueCounters) -> dict[str, tuple[float, float]]:
    """(publish, consume) msg/s per queue between two scrapes. A queue absent from the old scrape (new since)
    counts from zero; a counter that went down (the queue was deleted and re-created) counts from zero too."""
    dt = new.taken_at - old.taken_at
    if dt <= 0:
        return {}
    out = {}
    for name, (pub, dlv) in new.counters.items():
        old_pub, old_dlv = old.counters.get(name, (0.0, 0.0))
        out[name] = ((pub - old_pub if pub >= old_pub else pub) / dt, (dlv - old_dlv if dlv >= old_dlv else dlv) / dt)
    return out


@dataclass(frozen=True, slots=True)
class RateReading:
    """What one snapshot gets: rates per queue (None: use message_stats), why not when not, and the cluster the
    scrape came from."""

    rates: Mapping[str, tuple[float, float]] | None
    note: str | None
    cluster: str | None = None


class PrometheusRates:
    """Scrapes the plugin once per snapshot and keeps the previous scrape to turn counters into rates."""

    def __init__(self, target: BrokerTarget, *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = prometheus_base_url(target)
        self.shown = redact_url(self.base_url) if self.base_url else None
        verify = target.param("verify", "true") != "false"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)), verify=verify,
                                         transport=transport, headers={"user-agent": "qdeck"})
        self._previous: QueueCounters | None = None
        self._retry_at = 0.0
        self._unsupported: str | None = None  # set once the plugin proved it has no per-queue counters

    async def aclose(self) -> None:
        await self._client.aclose()

    async def read(self, vhost: str) -> RateReading:
        """Rates since the previous call, when the plugin offers per-queue counters; otherwise None and the reason,
        in one line. Never raises: the management API's rates are the fallback."""
        if self.base_url is None:
            return RateReading(None, "Prometheus plugin disabled by ?prometheus_url=off")
        if self._unsupported:
            return RateReading(None, self._unsupported)
        now = time.monotonic()
        if now < self._retry_at:
            return RateReading(None, f"Prometheus plugin not answering at {self.shown}")
        try:
            response = await self._client.get(self.base_url + "/metrics/detailed",
                                              params=[("vhost", vhost), *(("family", f) for f in FAMILIES)])
        except (httpx.HTTPError, httpx.InvalidURL):
            self._retry_at = now + RETRY_AFTER_S
            return RateReading(None, f"Prometheus plugin not answering at {self.shown} "
                                     "(rabbitmq-plugins enable rabbitmq_prometheus)")
        if response.status_code != 200:
            self._retry_at = now + RETRY_AFTER_S
            return RateReading(None, f"Prometheus plugin at {self.shown} answered HTTP {response.status_code}")
        scrape = parse_counters(response.text, vhost, time.monotonic())
        if scrape is None:
            self._unsupported = (f"the Prometheus plugin at {self.shown} has no per-queue counters on this "
                                 "RabbitMQ version (they came after 3.10)")
            return RateReading(None, self._unsupported)
        previous, self._previous = self._previous, scrape
        if previous is None:
            return RateReading(None, "Prometheus rates need a second snapshot", scrape.cluster)
        return RateReading(rates_between(previous, scrape), None, scrape.cluster)
