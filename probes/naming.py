"""Name patterns that mark dead-letter queues, topics and streams on every broker (configurable per probe)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

DEFAULT_DLQ_PATTERNS = (
    "*.dlq", "*-dlq", "*_dlq", "*:dlq", "dlq.*", "dlq:*", "dlq-*",
    "*.DLQ", "*-DLQ", "*.DLT", "*-dlt", "*.dlt", "*-DLT",
    "*.dead", "*:dead", "*.deadletter", "*.dead-letter", "*:dead-letter", "dead-letter.*",
)


def matches_dlq_name(name: str, patterns: Iterable[str] = DEFAULT_DLQ_PATTERNS) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
