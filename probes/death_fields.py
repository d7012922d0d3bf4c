"""Dead-letter records carried as plain fields or headers (Redis stream fields, Kafka headers).

qdeck's worker writes ``reason``, ``source``, ``attempts`` and ``failed_at``; Spring Kafka's DLT headers
(``kafka_dlt-original-topic``, ``kafka_dlt-exception-message``, else ``kafka_dlt-exception-fqcn``) and Kafka
Connect's (``__connect.errors.topic``, ``__connect.errors.exception.message``, else ``...exception.class.name``)
are read too (decoded to text by ``probes.kafka_headers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime

from probes.models import DeathRecord


def death_from_fields(fields: Mapping[str, str], fallback_time: datetime | None = None) -> DeathRecord | None:
    reason = (fields.get("reason") or fields.get("kafka_dlt-exception-message") or fields.get("error")
              or fields.get("kafka_dlt-exception-fqcn") or fields.get("__connect.errors.exception.message")
              or fields.get("__connect.errors.exception.class.name"))
    if reason is None:
        return None
    source = (fields.get("source") or fields.get("kafka_dlt-original-topic")
              or fields.get("__connect.errors.topic"))
    attempts = fields.get("attempts", "1")
    when = fallback_time
    stamp = fields.get("failed_at")
    if stamp:
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(stamp)
    return DeathRecord(queue=source, reason=reason, count=int(attempts) if attempts.isdigit() else 1, time=when)
