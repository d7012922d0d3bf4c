"""Make untrusted broker content (queue names, headers, bodies) safe to put on a terminal.

Control characters (C0, C1, DEL), escape sequences and bidi overrides become visible escapes; invalid UTF-8
becomes ``\\xNN``; long content is cut with a note of how much was left out. Feed the result to rich as
``Text(...)``, never as markup.
"""

from __future__ import annotations

import json
import re
from typing import Any

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: Any, limit: int | None = 200, *, keep_newlines: bool = False) -> str:
    """One terminal-safe string for ``value`` (anything), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit]
        suffix = "…"
    else:
        suffix = ""
    if keep_newlines:
        escaped = "\n".join(_UNSAFE.sub(_escape_char, line) for line in text.split("\n"))
    else:
        escaped = _UNSAFE.sub(_escape_char, text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))
    return escaped + suffix


TABLE_PREVIEW_BYTES = 500  # a body preview in a CLI table, unless asked otherwise


def preview_bytes(body: bytes, limit: int = TABLE_PREVIEW_BYTES, *, total: int | None = None) -> str:
    """A safe, one-line preview of a message body: UTF-8 where it decodes, ``\\xNN`` where it does not; ``limit``
    0 shows all of it."""
    total = len(body) if total is None else total
    shown = body[:limit] if limit else body
    text = shown.decode("utf-8", errors="backslashreplace")
    out = safe(text, None)
    if total > len(shown):
        out += f" … ({total - len(shown):,} more bytes)"
    return out


def is_binary(body: bytes) -> bool:
    """Binary: any NUL, or more than 1 in 10 bytes invalid UTF-8 or control characters. Escape sequences and bells
    count as text (coloured logs have them) and are shown escaped."""
    if not body:
        return False
    if b"\x00" in body:
        return True
    text = body.decode("utf-8", errors="replace")
    odd = text.count("\ufffd") + sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\x1b\x07")
    return odd > len(body) // 10


def json_text(data: Any, *, indent: int | None = 2) -> str:
    """``data`` (already plain JSON types) as ASCII-only JSON: C0, C1, DEL, bidi controls and every other non-ASCII
    character are ``\\uXXXX`` escapes, so a terminal that shows the JSON never interprets broker content."""
    # ensure_ascii escapes C0 and everything above 0x7f; DEL is ASCII and is only ever inside a string here.
    return json.dumps(data, ensure_ascii=True, indent=indent).replace("\x7f", "\\u007f")
