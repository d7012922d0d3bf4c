"""SLO gates: ``p99<250ms``, ``errors<0.1%``, ``achieved_rate>=99%``, ``queue_wait.p99<50ms`` judged on a summary.

Metrics:
- latency: ``[STAGE.]STAT`` with STAT one of ``p50``, ``p99``, ``p99.9`` (any percentile), ``mean``, ``max``, ``min``;
  the stage defaults to ``end_to_end``; the value needs a unit (``us``, ``ms``, ``s``).
- ``errors``: failed requests (worker errors + timeouts); with ``%`` a share of the requests sent, else a count.
- ``timeouts``: the same, timeouts only.
- ``achieved_rate``: with ``%`` a share of the target rate, else requests per second.
- streamed replies (LLM-shaped load, summary.json's ``llm`` section): the latency metrics ``ttft``,
  ``ttft_uncorrected``, ``tpot``, ``itl`` and ``e2e`` (= ``end_to_end``) as stages (``ttft.p99<500ms``);
  ``attainment`` (``attainment>=99%``: the share of requests sent that met every ``--objective``); ``goodput`` and
  ``output_tokens_per_s`` (per second: ``goodput>=20/s``).
Operators: ``<``, ``<=``, ``>``, ``>=``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.errors import SloError
from loadgen.results.hdrh_compat import mean_and_stddev
from loadgen.results.latency import at_least, fmt_ms
from loadgen.results.stages import LLM_ALIASES, LLM_LATENCY, STAGES
from loadgen.results.summary import stage_histogram
from loadgen.units import parse_duration

EXIT_SLO_FAILED = 99
OPERATORS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt,
                                                   ">": operator.gt}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)\s*([a-zµ%/]*)\s*$")
LLM_RATE_METRICS = ("goodput", "output_tokens_per_s")  # summary.json llm.<name>.value, per second
_LATENCY = re.compile(r"^(?:(?P<stage>[a-z_][a-z0-9_]*)\.)?(?P<stat>p(?P<pct>\d+(?:\.\d+)?)|mean|max|min)$")




@dataclass(frozen=True, slots=True)
class Slo:
    text: str
    metric: str  # "latency" | "errors" | "timeouts" | "achieved_rate"
    op: str
    threshold: float  # seconds for latency, a fraction for %, else a count or a rate
    percent: bool = False
    stage: str = "end_to_end"
    stat: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    slo: Slo
    ok: bool
    actual: str
    detail: str = ""


def parse_slo(text: str) -> Slo:
    m = _EXPR.match(text)
    if not m:
        raise SloError(f"SLO {text!r} is not METRIC OP VALUE (e.g. 'p99<250ms', 'errors<0.1%')")
    name, op, number, unit = m.groups()
    try:
        value = float(number)
    except ValueError:
        raise SloError(f"SLO {text!r}: {number!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SloError(f"SLO {text!r}: the threshold must be a finite number, not negative")
    if unit == "%" and value > 100 and name != "achieved_rate":
        raise SloError(f"SLO {text!r}: a share is at most 100%")
    if name in ("errors", "timeouts", "achieved_rate"):
        if unit not in ("", "%"):
            raise SloError(f"SLO {text!r}: {name} takes a plain number or a percentage, not {unit!r}")
        return Slo(text.strip(), name, op, value / 100 if unit == "%" else value, percent=unit == "%")
    if name == "attainment":
        if unit != "%":
            raise SloError(f"SLO {text!r}: attainment is a percentage (e.g. 'attainment>=99%')")
        return Slo(text.strip(), name, op, value / 100, percent=True)
    if name in LLM_RATE_METRICS:
        if unit not in ("", "/s"):
            raise SloError(f"SLO {text!r}: {name} is per second (e.g. '{name}>=20/s'), not {unit!r}")
        return Slo(text.strip(), name, op, value)
    lm = _LATENCY.match(name)
    if not lm:
        raise SloError(f"SLO {text!r}: unknown metric {name!r} (use pNN, mean, max, min, errors, timeouts, "
                       "achieved_rate, or STAGE.pNN)")
    stage, stat = lm.group("stage"), lm.group("stat")
    stage = LLM_ALIASES.get(stage, stage) if stage else "end_to_end"
    if stage not in STAGES and stage not in LLM_LATENCY:
        raise SloError(f"SLO {text!r}: unknown stage {stage!r} (stages: {', '.join(STAGES + LLM_LATENCY)})")
    if not unit or unit == "%":
        raise SloError(f"SLO {text!r}: a latency needs a unit (us, ms or s)")
    try:
        seconds = parse_duration(f"{number}{unit}")
    except ValueError as exc:
        raise SloError(f"SLO {text!r}: {exc}") from None
    if lm.group("pct") is not None and not 0 < float(lm.group("pct")) <= 100:
        raise SloError(f"SLO {text!r}: a percentile must be in (0, 100]")
    return Slo(text.strip(), "latency", op, seconds, stage=stage, stat=stat)


def parse_slos(texts: Iterable[str]) -> list[Slo]:
    return [parse_slo(t) for t in texts]


def stat_us(hist: HdrHistogram, stat: str) -> float | None:
    """A latency SLO's statistic (``p99``, ``mean``, ``max``, ``min``) of ``hist`` in µs; None when it is empty."""
    if not hist.get_total_count():
        return None
    if stat == "mean":
        return mean_and_stddev(hist)[0]
    if stat == "max":
        return float(hist.get_max_value())
    if stat == "min":
        return float(hist.get_min_value())
    return float(hist.get_value_at_percentile(float(stat[1:])))


