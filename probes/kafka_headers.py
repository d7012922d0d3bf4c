"""Kafka record headers, exactly: every value as UTF-8 text when valid, else base64, plus the conventions
users meet decoded.

- Spring Kafka dead-letter headers (``DeadLetterPublishingRecoverer``): ``kafka_dlt-original-topic`` (text),
  ``kafka_dlt-original-partition`` (4-byte big-endian int), ``kafka_dlt-original-offset`` and
  ``kafka_dlt-original-timestamp`` (8-byte big-endian longs, the timestamp in epoch ms),
  ``kafka_dlt-exception-fqcn`` / ``-cause-fqcn`` / ``-message`` / ``-stacktrace`` (text).
- Spring Kafka retry topics (``RetryTopicHeaders``, ``DeadLetterPublishingRecovererFactory``):
  ``retry_topic-attempts`` (4-byte big-endian int; 1 byte in old versions), ``retry_topic-backoff-timestamp`` and
  ``retry_topic-original-timestamp`` (epoch ms as Java ``BigInteger.toByteArray()``: minimal two's-complement
  big-endian, 1-8 bytes; very old versions wrote the backoff time as ISO text).
- Kafka Connect's dead-letter context (``errors.deadletterqueue.context.headers.enable``): ``__connect.errors.*``,
  all text (topic, partition, offset, connector.name, task.id, stage, class.name, exception.class.name,
  exception.message, exception.stacktrace).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime

from probes.models import HeaderValue

SPRING_TOPIC = "kafka_dlt-original-topic"
CONNECT_TOPIC = "__connect.errors.topic"
_INT32 = {"kafka_dlt-original-partition", "retry_topic-attempts"}
_INT64 = {"kafka_dlt-original-offset"}
_MILLIS64 = {"kafka_dlt-original-timestamp"}
_BIG_INT_MILLIS = {"retry_topic-backoff-timestamp", "retry_topic-original-timestamp"}


def header_values(pairs: Iterable[tuple[str, bytes | str | None]] | None) -> tuple[HeaderValue, ...]:
    """confluent-kafka's ``msg.headers()`` list → exact, ordered values (duplicate keys kept)."""
    out = []
    for key, value in pairs or ():
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if raw is None:
            out.append(HeaderValue(key=key, text=None, base64=None))
            continue
        try:
            text: str | None = raw.decode("utf-8")
            b64 = None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(raw).decode("ascii")
        out.append(HeaderValue(key=key, text=text, base64=b64, decoded=_decode(key, raw, text)))
    return tuple(out)


def _millis(ms: int) -> str | None:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


def _decode(key: str, raw: bytes, text: str | None) -> str | None:
    if key in _INT32:
        if len(raw) == 4:
            return str(int.from_bytes(raw, "big", signed=True))
        if key == "retry_topic-attempts" and len(raw) == 1:
            return str(raw[0])
        return None
    if key in _INT64 or key in _MILLIS64:
        if len(raw) != 8:
            return None
        n = int.from_bytes(raw, "big", signed=True)
        return _millis(n) if key in _MILLIS64 else str(n)
    if key in _BIG_INT_MILLIS:
        if text is not None:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(text).isoformat()
        if 1 <= len(raw) <= 8:
            return _millis(int.from_bytes(raw, "big", signed=True))
    return None


def shown_value(h: HeaderValue) -> str:
    """One display string: the decoded convention, else the text, else ``base64:…`` (never lossy)."""
    if h.decoded is not None:
        return h.decoded
    if h.text is not None:
        return h.text
    return f"base64:{h.base64}" if h.base64 is not None else "(null)"


def header_map(values: Iterable[HeaderValue]) -> dict[str, str]:
    """key → shown value (the last of a repeated key wins, as Kafka's ``Headers.lastHeader`` does)."""
    return {h.key: shown_value(h) for h in values}


def origin_topic(fields: dict[str, str]) -> str | None:
    """The topic a dead-lettered record came from, as its headers say (Spring, Connect, qdeck's worker)."""
    return fields.get(SPRING_TOPIC) or fields.get(CONNECT_TOPIC) or fields.get("source") or None
