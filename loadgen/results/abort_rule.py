"""``--abort-on 'p99<250ms for 10s'``: stop a run once an SLO has been breached for that long (k6's abortOnFail).

The SLO is judged on each interval's own figures (a second's histogram of the stage, the interval's counts), the
same metrics and syntax as ``--slo`` (``loadgen.results.slo``) except ``achieved_rate``, which the generator itself
controls, and ``attainment``, ``goodput`` and ``output_tokens_per_s``, figures of the whole run. The breach clock
starts with the first breaching interval and resets on one that holds; an interval with nothing to judge (no values
in the stage, no requests sent) neither starts nor resets it. Once it has run ``for`` seconds the run stops: what it
did not send is unsent, the summary says why, and the exit code is 99.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

from loadgen.errors import SloError
from loadgen.results.slo import LLM_RATE_METRICS, OPERATORS, Slo, count_holds, parse_slo, stat_us
from loadgen.units import parse_duration

_RULE = re.compile(r"^\s*(?P<slo>.*?\S)\s+for\s+(?P<for>\S+)\s*$")
MAX_FOR_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class AbortRule:
    text: str
    slo: Slo
    for_s: float


def parse_abort_rule(text: str) -> AbortRule:
    m = _RULE.match(text)
    if not m:
        raise SloError(f"--abort-on {text!r} is not 'SLO for DURATION' (e.g. 'p99<250ms for 10s')")
    slo = parse_slo(m.group("slo"))
    if slo.metric == "achieved_rate":
        raise SloError(f"--abort-on {text!r}: achieved_rate cannot stop a run (the generator sets it); use a "
                       "latency, errors or timeouts SLO")
    if slo.metric == "attainment" or slo.metric in LLM_RATE_METRICS:
        raise SloError(f"--abort-on {text!r}: {slo.metric} is a whole-run figure; use --slo")
    try:
        for_s = parse_duration(m.group("for"))
    except ValueError as exc:
        raise SloError(f"--abort-on {text!r}: {exc}") from None
    if not 0 < for_s <= MAX_FOR_S:
        raise SloError(f"--abort-on {text!r}: the duration must be above zero and at most a day")
    return AbortRule(text.strip(), slo, for_s)


def interval_holds(slo: Slo, histograms: Mapping[str, HdrHistogram], sent: int, errors: int,
                   timeouts: int) -> tuple[bool, str] | None:
    """Whether ``slo`` holds on one interval's figures, and the figure; None when there is nothing to judge."""
    cmp = OPERATORS[slo.op]
    if slo.metric == "latency":
        us = stat_us(histograms[slo.stage], slo.stat)
        if us is None:
            return None
        return cmp(us / 1e6, slo.threshold), f"{us / 1000:,.1f} ms"
    return count_holds(slo, sent, errors, timeouts)


class AbortWatch:
    """Follows each rule's breach over the intervals; ``check`` returns why to stop, once a breach has lasted."""

    def __init__(self, rules: Sequence[AbortRule]) -> None:
        self.rules = tuple(rules)
        self._since: dict[int, float | None] = dict.fromkeys(range(len(self.rules)))

    def check(self, start_s: float, end_s: float, histograms: Mapping[str, HdrHistogram], sent: int, errors: int,
              timeouts: int) -> str | None:
        for i, rule in enumerate(self.rules):
            judged = interval_holds(rule.slo, histograms, sent, errors, timeouts)
            if judged is None:
                continue
            ok, actual = judged
            if ok:
                self._since[i] = None
                continue
            since = self._since[i]
            if since is None:
                since = self._since[i] = start_s
            if end_s - since >= rule.for_s - 1e-9:
                return (f"--abort-on {rule.text}: breached for {end_s - since:g} s from {since:g} s "
                        f"(last interval: {actual})")
        return None
