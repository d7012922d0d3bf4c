"""Dead-letter records carried as plain fields or headers (Redis stream fields, Kafka headers).

qdeck's worker writes ``reason``, ``source``, ``attempts`` and ``failed_at``. The fields most Redis stream
dead-letter handlers write are read too: ``original_stream``, ``original_id``, ``group``, ``consumer``,
``deliveries`` and ``error`` (and ``dead_lettered_at``). A record needs a reason, or an origin field that only a
dead-letter writer uses (not the generic ``source``). Spring Kafka's DLT headers
(``kafka_dlt-original-topic``, ``kafka_dlt-exception-message``, else ``kafka_dlt-exception-fqcn``) and Kafka
Connect's (``__connect.errors.topic``, ``__connect.errors.exception.message``, else ``...exception.class.name``)
are read too (decoded to text by ``probes.kafka_headers``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from probes.models import DeathRecord

REASON_FIELDS = ("reason", "kafka_dlt-exception-message", "error", "kafka_dlt-exception-fqcn",
                 "__connect.errors.exception.message", "__connect.errors.exception.class.name")
ORIGIN_FIELDS = ("source", "original_stream", "original_queue", "kafka_dlt-original-topic", "__connect.errors.topic")
ATTEMPT_FIELDS = ("attempts", "deliveries", "delivery_count", "times_delivered")
TIME_FIELDS = ("failed_at", "dead_lettered_at")


def _first(fields: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first non-empty field of ``names`` (a plain loop: it runs for every message a redrive reads)."""
    for n in names:
        value = fields.get(n)
        if value:
            return value
    return None


def _when(text: str) -> datetime | None:
    """ISO 8601, or epoch seconds / milliseconds (try/except, not contextlib.suppress: it runs for every message a
    redrive reads, and suppress costs more than the parse)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        number = float(text)
        return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def death_from_fields(fields: Mapping[str, str], fallback_time: datetime | None = None) -> DeathRecord | None:
    found = death_origin(fields, fallback_time)
    if found is None:
        return None
    origin, reason, when = found
    attempts_text = _first(fields, ATTEMPT_FIELDS)
    attempts = int(attempts_text) if attempts_text and attempts_text.isdigit() else None
    return DeathRecord(queue=origin, reason=reason, count=attempts if attempts else 1, time=when,
                       original_id=fields.get("original_id") or None, group=fields.get("group") or None,
                       consumer=fields.get("consumer") or None, attempts=attempts)


def death_origin(fields: Mapping[str, str], fallback_time: datetime | None = None
                 ) -> tuple[str | None, str | None, datetime | None] | None:
    """``death_from_fields``'s queue, reason and time alone (None: not a dead-letter record), without building the
    record: for a dead-letter action, which reads it for every message."""
    reason = _first(fields, REASON_FIELDS)
    origin = _first(fields, ORIGIN_FIELDS)
    if reason is None and not _first(fields, ORIGIN_FIELDS[1:]):
        return None
    stamp = _first(fields, TIME_FIELDS)
    return origin, reason, (_when(stamp) if stamp else None) or fallback_time
