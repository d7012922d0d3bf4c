"""Make sure Kafka topics exist before the worker or the load generator uses them (blocking; call off the loop)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from probes.errors import BrokerUnreachable, ProbeError
from probes.redact import redact_text
from probes.urls import BrokerTarget


def ensure_topics(admin: AdminClient, target: BrokerTarget, names: Iterable[str], timeout: float = 10.0, *,
                  partitions: int = 1, replication_factor: int = 1) -> list[str]:
    """Create each topic (``partitions`` partitions, ``replication_factor`` replicas) unless it exists; return the
    names of those created. An unreachable broker or a refused creation is a one-line ``ProbeError``."""
    if partitions < 1 or replication_factor < 1:
        raise ProbeError("Kafka: a topic needs at least 1 partition and a replication factor of at least 1")
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        raise BrokerUnreachable(f"broker unreachable: Kafka at {target.host}:{target.port}") from None
    created: list[str] = []
    wanted = list(dict.fromkeys(names))
    futures = admin.create_topics([NewTopic(t, partitions, replication_factor) for t in wanted])
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProbeError(redact_text(f"Kafka: cannot create topic {name!r}: {exc}", target.secrets)) from None
        else:
            created.append(name)
    return created
