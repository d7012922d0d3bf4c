from __future__ import annotations

from console.queue_filter import SortField, select_queues
from console.safe_text import is_binary, preview_bytes, safe
from probes.models import QueueStats


def _q(name: str, depth: int) -> QueueStats:
    return QueueStats("b", name, "queue", depth, 0, 0, None, None, None, False)


def test_escapes_terminal_controls_and_bidi() -> None:
    assert safe("\x1b]0;pwned\x07\x1b[2J") == "\\x1b]0;pwned\\x07\\x1b[2J"
    assert safe("a\nb\tc\u202e") == "a\\nb\\tc\\u202e"
    assert safe("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert safe("x" * 10, 4) == "xxxx…"


def test_preview_bytes_handles_invalid_utf8_and_truncation() -> None:
    assert preview_bytes(b"ok\xff\xfe") == "ok\\xff\\xfe"
    assert preview_bytes(b"abcdef", 3) == "abc … (3 more bytes)"
    assert preview_bytes(b"abc", 10, total=1000) == "abc … (997 more bytes)"
    assert is_binary(b"\x00\x01\x02\x03") and not is_binary(b'{"a": 1}')


def test_select_queues_filters_case_insensitively_and_sorts() -> None:
    rows = [_q("Emb.A", 1), _q("emb.b", 9), _q("other", 5)]
    assert [q.name for q in select_queues(rows, "emb.*")] == ["Emb.A", "emb.b"]
    assert [q.name for q in select_queues(rows, None, SortField.depth)] == ["emb.b", "other", "Emb.A"]
    assert [q.name for q in select_queues(rows, None, SortField.depth, reverse=True)] == ["Emb.A", "other", "emb.b"]
