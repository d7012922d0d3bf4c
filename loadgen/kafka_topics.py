"""Make sure Kafka topics exist before the worker or the load generator uses them (blocking; call off the loop)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from probes.errors import BrokerUnreachable, ProbeError
from probes.redact import redact_text
from probes.urls import BrokerTarget


def ensure_topics(admin: AdminClient, target: BrokerTarget, names: Iterable[str], timeout: float = 10.0) -> None:
    """Create each topic (1 partition) unless it exists; an unreachable broker or a refused creation is a
    one-line ``ProbeError``."""
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        raise BrokerUnreachable(f"broker unreachable: Kafka at {target.host}:{target.port}") from None
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in names]).values():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProbeError(redact_text(f"Kafka: cannot create topic: {exc}", target.secrets)) from None
