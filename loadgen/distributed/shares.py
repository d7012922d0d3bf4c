"""A run split over agents (Locust's distributed mode): each agent's share of a ``RunSpec``, and specs as JSON.

Agent ``i`` of ``n`` runs the same schedule at 1/n of the rate, so that the agents together send what the plan
asks for: constant, ramp and steps at rate/n; poisson at rate/n with a seed of its own (independent Poisson
streams add up to a Poisson stream of the summed rate); a trace's rows dealt round-robin (every row goes to exactly
one agent); closed-loop concurrency and a request count dealt as evenly as whole numbers allow. Each share gets a
run id of its own (``<run>-<i>``), hence a reply destination of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from loadgen.errors import ShareError
from loadgen.run.schedules import AnySchedule, Arrival, ClosedLoop, Constant, Poisson, Ramp, Steps, Trace
from loadgen.run.spec import RunSpec


def _deal(total: int, index: int, count: int) -> int:
    return total // count + (1 if index < total % count else 0)


def share_schedule(schedule: AnySchedule, index: int, count: int) -> AnySchedule:
    match schedule:
        case Constant(rate=rate):
            return Constant(rate / count)
        case Poisson(rate=rate):
            return Poisson(rate / count)
        case Ramp(start=start, end=end, over_s=over_s):
            return Ramp(start / count, end / count, over_s)
        case Steps(steps=steps):
            return Steps(tuple((rate / count, secs) for rate, secs in steps))
        case Trace(rows=rows, source=source):
            if len(rows) < count:
                raise ShareError(f"the trace has {len(rows)} requests, fewer than the {count} agents")
            return Trace(rows[index::count], source)
        case ClosedLoop(concurrency=concurrency):
            if concurrency < count:
                raise ShareError(f"--concurrency {concurrency} is less than the {count} agents (one each at least)")
            return ClosedLoop(_deal(concurrency, index, count))
    raise ShareError(f"cannot split a {schedule.kind} schedule")


def share(spec: RunSpec, index: int, count: int) -> RunSpec:
    """Agent ``index``'s part (0-based) of ``spec`` run by ``count`` agents."""
    if not 0 <= index < count:
        raise ShareError(f"share {index} of {count} does not exist")
    requests = spec.requests
    if requests is not None:
        if requests < count:
            raise ShareError(f"--requests {requests} is less than the {count} agents (one each at least)")
        requests = _deal(requests, index, count)
    return dataclasses.replace(spec, schedule=share_schedule(spec.schedule, index, count), requests=requests,
                               seed=spec.seed + index, run_id=f"{spec.run_id}-{index}")


def schedule_to_dict(schedule: AnySchedule) -> dict[str, Any]:
    match schedule:
        case Trace(rows=rows, source=source):
            return {"kind": "trace", "source": source, "rows": [[a.offset_ns, a.payload_size] for a in rows]}
        case Steps(steps=steps):
            return {"kind": "steps", "steps": [list(step) for step in steps]}
    return dataclasses.asdict(schedule)


def schedule_from_dict(doc: dict[str, Any]) -> AnySchedule:
    kind = doc.get("kind")
    if kind == "trace":
        return Trace(tuple(Arrival(int(off), None if size is None else int(size)) for off, size in doc["rows"]),
                     str(doc.get("source", "")))
    if kind == "steps":
        return Steps(tuple((float(rate), float(secs)) for rate, secs in doc["steps"]))
    classes: dict[str, type[Constant | Poisson | Ramp | ClosedLoop]] = {
        "constant": Constant, "poisson": Poisson, "ramp": Ramp, "closed": ClosedLoop}
    if kind not in classes:
        raise ShareError(f"unknown schedule kind {kind!r}")
    return classes[kind](**{k: v for k, v in doc.items() if k != "kind"})


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    doc = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    doc["schedule"] = schedule_to_dict(spec.schedule)
    return doc


def spec_from_dict(doc: dict[str, Any]) -> RunSpec:
    try:
        fields = {f.name for f in dataclasses.fields(RunSpec)}
        return RunSpec(**{k: v for k, v in doc.items() if k in fields and k != "schedule"},
                       schedule=schedule_from_dict(doc["schedule"]))
    except (KeyError, TypeError) as exc:
        raise ShareError(f"not a qdeck run spec: {exc}") from None


def run_deadline_s(spec: RunSpec, margin_s: float = 120.0) -> float:
    """How long a distributed run may take at most: its warm-up and measured time (or, for a request count, the
    longest the count can take), the timeout to drain, and a margin for start-up."""
    if spec.duration_s is not None:
        body = spec.duration_s
    elif isinstance(spec.schedule, ClosedLoop):
        body = (spec.requests or 0) * spec.timeout_s / spec.schedule.concurrency
    else:
        body = (spec.requests or 0) / max(min(spec.schedule.mean_rate(1.0), spec.schedule.mean_rate(60.0)), 1e-3)
    return spec.warmup_s + body + spec.timeout_s + margin_s
