"""Load-test plans: a TOML file (documented in the README) merged with command-line options.

```toml
broker = "redis://127.0.0.1:6379/0"     # --broker wins
queue = "inference"
duration = "30s"                        # or requests = 5000
warmup = "5s"
timeout = "10s"
coalesce = "0.5ms"                      # requests due this close share a write (0 = each alone)
workload = "embed"
seed = 1

[schedule]
kind = "poisson"                        # constant | poisson | ramp | steps | trace | closed
rate = 200                              # constant, poisson
# from = 10, to = 200, over = "20s"     # ramp
# steps = ["100:10s", "200:10s"]        # steps
# file = "trace.csv"                    # trace (offset_ms or offset_s, optional payload_bytes)
# concurrency = 8                       # closed

[payload]
size = 256                              # or text = "a sentence to embed"

[slo]
p99 = "<250ms"
errors = "<0.1%"
"queue_wait.p99" = "<50ms"
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.engine import COALESCE_S, RunSpec
from loadgen.schedules import AnySchedule, ClosedLoop, Constant, Poisson, Ramp, ScheduleError, Steps, Trace, parse_steps
from loadgen.slo import Slo, parse_slo
from loadgen.units import parse_duration

KINDS = ("constant", "poisson", "ramp", "steps", "trace", "closed")


class PlanError(ValueError):
    """A plan (file or options) that cannot be used; one line for the user."""


@dataclass
class PlanInput:
    """Everything a run can be given; ``None`` means "not given" so that a plan file fills it."""

    broker: str | None = None
    queue: str | None = None
    rate: float | None = None
    duration: str | None = None
    requests: int | None = None
    warmup: str | None = None
    timeout: str | None = None
    coalesce: str | None = None
    schedule: str | None = None
    ramp_from: float | None = None
    ramp_to: float | None = None
    ramp_over: str | None = None
    steps: str | None = None
    trace: str | None = None
    concurrency: int | None = None
    payload_size: int | None = None
    payload_text: str | None = None
    workload: str | None = None
    seed: int | None = None
    slos: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    broker: str | None
    spec: RunSpec
    slos: list[Slo]


def read_plan_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise PlanError(f"cannot read plan {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"plan {p} is not valid TOML: {exc}") from None


def build_plan(opts: PlanInput, doc: dict[str, Any] | None = None) -> Plan:
    doc = doc or {}
    sched_doc = doc.get("schedule", {}) or {}
    payload_doc = doc.get("payload", {}) or {}
    if not isinstance(sched_doc, dict) or not isinstance(payload_doc, dict):
        raise PlanError("plan: [schedule] and [payload] must be tables")

    def pick(opt: Any, *keys: tuple[dict[str, Any], str], default: Any = None) -> Any:
        if opt is not None:
            return opt
        for table, key in keys:
            if key in table:
                return table[key]
        return default

    try:
        queue = pick(opts.queue, (doc, "queue"))
        if not queue:
            raise PlanError("no queue: give --queue or queue = ... in the plan")
        kind = str(pick(opts.schedule, (sched_doc, "kind"), default="constant"))
        rate = pick(opts.rate, (sched_doc, "rate"), (doc, "rate"))
        schedule = _schedule(kind, rate, opts, sched_doc)
        duration = pick(opts.duration, (doc, "duration"))
        requests = pick(opts.requests, (doc, "requests"))
        if duration is None and requests is None:
            if isinstance(schedule, Trace):
                duration = schedule.rows[-1].offset_ns / 1e9 + 1e-3
            else:
                raise PlanError("give --duration or --requests (or duration/requests in the plan)")
        spec = RunSpec(
            queue=str(queue), schedule=schedule,
            duration_s=parse_duration(duration) if duration is not None else None,
            requests=int(requests) if requests is not None else None,
            warmup_s=parse_duration(pick(opts.warmup, (doc, "warmup"), default=0)),
            timeout_s=parse_duration(pick(opts.timeout, (doc, "timeout"), default="10s")),
            coalesce_s=parse_duration(pick(opts.coalesce, (doc, "coalesce"), default=COALESCE_S)),
            workload=str(pick(opts.workload, (doc, "workload"), default="default")),
            payload_size=int(pick(opts.payload_size, (payload_doc, "size"), default=64)),
            payload=pick(opts.payload_text, (payload_doc, "text")),
            seed=int(pick(opts.seed, (doc, "seed"), default=1)),
        )
    except (ScheduleError, PlanError):
        raise
    except (ValueError, TypeError) as exc:
        raise PlanError(str(exc)) from None
    slos = [parse_slo(s) for s in opts.slos]
    slo_doc = doc.get("slo", {}) or {}
    if not isinstance(slo_doc, dict):
        raise PlanError("plan: [slo] must be a table of metric = \"<OP><VALUE>\"")
    for metric, cond in slo_doc.items():
        slos.append(parse_slo(f"{metric}{cond}"))
    broker = pick(opts.broker, (doc, "broker"))
    return Plan(broker=str(broker) if broker else None, spec=spec, slos=slos)


def _schedule(kind: str, rate: Any, opts: PlanInput, doc: dict[str, Any]) -> AnySchedule:
    if kind not in KINDS:
        raise PlanError(f"unknown schedule {kind!r} (use {', '.join(KINDS)})")

    def need_rate() -> float:
        if rate is None:
            raise PlanError(f"the {kind} schedule needs --rate")
        return float(rate)

    if kind == "constant":
        return Constant(need_rate())
    if kind == "poisson":
        return Poisson(need_rate())
    if kind == "ramp":
        start = opts.ramp_from if opts.ramp_from is not None else doc.get("from", 0.0)
        end = opts.ramp_to if opts.ramp_to is not None else doc.get("to", rate)
        over = opts.ramp_over if opts.ramp_over is not None else doc.get("over")
        if end is None or over is None:
            raise PlanError("the ramp schedule needs --ramp-to (or --rate) and --ramp-over")
        return Ramp(float(start), float(end), parse_duration(over))
    if kind == "steps":
        text = opts.steps if opts.steps is not None else ",".join(str(s) for s in doc.get("steps", []))
        return Steps(parse_steps(text))
    if kind == "trace":
        path = opts.trace if opts.trace is not None else doc.get("file")
        if not path:
            raise PlanError("the trace schedule needs --trace FILE.csv")
        return Trace.load(path)
    concurrency = opts.concurrency if opts.concurrency is not None else doc.get("concurrency")
    if not concurrency or int(concurrency) < 1:
        raise PlanError("the closed schedule needs --concurrency N (N >= 1)")
    return ClosedLoop(int(concurrency))
