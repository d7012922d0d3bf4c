"""``compare``: a new run against a baseline, failing on latency or error regressions beyond a threshold.

Checked: end-to-end p50, p99 and p99.9, the p99 of every worker stage both runs recorded, the failed-request share
(a regression must also exceed 0.1 percentage point, so 0 → 1 error in 100,000 is not a failure) and the achieved
share of the target rate.

Two runs are compared only when they ran the same test: ``differences`` lists what differs (broker kind, queue,
schedule and rate, payload, workload, timeout, the workers' devices and batching, qdeck version), and the CLI refuses
a comparison with differences unless told to compare anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen.results.stages import WORKER_STAGES
from loadgen.results.summary import stage_histogram

ERROR_FLOOR = 0.001
STAGE_P99 = WORKER_STAGES


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


def compare(base: dict[str, Any], new: dict[str, Any], max_regression: float) -> list[Check]:
    checks: list[Check] = []
    pairs = [("end_to_end", p) for p in (50.0, 99.0, 99.9)] + [(s, 99.0) for s in STAGE_P99]
    for stage, pct in pairs:
        b, n = _latency(base, stage, pct), _latency(new, stage, pct)
        if b is None or n is None:
            continue
        change = _pct_change(b, n)
        label = f"{stage}.p{pct:g}" if stage != "end_to_end" else f"p{pct:g}"
        checks.append(Check(label, f"{b / 1000:.3f} ms", f"{n / 1000:.3f} ms", f"{change * 100:+.1f}%",
                            change <= max_regression))
    b_err, n_err = _failed_share(base), _failed_share(new)
    if b_err is not None and n_err is not None:
        worse = n_err > b_err * (1 + max_regression) and n_err - b_err > ERROR_FLOOR
        checks.append(Check("errors", f"{b_err * 100:.3g}%", f"{n_err * 100:.3g}%",
                            f"{(n_err - b_err) * 100:+.3g} pp", not worse))
    b_rate, n_rate = base.get("rates", {}).get("achieved_ratio"), new.get("rates", {}).get("achieved_ratio")
    if b_rate and n_rate:
        drop = (b_rate - n_rate) / b_rate
        checks.append(Check("achieved_rate", f"{b_rate * 100:.2f}%", f"{n_rate * 100:.2f}%",
                            f"{-drop * 100:+.1f}%", drop <= max_regression))
    return checks


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
    }


def differences(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes the two runs different tests, one phrase each ("schedule: poisson 300/s → constant 500/s")."""
    a, b = _facts(base), _facts(new)
    return [f"{key}: {_show(a[key])} → {_show(b[key])}" for key in a if a[key] != b[key]]


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)
