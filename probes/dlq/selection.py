"""Which messages an action takes: ``--reason``, ``--older-than``, ``--newer-than``, ``--header K=V``, ``--match``
(a regular expression searched in the body), ``--id`` and ``--max``. One rule for every command and the console."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from probes.dlq.model import Record
from probes.errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")


def parse_age(text: str, option: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d`` → seconds; anything else is a ConfigError naming ``option``."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"{option} takes a duration like 30s, 15m, 2h or 7d, not {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--header takes NAME=VALUE, not {text!r}")
    return key, value


def header_text(value: object) -> str:
    """A header value as --header compares it: text as is, bytes as UTF-8 (escaped when not), others by str()."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Selection:
    reasons: frozenset[str] = frozenset()  # death reasons (any of them); empty: any reason
    older_than_s: float | None = None  # died (else produced) at least this long ago
    newer_than_s: float | None = None  # died (else produced) at most this long ago
    headers: tuple[tuple[str, str], ...] = ()  # every one must match (text comparison)
    match: re.Pattern[bytes] | None = None  # searched in the body
    ids: frozenset[str] = frozenset()  # the store's ids (what peek and export show); empty: any id
    max: int | None = None  # stop after this many selected
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def parse(cls, *, reasons: Iterable[str] = (), older_than: str | None = None, newer_than: str | None = None,
              headers: Iterable[str] = (), match: str | None = None, ids: Iterable[str] = (),
              max_n: int | None = None) -> Selection:
        """From the command line's words; a bad one is a ConfigError (one line, exit 2)."""
        try:
            pattern = re.compile(match.encode("utf-8")) if match is not None else None
        except re.error as exc:
            raise ConfigError(f"--match is not a valid regular expression: {exc}") from None
        if max_n is not None and max_n < 1:
            raise ConfigError("--max takes a count of at least 1")
        older = parse_age(older_than, "--older-than") if older_than is not None else None
        newer = parse_age(newer_than, "--newer-than") if newer_than is not None else None
        if older is not None and newer is not None and older >= newer:
            raise ConfigError(f"--older-than {older_than} and --newer-than {newer_than} select nothing: the first "
                              "must be the shorter age")
        return cls(frozenset(r.strip() for r in reasons if r.strip()), older, newer,
                   tuple(parse_header(h) for h in headers), pattern, frozenset(i for i in ids if i), max_n)

    @property
    def everything(self) -> bool:
        return not (self.reasons or self.older_than_s is not None or self.newer_than_s is not None or self.headers
                    or self.match is not None or self.ids)

    def selects(self, r: Record) -> bool:
        if self.ids and r.id not in self.ids and (r.original_id is None or r.original_id not in self.ids):
            return False
        if self.reasons and (r.reason or "") not in self.reasons:
            return False
        if self.older_than_s is not None or self.newer_than_s is not None:
            when = r.died_at or r.timestamp
            if when is None:
                return False  # an age filter cannot take a message whose age is unknown
            age = (self.now - when).total_seconds()
            if self.older_than_s is not None and age < self.older_than_s:
                return False
            if self.newer_than_s is not None and age > self.newer_than_s:
                return False
        for key, value in self.headers:
            found = r.header(key)
            if found is None or header_text(found) != value:
                return False
        return not (self.match is not None and self.match.search(r.body) is None)

    def describe(self) -> str:
        """The selection in words, for the dry run and the ledger."""
        parts = []
        if self.reasons:
            parts.append("reason " + " or ".join(sorted(self.reasons)))
        if self.older_than_s is not None:
            parts.append(f"older than {timedelta(seconds=self.older_than_s)}")
        if self.newer_than_s is not None:
            parts.append(f"newer than {timedelta(seconds=self.newer_than_s)}")
        parts += [f"header {k}={v}" for k, v in self.headers]
        if self.match is not None:
            parts.append(f"body matching {self.match.pattern.decode('utf-8', 'backslashreplace')!r}")
        if self.ids:
            parts.append(f"{len(self.ids)} id(s)")
        text = ", ".join(parts) or "every message"
        return text + (f", at most {self.max:,}" if self.max is not None else "")
