"""How a latency figure is shown when timeouts are among its values: the one rule for tables, the live view, SLO
verdicts and JSON.

A request that timed out is entered at no less than the timeout, so a percentile at or above the timeout may stand on
timed-out requests: its true value is unknown, only that it is at least the timeout. Such a figure is shown as
``≥ 5 s`` and flagged in summary.json (``at_least``).
"""

from __future__ import annotations


def at_least(value_us: float, timeout_s: float, timeouts: int) -> bool:
    """Whether a figure of ``value_us`` may stand on timed-out requests (so it is only a lower bound)."""
    return timeouts > 0 and value_us >= timeout_s * 1e6 * 0.999  # the histogram's 3 figures round a little down


def fmt_ms(value_us: float, *, lower_bound: bool = False, timeout_s: float = 0.0, digits: int = 2) -> str:
    """``12.34ms``, or ``≥ 5 s`` (the timeout) for a figure that stands on timed-out requests."""
    if lower_bound:
        return f"≥ {timeout_s:g} s"
    return f"{value_us / 1000:.{digits}f}ms"


def fmt_figure(value_ms: float, lower_bound: bool, timeout_s: float, key: str = "") -> str:
    """A summary table cell (ms): a percentile or max on timeouts is ``≥ 5 s``; a mean over timeouts ``≥ 131.63``."""
    if not lower_bound:
        return f"{value_ms:.2f}"
    return f"≥ {value_ms:.2f}" if key.startswith("mean") else f"≥ {timeout_s:g} s"
