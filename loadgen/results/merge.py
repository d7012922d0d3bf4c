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

from loadgen.results import hdrh_compat
from loadgen.results.gpu_intervals import merge_sections
from loadgen.results.stages import LLM_HISTOGRAMS, STAGES, log_path, new_histogram, open_log
from loadgen.results.summary import COUNTS, RunRecord, build_summary, stage_histogram

ALL = STAGES + LLM_HISTOGRAMS  # what a share records: the stages, and an LLM-shaped run's metrics


def _summed(docs: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for doc in docs:
        total.update(doc.get(key) or {})
    return dict(total)


def _service_sums(docs: list[dict[str, Any]]) -> dict[int, list[int]]:
    """The shares' ``service_by_batch`` added: counts and integer µs sums, so the merge is exact."""
    total: dict[int, list[int]] = {}
    for doc in docs:
        for size, entry in (doc.get("service_by_batch") or {}).items():
            sums = total.setdefault(int(size), [0, 0, 0])
            for i, key in enumerate(("n", "sum_us", "sum_sq_us")):
                sums[i] += int(entry[key])
    return total


def _stage_sum(shares: list[dict[str, Any]], stage: str, key: str) -> int:
    """A count of one stage (or LLM metric) added over the shares."""
    if stage in STAGES:
        return sum(int(doc["stages"][stage].get(key, 0)) for doc in shares)
    return sum(int((doc.get("llm") or {}).get(stage, {}).get(key) or 0) for doc in shares)


def _llm_record(shares: list[dict[str, Any]], llm_facts: dict[str, Any] | None) -> dict[str, Any] | None:
    """The agents' ``llm`` sections as one recorder's plain data (``Recorder.llm_record()``): each metric's histograms
    added, the stream and token counts summed, the whole run's lengths and objectives (``llm_facts``). None for a
    plain run."""
    sections = [doc["llm"] for doc in shares if isinstance(doc.get("llm"), dict)]
    if llm_facts is None and not sections:
        return None
    hists = {}
    for metric in LLM_HISTOGRAMS:
        hist = new_histogram()
        for section in sections:
            encoded = (section.get(metric) or {}).get("histogram")
            if encoded:
                hist.add(HdrHistogram.decode(str(encoded).encode()))
        hists[metric] = hist

    def total(key: str) -> int:
        return sum(int(section.get(key) or 0) for section in sections)

    facts = llm_facts or {}
    return {"histograms": hists, "facts": facts, "objectives": list(facts.get("objectives") or []),
            "output_tokens": total("output_tokens_total"), "streams": total("streams"),
            "streams_cut": total("streams_cut"), "cut_tokens": total("cut_tokens"),
            "met": sum(int((section.get("attainment") or {}).get("met") or 0) for section in sections)}


def merge_summaries(facts: dict[str, Any], broker: str, broker_kind: str, shares: list[dict[str, Any]],
                    hosts: list[str], logs: list[dict[str, str]] | None = None, *,
                    llm_facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """``facts``: the whole run's ``RunSpec.facts()``; ``shares``: the agents' summary.json documents in share
    order; ``hosts``: where each ran; ``logs``: their interval logs (``log_texts``), from which the merged GPU
    section takes each interval's queue wait; ``llm_facts``: an LLM-shaped run's ``LlmLoad.facts()`` (its
    ``llm`` section is then the agents' added). The same builder as a local run's, over the added histograms."""
    stages = {}
    for stage in STAGES:
        hist = new_histogram()
        for doc in shares:
            hist.add(stage_histogram(doc, stage))
        stages[stage] = hist
    notes = [f"distributed over {len(shares)} agents, each sending 1/{len(shares)} of the plan; latencies are "
             "those of every request, from the agents' histograms added together"]
    aborted = [f"agent {i}: {doc['aborted']}" for i, doc in enumerate(shares) if doc.get("aborted")]
    record = RunRecord(
        facts=facts, broker=broker, broker_kind=broker_kind, started_epoch_s=0.0,
        started_at=min(doc["started_at"] for doc in shares), qdeck_version=shares[0].get("qdeck_version"),
        measured_s=max(float(doc["duration_s"]) for doc in shares),
        counts={key: sum(int(doc["counts"].get(key, 0)) for doc in shares) for key in COUNTS},
        errors_by_kind=_summed(shares, "errors_by_kind"), stages=stages,
        out_of_range={s: _stage_sum(shares, s, "out_of_range") for s in ALL},
        clamped={s: _stage_sum(shares, s, "clamped_negative") for s in ALL},
        skewed={s: _stage_sum(shares, s, "skewed") for s in STAGES},
        timeouts_by_stage={s: _stage_sum(shares, s, "timeouts") for s in ALL},
        batch_sizes={int(k): v for k, v in _summed(shares, "batch_sizes").items()},
        devices=_summed(shares, "devices"), workers=_summed(shares, "workers"),
        service_by_batch=_service_sums(shares),
        behind_intervals=sum(int(doc["generator"]["behind_intervals"]) for doc in shares),
        behind=any(doc["generator"]["behind"] for doc in shares),
        aborted="; ".join(aborted) or None, notes=notes,
        reconnects=sum(int(doc["generator"].get("reconnects", 0)) for doc in shares),
        gaps=[dict(gap, agent=i) for i, doc in enumerate(shares) for gap in doc.get("gaps") or []],
        gpu=merge_sections([doc.get("gpu") for doc in shares], _queue_wait_p50_ms(logs or [])),
        llm=_llm_record(shares, llm_facts))
    summary = build_summary(record)
    # The agents' rates add up (each measured its own share's window): the merged run's are their sums.
    target = sum(float(doc["rates"]["target"]) for doc in shares)
    achieved = sum(float(doc["rates"]["achieved"]) for doc in shares)
    summary["rates"] = {"target": round(target, 3), "achieved": round(achieved, 3),
                        "achieved_ratio": round(achieved / target, 5) if target else None}
    summary["agents"] = [{"index": i, "host": host, "run_id": doc["run_id"], "counts": doc["counts"],
                          "rates": doc["rates"], "generator": doc["generator"], "aborted": doc.get("aborted")}
                         for i, (doc, host) in enumerate(zip(shares, hosts, strict=True))]
    return summary


def _queue_wait_p50_ms(logs: list[dict[str, str]]) -> list[float | None]:
    """The merged run's queue wait p50 (ms) of each interval, in order, from the agents' interval logs: the k-th
    intervals added, as ``merge_logs`` writes them."""
    per_agent = [read_intervals(texts["queue_wait"]) for texts in logs if "queue_wait" in texts]
    out: list[float | None] = []
    for k in range(max((len(iv) for iv in per_agent), default=0)):
        hist = new_histogram()
        for iv in per_agent:
            if k < len(iv):
                hist.add(iv[k][2])
        out.append(hist.get_value_at_percentile(50) / 1000 if hist.get_total_count() else None)
    return out


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
    """Write each stage's (and each LLM metric's, where an agent has its log) interval log to ``out_dir``, its k-th
    interval the sum of the agents' k-th intervals."""
    for stage in ALL:
        if stage not in STAGES and not any(stage in texts for texts in texts_by_stage):
            continue
        per_agent = [read_intervals(texts[stage]) for texts in texts_by_stage if stage in texts]
        writer, fh = open_log(log_path(out_dir, stage), stage, start_epoch_s)
        with fh:
            for k in range(max((len(iv) for iv in per_agent), default=0)):
                parts = [iv[k] for iv in per_agent if k < len(iv)]
                hist = new_histogram()
                for _start, _length, part in parts:
                    hist.add(part)
                start, length = parts[0][0], parts[0][1]

                hdrh_compat.set_interval_stamps(hist, start, start + length)
                writer.output_interval_histogram(hist, start, start + length, max_value_unit_ratio=1000.0)


def log_texts(run_dir: Path) -> dict[str, str]:
    """A share's interval logs by stage and LLM metric, as text (what an agent sends to the master)."""
    return {stage: path.read_text() for stage in ALL if (path := log_path(run_dir, stage)).exists()}
