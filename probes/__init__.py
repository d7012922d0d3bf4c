"""Broker adapters: read broker state into frozen dataclasses. Imports no UI and no load-testing framework."""

from probes.base import BACKENDS, Probe, open_probe
from probes.errors import (
                           AuthFailed,
                           BrokerUnreachable,
                           ConfigError,
                           ManagementDisabled,
                           NotFound,
                           ProbeError,
                           UnsafeOperation,
                           Unsupported,
)
from probes.models import (
                           BrokerOverview,
                           BrokerSnapshot,
                           ConsumerInfo,
                           DeathRecord,
                           PeekedMessage,
                           PeekResult,
                           QueueStats,
)
from probes.profiles import Profile, config_path, load_profiles, resolve_broker
from probes.redact import redact_text, redact_url
from probes.urls import BrokerTarget, parse_broker_url

__all__ = [
    "BACKENDS", "AuthFailed", "BrokerOverview", "BrokerSnapshot", "BrokerTarget", "BrokerUnreachable",
    "ConfigError", "ConsumerInfo", "DeathRecord", "ManagementDisabled", "NotFound", "PeekResult",
    "PeekedMessage", "Probe", "ProbeError", "Profile", "QueueStats", "UnsafeOperation", "Unsupported",
    "config_path", "load_profiles", "open_probe", "parse_broker_url", "redact_text", "redact_url",
    "resolve_broker",
]
