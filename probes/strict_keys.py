"""Strict configuration (house rule 14): an unknown key is an error that names it and the nearest valid key.

One message for every file qdeck reads (profiles, plans), so the wording cannot drift between them.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 1024 * 1024  # a plan or a profile file larger than this is not one


class ConfigFileError(ValueError):
    """Why a configuration file cannot be read, as a phrase (the caller names the file and the kind of file)."""


def read_toml(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    """The TOML document at ``path``: at most ``max_bytes``, UTF-8, valid TOML; else ``ConfigFileError``."""
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigFileError(f"cannot read it: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ConfigFileError(f"it is larger than {max_bytes // 1024} KiB")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigFileError("it is not UTF-8 text (a TOML file)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"it is not valid TOML: {exc}") from None


def unknown_key(key: object, valid: Iterable[str], *, table: str = "") -> str:
    """``unknown key 'slos' (did you mean 'slo'?)``; the valid keys instead when none is close. ``table`` names
    the TOML table the key is in (``[schedule]``)."""
    names = sorted(valid)
    where = f" in {table}" if table else ""
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(names)}"
    return f"unknown key {str(key)!r}{where} ({hint})"


def check_keys(doc: dict[str, object], valid: Iterable[str], *, table: str = "") -> str | None:
    """The message for the first key of ``doc`` that is not in ``valid``, else None."""
    allowed = set(valid)
    for key in doc:
        if key not in allowed:
            return unknown_key(key, allowed, table=table)
    return None
