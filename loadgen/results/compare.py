"""``compare``: a new run against a baseline, failing on latency or error regressions beyond a threshold.

Checked: end-to-end p50, p99 and p99.9, the p99 of every worker stage both runs recorded, the failed-request share
(a regression must also exceed 0.1 percentage point, so 0 → 1 error in 100,000 is not a failure) and the achieved
share of the target rate. Two LLM-shaped runs (summary.json's ``llm`` section) are also checked on TTFT, TPOT and ITL
p50, p90 and p99 (e2e is the end-to-end stage above), output tokens/s and goodput (lower is worse) and attainment
(judged as the failed share is, on the share of requests that missed: a fall from 99 % to 98 % doubles it).

Two runs are compared only when they ran the same test: ``differences`` lists what differs (broker kind, queue,
schedule and rate, payload, workload, timeout, the workers' devices and batching, qdeck version; for LLM-shaped runs
the token lengths or dataset, the output cap and the objectives), and the CLI refuses a comparison with differences
unless told to compare anyway; ``llm_mismatch`` says when only one of the two is LLM-shaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadgen.results.slo import llm_histogram
from loadgen.results.stages import WORKER_STAGES
from loadgen.results.summary import stage_histogram

ERROR_FLOOR = 0.001
STAGE_P99 = WORKER_STAGES
LLM_PERCENTILES = {"ttft": (50.0, 90.0, 99.0), "tpot": (50.0, 90.0, 99.0), "itl": (50.0, 90.0, 99.0)}
LLM_HIGHER_IS_BETTER = ("output_tokens_per_s", "goodput")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    base: str
    new: str
    change: str
    ok: bool


def _pct_change(base: float, new: float) -> float:
    return (new - base) / base if base else (0.0 if new == base else float("inf"))


def _latency(summary: dict[str, Any], stage: str, pct: float) -> float | None:
    hist = stage_histogram(summary, stage)
    return float(hist.get_value_at_percentile(pct)) if hist.get_total_count() else None


def _latency_check(label: str, b: float | None, n: float | None, max_regression: float) -> list[Check]:
    """A latency percentile (µs): no worse than ``max_regression`` higher; nothing when a run lacks it."""
    if b is None or n is None:
        return []
    change = _pct_change(b, n)
    return [Check(label, f"{b / 1000:.3f} ms", f"{n / 1000:.3f} ms", f"{change * 100:+.1f}%",
                  change <= max_regression)]


def _share_worse(b: float, n: float, max_regression: float) -> bool:
    """A share of requests that failed (0 ... 1) got worse: it grew by more than ``max_regression`` of itself and
    by more than ``ERROR_FLOOR``."""
    return n > b * (1 + max_regression) and n - b > ERROR_FLOOR


def _drop_check(label: str, b: float, n: float, max_regression: float, shown: tuple[str, str]) -> Check:
    """A figure where higher is better: worse when it fell by more than ``max_regression`` of the baseline."""
    drop = (b - n) / b if b else 0.0
    return Check(label, shown[0], shown[1], f"{-drop * 100:+.1f}%", drop <= max_regression)


def compare(base: dict[str, Any], new: dict[str, Any], max_regression: float) -> list[Check]:
    checks: list[Check] = []
    pairs = [("end_to_end", p) for p in (50.0, 99.0, 99.9)] + [(s, 99.0) for s in STAGE_P99]
    for stage, pct in pairs:
        label = f"{stage}.p{pct:g}" if stage != "end_to_end" else f"p{pct:g}"
        checks += _latency_check(label, _latency(base, stage, pct), _latency(new, stage, pct), max_regression)
    b_err, n_err = _failed_share(base), _failed_share(new)
    if b_err is not None and n_err is not None:
        checks.append(Check("errors", f"{b_err * 100:.3g}%", f"{n_err * 100:.3g}%",
                            f"{(n_err - b_err) * 100:+.3g} pp", not _share_worse(b_err, n_err, max_regression)))
    b_rate, n_rate = base.get("rates", {}).get("achieved_ratio"), new.get("rates", {}).get("achieved_ratio")
    if b_rate and n_rate:
        checks.append(_drop_check("achieved_rate", b_rate, n_rate, max_regression,
                                  (f"{b_rate * 100:.2f}%", f"{n_rate * 100:.2f}%")))
    return checks + _llm_checks(base, new, max_regression)


def _llm_checks(base: dict[str, Any], new: dict[str, Any], max_regression: float) -> list[Check]:
    """Two LLM-shaped runs: TTFT, TPOT, ITL percentiles, output tokens/s, goodput and attainment."""
    b_llm, n_llm = base.get("llm"), new.get("llm")
    if not isinstance(b_llm, dict) or not isinstance(n_llm, dict):
        return []
    checks: list[Check] = []
    for metric, pcts in LLM_PERCENTILES.items():
        b_hist, n_hist = llm_histogram(base, metric), llm_histogram(new, metric)
        if b_hist.get_total_count() and n_hist.get_total_count():
            checks += [c for pct in pcts for c in _latency_check(
                f"{metric}.p{pct:g}", float(b_hist.get_value_at_percentile(pct)),
                float(n_hist.get_value_at_percentile(pct)), max_regression)]
    for name in LLM_HIGHER_IS_BETTER:
        b, n = _llm_value(b_llm, name), _llm_value(n_llm, name)
        if b is not None and n is not None:
            checks.append(_drop_check(name, b, n, max_regression, (f"{b:,.2f}/s", f"{n:,.2f}/s")))
    b, n = _llm_value(b_llm, "attainment"), _llm_value(n_llm, "attainment")
    if b is not None and n is not None:  # judged on the share that missed, as errors are
        checks.append(Check("attainment", f"{b:.2f}%", f"{n:.2f}%", f"{n - b:+.3g} pp",
                            not _share_worse(1 - b / 100, 1 - n / 100, max_regression)))
    return checks


def _llm_value(section: dict[str, Any], name: str) -> float | None:
    entry = section.get(name)
    value = entry.get("value") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _failed_share(summary: dict[str, Any]) -> float | None:
    counts = summary.get("counts", {})
    sent = int(counts.get("sent", 0))
    if not sent:
        return None
    return (int(counts.get("errors", 0)) + int(counts.get("timeouts", 0))) / sent


def _batching(summary: dict[str, Any]) -> str:
    sizes = {int(k): int(v) for k, v in (summary.get("batch_sizes") or {}).items()}
    return "batches of 1" if set(sizes) <= {1} else "batched" if sizes else "no replies"


def _facts(summary: dict[str, Any]) -> dict[str, Any]:
    schedule = summary.get("schedule") or {}
    return {
        "broker kind": summary.get("broker_kind") or str(summary.get("broker", "")).partition(":")[0],
        "queue": summary.get("queue"),
        "schedule": schedule.get("description") if isinstance(schedule, dict) else schedule,
        "payload": summary.get("payload"),
        "workload": summary.get("workload"),
        "timeout": summary.get("timeout_s"),
        "persistent requests": bool(summary.get("persistent")),
        "publisher confirms": bool(summary.get("confirm")),
        "worker devices": sorted(summary.get("devices") or {}),
        "worker model and batching": sorted(summary.get("workers") or {}) or _batching(summary),
        "qdeck version": summary.get("qdeck_version"),
        **_llm_facts(summary),
    }


@dataclass(frozen=True, slots=True)
class _Dataset:
    """A dataset of lengths: the same file content is the same dataset, whatever the file is called."""

    sha256: str
    name: str = field(compare=False)

    def __str__(self) -> str:
        return f"dataset {self.name} (sha256 {self.sha256[:12]})"


def is_llm(summary: dict[str, Any]) -> bool:
    return isinstance(summary.get("llm"), dict)


def llm_mismatch(base: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Which of the two runs is LLM-shaped when only one is ("base", "new"), else None."""
    return None if is_llm(base) == is_llm(new) else "base" if is_llm(base) else "new"


def _llm_facts(summary: dict[str, Any]) -> dict[str, Any]:
    llm = summary.get("llm")
    if not isinstance(llm, dict):
        return {"LLM-shaped (streamed replies)": False}
    dataset = llm.get("dataset")
    lengths: Any = (_Dataset(str(dataset.get("sha256")), str(dataset.get("file"))) if isinstance(dataset, dict)
                    else f"input {_show(llm.get('input_lengths'))}, output {_show(llm.get('output_lengths'))}")
    return {"LLM-shaped (streamed replies)": True, "token lengths": lengths, "max_tokens": llm.get("max_tokens"),
            "objectives": list(llm.get("objectives") or [])}


def differences(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes the two runs different tests, one phrase each ("schedule: poisson 300/s → constant 500/s")."""
    a, b = _facts(base), _facts(new)
    return [f"{key}: {_show(a.get(key))} → {_show(b.get(key))}" for key in {**a, **b} if a.get(key) != b.get(key)]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)
