"""The one error hierarchy of the probes layer.

Adapters translate every driver exception into one of these at their boundary; the CLI and the TUI catch
only ``ProbeError`` and print ``str(error)``, which therefore must be one line, say what to do, and never hold a
credential (build messages from redacted URLs only).
"""

from __future__ import annotations


class ProbeError(Exception):
    """Base of every error a probe raises."""


class BrokerUnreachable(ProbeError):
    """Nothing answered at the broker's address (refused, timed out, DNS failure, TLS failure)."""


class ConnectionLost(BrokerUnreachable):
    """An established connection dropped (a broker restart, a network cut); the client is reconnecting."""


class AuthFailed(ProbeError):
    """The broker answered but refused the credentials (or the user lacks permission)."""


class NotFound(ProbeError):
    """The queue, topic, stream or vhost named does not exist."""


class Unsupported(ProbeError):
    """The broker cannot do what was asked (a plugin is off, a queue type has no such operation)."""


class ManagementDisabled(Unsupported):
    """RabbitMQ's AMQP port answers but its management HTTP API does not."""


class UnsafeOperation(ProbeError):
    """Refused because doing it would change broker state in a way the user did not ask for (needs force)."""


class ConfigError(ProbeError):
    """A malformed broker URL, an unknown profile, an unreadable profile file."""


class ReadOnly(ProbeError):
    """A write was refused: the broker is read-only for qdeck (no ``allow_write = true`` in its profile, or
    ``--read-only``, which also refuses RabbitMQ peeks: they requeue)."""
