"""Credential redaction used by every output path (tables, JSON, errors, logs, reports)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit, urlunsplit

MASK = "***"

# userinfo in any scheme://user:pass@host form, even inside free text (an exception message, a log line).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
# password-like query parameters: ?password=..., &sasl_password=..., &sasl.password=...
_SECRET_PARAM = re.compile(r"(?P<key>[?&;](?:[\w.\-]*(?:password|passwd|secret|token)[\w.\-]*))=(?P<val>[^&#\s]*)",
                           re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with its password and any secret-looking query parameter masked.

    >>> redact_url("amqp://guest:s3cret@host:5672/%2F")
    'amqp://guest:***@host:5672/%2F'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _pw = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{user}@{hostport}"
    redacted = urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return redact_text(redacted)  # URLs nested in query parameters (management_url=...) too


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask URL userinfo passwords, secret query parameters and every known secret string inside ``text``."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group('key')}={MASK}", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text