def count_holds(slo: Slo, sent: int, errors: int, timeouts: int) -> tuple[bool, str] | None:
    """An ``errors`` / ``timeouts`` SLO on these counts (errors = worker errors, timeouts counted apart): whether it
    holds and the figure; None when a share is asked of no requests."""
    n = timeouts + (errors if slo.metric == "errors" else 0)
    if slo.percent:
        if not sent:
            return None
        share = n / sent
        return OPERATORS[slo.op](share, slo.threshold), f"{share * 100:.3g}% ({n} of {sent})"
    return OPERATORS[slo.op](n, slo.threshold), str(n)


def _latency_us(summary: dict[str, Any], slo: Slo) -> float | None:
    if slo.stage in STAGES or isinstance((summary.get("stages") or {}).get(slo.stage), dict):
        return stat_us(stage_histogram(summary, slo.stage), slo.stat)  # (the live feed puts LLM metrics here too)
    return stat_us(llm_histogram(summary, slo.stage), slo.stat)


def llm_histogram(summary: dict[str, Any], metric: str) -> HdrHistogram:
    """An LLM metric's histogram (µs) from summary.json's ``llm`` section; empty when the run streamed nothing."""
    entry = (summary.get("llm") or {}).get(metric) or {}
    encoded = entry.get("histogram") if isinstance(entry, dict) else None
    if not encoded or not isinstance(encoded, str):
        return HdrHistogram(1, 3_600_000_000, 3)
    try:
        return HdrHistogram.decode(encoded.encode())
    except Exception:  # hdrh raises assorted errors for a corrupt payload
        raise SloError(f"{metric}: corrupt histogram in the summary's llm section") from None


def _judge_llm_figure(summary: dict[str, Any], slo: Slo) -> Verdict:
    """``attainment``, ``goodput``, ``output_tokens_per_s``: figures of the summary's ``llm`` section."""
    section = summary.get("llm")
    if not isinstance(section, dict):
        return Verdict(slo, False, "no data", "the run had no streamed replies")
    entry = section.get(slo.metric) or {}
    value = entry.get("value") if isinstance(entry, dict) else None
    if value is None:
        return Verdict(slo, False, "no objectives", "give --objective to judge goodput and attainment")
    cmp = OPERATORS[slo.op]
    if slo.metric == "attainment":
        return Verdict(slo, cmp(float(value) / 100, slo.threshold),
                       f"{float(value):.3g}% ({entry.get('met')} of {entry.get('judged')})")
    return Verdict(slo, cmp(float(value), slo.threshold), f"{float(value):,.2f}/s")


def judge(summary: dict[str, Any], slo: Slo) -> Verdict:
    cmp = OPERATORS[slo.op]
    counts = summary.get("counts", {})
    sent = int(counts.get("sent", 0))
    if slo.metric == "latency":
        us = _latency_us(summary, slo)
        if us is None:
            return Verdict(slo, False, "no data", f"stage {slo.stage} recorded nothing")
        entry = summary["stages"].get(slo.stage) or (summary.get("llm") or {}).get(slo.stage) or {}
        timeout_s = float(summary.get("timeout_s", 0.0))
        timeouts = int(entry.get("timeouts", 0))
        if at_least(us, timeout_s, timeouts):
            return Verdict(slo, cmp(us / 1e6, slo.threshold), fmt_ms(us, lower_bound=True, timeout_s=timeout_s),
                           f"lands on the {timeouts:,} timed-out requests")
        return Verdict(slo, cmp(us / 1e6, slo.threshold), fmt_ms(us, digits=3))
    if slo.metric == "attainment" or slo.metric in LLM_RATE_METRICS:
        return _judge_llm_figure(summary, slo)
    if slo.metric in ("errors", "timeouts"):
        held = count_holds(slo, sent, int(counts.get("errors", 0)), int(counts.get("timeouts", 0)))
        return Verdict(slo, False, "no requests sent") if held is None else Verdict(slo, *held)
    rates = summary.get("rates", {})
    if slo.percent:
        ratio = rates.get("achieved_ratio")
        if ratio is None:
            return Verdict(slo, False, "no target rate", "closed-loop runs have no target rate")
        return Verdict(slo, cmp(float(ratio), slo.threshold), f"{float(ratio) * 100:.2f}% of target")
    achieved = float(rates.get("achieved", 0.0))
    return Verdict(slo, cmp(achieved, slo.threshold), f"{achieved:,.1f}/s")


def judge_all(summary: dict[str, Any], slos: Iterable[Slo]) -> list[Verdict]:
    return [judge(summary, s) for s in slos]


def verdicts_json(verdicts: Iterable[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as summary.json's ``slo`` list (what ``load gate`` re-judges when given no --slo)."""
    return [{"slo": v.slo.text, "ok": v.ok, "actual": v.actual, "detail": v.detail} for v in verdicts]


def saved_slos(summary: dict[str, Any]) -> list[Slo]:
    """The SLOs a run was judged by when it was made (summary.json's ``slo`` list)."""
    entries = summary.get("slo") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("slo"), str)
                                                for e in entries):
        raise SloError("the summary's slo list is not a list of {\"slo\": \"p99<250ms\", ...} entries")
    return [parse_slo(e["slo"]) for e in entries]
