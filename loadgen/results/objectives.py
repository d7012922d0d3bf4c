"""Per-request objectives of LLM-shaped load (``--objective 'ttft<500ms'``), what goodput and attainment count.

An objective is ``METRIC OP DURATION`` with METRIC one of ``ttft`` (first chunk − intended send), ``tpot`` (vLLM's
TPOT of the request), ``itl`` (the request's longest gap between chunks) or ``e2e`` (final chunk − intended send),
OP ``<`` or ``<=``. A request meets the objectives when it completed (no error, no timeout) and every one holds for
it; a request with one output token has no TPOT and no gap, so those two hold for it vacuously (as in vLLM's goodput,
which takes its TPOT as 0). Thresholds are integer µs, judged once per completed request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loadgen.errors import SloError
from loadgen.units import parse_duration

OBJECTIVE_METRICS = ("ttft", "tpot", "itl", "e2e")
_EXPR = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(<=|<)\s*([0-9.eE+-]+\s*[a-zµ]+)\s*$")


@dataclass(frozen=True, slots=True)
class Objective:
    text: str
    metric: str
    inclusive: bool  # <= rather than <
    threshold_us: int


def parse_objective(text: str) -> Objective:
    m = _EXPR.match(text)
    if not m:
        raise SloError(f"objective {text!r} is not METRIC<DURATION (e.g. 'ttft<500ms', 'tpot<=50ms'; metrics: "
                       f"{', '.join(OBJECTIVE_METRICS)})")
    metric, op, value = m.groups()
    if metric not in OBJECTIVE_METRICS:
        raise SloError(f"objective {text!r}: unknown metric {metric!r} (use {', '.join(OBJECTIVE_METRICS)})")
    try:
        seconds = parse_duration(value.replace(" ", ""))
    except ValueError as exc:
        raise SloError(f"objective {text!r}: {exc}") from None
    if not 0 < seconds <= 3600:
        raise SloError(f"objective {text!r}: the limit must be above zero and at most 1 h")
    return Objective(text.strip(), metric, op == "<=", round(seconds * 1e6))


@dataclass(frozen=True, slots=True)
class Objectives:
    """The run's objectives, judged per completed request."""

    items: tuple[Objective, ...] = ()

    @classmethod
    def parse(cls, texts: list[str] | tuple[str, ...]) -> Objectives:
        return cls(tuple(parse_objective(t) for t in texts))

    @property
    def texts(self) -> list[str]:
        return [o.text for o in self.items]

    def met(self, ttft_us: int, tpot_us: int | None, max_itl_us: int | None, e2e_us: int) -> bool:
        """Whether a completed request met every objective (None: the request has no such figure)."""
        for o in self.items:
            value = {"ttft": ttft_us, "tpot": tpot_us, "itl": max_itl_us, "e2e": e2e_us}[o.metric]
            if value is None:
                continue
            if value > o.threshold_us or (value == o.threshold_us and not o.inclusive):
                return False
        return True
