"""Durations and latencies as people write them: ``250ms``, ``1.5s``, ``2m``, ``800us``, ``30`` (seconds)."""

from __future__ import annotations

import re

_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


def parse_duration(text: str | float | int, *, default_unit: str = "s") -> float:
    """Seconds from ``text``; a bare number is in ``default_unit``. Raises ``ValueError`` with a clear message."""
    if isinstance(text, int | float):
        value, unit = float(text), default_unit
    else:
        m = _NUMBER.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a duration (e.g. 30s, 250ms, 2m)")
        value, unit = float(m.group(1)), m.group(2) or default_unit
    if unit not in _UNITS_S:
        raise ValueError(f"{text!r}: unknown unit {unit!r} (use ns, us, ms, s, m or h)")
    return value * _UNITS_S[unit]

