"""One report from the agents' shares of a distributed run: histograms added (exact), counts and rates summed.

HdrHistograms add without loss, so the merged percentiles are those of every request the agents recorded, not an
average of per-agent percentiles. Interval logs are merged interval by interval (the agents start together, within
the start skew, and roll on the same interval). The merged ``summary.json`` has the single-run schema plus
``agents``: one entry per agent (its run id, host, counts, rates and generator health).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.engine import BEHIND_LAG_US, RunSpec
from loadgen.recorder import STAGES, log_path, new_histogram, open_log
from loadgen.report import SCHEMA_VERSION, stage_entry, stage_histogram

COUNTS = ("intended", "sent", "replied", "errors", "timeouts", "unsent", "late", "foreign", "malformed_replies",
          "warmup_sent")


def _summed(docs: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for doc in docs:
        total.update(doc.get(key) or {})
    return dict(total)


def merge_stages(shares: list[dict[str, Any]]) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for stage in STAGES:
        hist = new_histogram()
        for doc in shares:
            hist.add(stage_histogram(doc, stage))
        stages[stage] = stage_entry(hist, sum(doc["stages"][stage].get("out_of_range", 0) for doc in shares),
                                    sum(doc["stages"][stage].get("clamped_negative", 0) for doc in shares))
    return stages


def merge_summaries(spec: RunSpec, broker: str, shares: list[dict[str, Any]], hosts: list[str]) -> dict[str, Any]:
    """``shares``: the agents' summary.json documents in share order; ``hosts``: where each ran."""
    counts = {key: sum(doc["counts"].get(key, 0) for doc in shares) for key in COUNTS}
    target = sum(doc["rates"]["target"] for doc in shares)
    achieved = sum(doc["rates"]["achieved"] for doc in shares)
    stages = merge_stages(shares)
    lag_p99_ms = stages["schedule_lag"].get("p99_ms", 0.0)
    behind = any(doc["generator"]["behind"] for doc in shares) or lag_p99_ms * 1000 > BEHIND_LAG_US
    notes = [f"distributed over {len(shares)} agents, each sending 1/{len(shares)} of the plan; latencies are "
             "those of every request, from the agents' histograms added together"]
    for doc in shares:
        notes.extend(note for note in doc.get("notes", []) if note not in notes)
    aborted = [f"agent {i}: {doc['aborted']}" for i, doc in enumerate(shares) if doc.get("aborted")]
    first = shares[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "qdeck_version": first.get("qdeck_version", "unknown"),
        "run_id": spec.run_id,
        "started_at": min(doc["started_at"] for doc in shares),
        "broker": broker,
        "queue": spec.queue,
        "workload": spec.workload,
        "schedule": {"kind": spec.schedule.kind, "description": spec.schedule.describe()},
        "duration_s": max(doc["duration_s"] for doc in shares),
        "warmup_s": spec.warmup_s,
        "timeout_s": spec.timeout_s,
        "coalesce_s": spec.coalesce_s,
        "closed_loop": first["closed_loop"],
        "counts": counts,
        "errors_by_kind": _summed(shares, "errors_by_kind"),
        "rates": {"target": round(target, 3), "achieved": round(achieved, 3),
                  "achieved_ratio": round(achieved / target, 5) if target else None},
        "stages": stages,
        "batch_sizes": dict(sorted(_summed(shares, "batch_sizes").items(), key=lambda kv: int(kv[0]))),
        "devices": _summed(shares, "devices"),
        "generator": {"behind": behind,
                      "behind_intervals": sum(doc["generator"]["behind_intervals"] for doc in shares),
                      "schedule_lag_p99_ms": lag_p99_ms},
        "notes": notes,
        "aborted": "; ".join(aborted) or None,
        "agents": [{"index": i, "host": host, "run_id": doc["run_id"], "counts": doc["counts"], "rates": doc["rates"],
                    "generator": doc["generator"], "aborted": doc.get("aborted")}
                   for i, (doc, host) in enumerate(zip(shares, hosts, strict=True))],
    }


def read_intervals(text: str) -> list[tuple[float, float, HdrHistogram]]:
    """An interval log's ``(start_s, length_s, histogram)`` lines, as ``Recorder`` writes them."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith(("#", '"')):
            continue
        start, length, _max, payload = line.split(",")
        out.append((float(start), float(length), HdrHistogram.decode(payload.encode())))
    return out


def merge_logs(texts_by_stage: list[dict[str, str]], out_dir: Path, start_epoch_s: float) -> None:
    """Write each stage's interval log to ``out_dir``, its k-th interval the sum of the agents' k-th intervals."""
    for stage in STAGES:
        per_agent = [read_intervals(texts[stage]) for texts in texts_by_stage if stage in texts]
        writer, fh = open_log(log_path(out_dir, stage), stage, start_epoch_s)
        with fh:
            for k in range(max((len(iv) for iv in per_agent), default=0)):
                parts = [iv[k] for iv in per_agent if k < len(iv)]
                hist = new_histogram()
                for _start, _length, part in parts:
                    hist.add(part)
                start, length = parts[0][0], parts[0][1]
                # hdrh takes a start of 0 to mean "the histogram's own stamps" (ms): make those right too.
                hist.start_time_stamp_msec, hist.end_time_stamp_msec = start * 1000, (start + length) * 1000
                writer.output_interval_histogram(hist, start, start + length, max_value_unit_ratio=1000.0)


def log_texts(run_dir: Path) -> dict[str, str]:
    """A share's interval logs by stage, as text (what an agent sends to the master)."""
    return {stage: path.read_text() for stage in STAGES if (path := log_path(run_dir, stage)).exists()}
