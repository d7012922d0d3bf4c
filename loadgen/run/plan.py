"""Load-test plans: a TOML file (documented in the README) merged with command-line options.

```toml
broker = "redis://127.0.0.1:6379/0"     # --broker wins
queue = "inference"
duration = "30s"                        # or requests = 5000
warmup = "5s"
timeout = "10s"
coalesce = "1ms"                        # requests due this close share a write (0 = each alone)
max_outage = "60s"                      # a broker unreachable this long aborts the run
confirm = false                         # RabbitMQ: publisher confirms on the request channel (--confirm)
persistent = false                      # RabbitMQ: persistent requests and replies (--persistent)
workload = "embed"
seed = 1
# LLM-shaped load (as --input-tokens, --output-tokens, --dataset, --max-tokens, --objective):
# input_tokens = "normal:512,128"       # or a whole number; or dataset = "lengths.jsonl" (not both)
# output_tokens = "uniform:64,256"
# max_tokens = 256                      # caps every output length
# objectives = ["ttft<500ms", "tpot<50ms"]

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

Strict (house rule 14): an unknown key, in any table, is an error naming the key, the file and the nearest valid
key; so is a value of the wrong type. A steps schedule with neither a duration nor a request count runs for the sum of
its steps, a trace until its last offset. The LLM keys are read by the command line's parsers; a dataset given on the
command line replaces the plan's lengths, and lengths given there replace the plan's dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.errors import PlanError, ScheduleError, SloError
from loadgen.results.objectives import Objectives
from loadgen.results.slo import Slo, parse_slo
from loadgen.run.llm_dataset import read_dataset
from loadgen.run.llm_load import LlmLoad, parse_lengths, parse_max_tokens
from loadgen.run.schedules import (
    MAX_GENERATOR_RATE,
    AnySchedule,
    ClosedLoop,
    Constant,
    Poisson,
    Ramp,
    Steps,
    Trace,
    parse_steps,
    peak_rate,
)
from loadgen.run.spec import COALESCE_S, RunSpec
from loadgen.units import parse_duration
from probes.strict_keys import ConfigFileError, check_keys, read_toml

KINDS = ("constant", "poisson", "ramp", "steps", "trace", "closed")
MAX_CONCURRENCY = 100_000  # closed loop: requests in flight at once


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# key -> (type test, what the value must be)
_Rule = tuple[Callable[[Any], bool], str]
_STR: _Rule = (lambda v: isinstance(v, str), "a string")
_NUMBER: _Rule = (_is_number, "a number")
_INT: _Rule = (_is_int, "a whole number")
_DURATION: _Rule = (lambda v: isinstance(v, str) or _is_number(v), 'a duration such as "30s" (or seconds)')
_STEPS: _Rule = (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
                 'a list such as ["100:10s", "200:10s"]')
_TABLE: _Rule = (lambda v: isinstance(v, dict), "a table")
_BOOL: _Rule = (lambda v: isinstance(v, bool), "true or false")
_LENGTHS: _Rule = (lambda v: isinstance(v, str) or _is_int(v), 'a distribution such as "uniform:64,256" (or a whole '
                   "number)")
_STRS: _Rule = (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                'a list such as ["ttft<500ms", "tpot<50ms"]')
TOP_KEYS: dict[str, _Rule] = {
    "broker": _STR, "queue": _STR, "rate": _NUMBER, "duration": _DURATION, "requests": _INT, "warmup": _DURATION,
    "timeout": _DURATION, "coalesce": _DURATION, "max_outage": _DURATION, "workload": _STR, "seed": _INT,
    "confirm": _BOOL, "persistent": _BOOL, "schedule": _TABLE, "payload": _TABLE, "slo": _TABLE,
    "input_tokens": _LENGTHS, "output_tokens": _LENGTHS, "dataset": _STR, "max_tokens": _INT, "objectives": _STRS}
_LENGTH_FLAGS = {"input_tokens": "--input-tokens", "output_tokens": "--output-tokens", "dataset": "--dataset"}
SCHEDULE_KEYS: dict[str, _Rule] = {
    "kind": _STR, "rate": _NUMBER, "from": _NUMBER, "to": _NUMBER, "over": _DURATION, "steps": _STEPS,
    "file": _STR, "concurrency": _INT}
PAYLOAD_KEYS: dict[str, _Rule] = {"size": _INT, "text": _STR}


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
    max_outage: str | None = None
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
    confirm: bool | None = None
    persistent: bool | None = None
    slos: list[str] = field(default_factory=list)
    input_tokens: str | None = None  # LLM-shaped load (loadgen.run.llm_load)
    output_tokens: str | None = None
    dataset: str | None = None
    max_tokens: int | None = None
    objectives: list[str] = field(default_factory=list)  # given here: they replace the plan's
    agents: int | None = None  # a distributed run: the schedule's peak rate is dealt over this many generators


@dataclass(frozen=True)
class Plan:
    broker: str | None
    spec: RunSpec
    slos: list[Slo]
    llm: LlmLoad | None = None  # None: a plain run


def _where(source: str | None) -> str:
    return f"plan {source}" if source else "plan"


def read_plan_file(path: str | Path) -> dict[str, Any]:
    """The plan file's tables, checked (keys and types): a ``PlanError`` naming the file otherwise."""
    p = Path(path)
    try:
        doc = read_toml(p)
    except ConfigFileError as exc:
        raise PlanError(f"plan {p}: {exc}") from None
    check_plan(doc, str(p))
    return doc


def check_plan(doc: dict[str, Any], source: str | None = None) -> None:
    """Refuse unknown keys and values of the wrong type (``[slo]`` keys are metrics: ``build_plan`` parses them)."""
    where = _where(source)
    for label, table, rules in (("", doc, TOP_KEYS), ("[schedule]", doc.get("schedule"), SCHEDULE_KEYS),
                                ("[payload]", doc.get("payload"), PAYLOAD_KEYS)):
        if not isinstance(table, dict):
            continue  # [schedule] or [payload] of the wrong type: the top-level check says so
        problem = check_keys(table, rules, table=label)
        if problem:
            raise PlanError(f"{where}: {problem}")
        for key, value in table.items():
            test, what = rules[key]
            if not test(value):
                shown = f"[{key}]" if rules[key] is _TABLE else f"{label} {key}".strip()
                raise PlanError(f"{where}: {shown} must be {what}, not {_show(value)}")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def build_plan(opts: PlanInput, doc: dict[str, Any] | None = None, *, source: str | None = None) -> Plan:
    """Merge the options with the plan file's ``doc`` (options win) into a checked run; ``source`` (the file's
    name) goes into every message about a value that came from the file."""
    doc = doc or {}
    check_plan(doc, source)
    where = _where(source)
    tables: dict[str, dict[str, Any]] = {"": doc, "[schedule] ": doc.get("schedule", {}),
                                         "[payload] ": doc.get("payload", {})}

    def pick(opt: Any, flag: str, key: str, section: str = "", default: Any = None) -> tuple[Any, str]:
        """The value and where it came from (for messages): the option, else the plan, else ``default``."""
        if opt is not None:
            return opt, flag
        if key in tables[section]:
            return tables[section][key], f"{where}: {section}{key}"
        return default, flag

    def seconds(opt: Any, flag: str, key: str, default: Any = None) -> float | None:
        value, origin = pick(opt, flag, key, "", default)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise PlanError(f"{origin}: {exc}") from None

    queue, _ = pick(opts.queue, "--queue", "queue")
    if queue is None:
        raise PlanError("no queue: give --queue or queue = ... in the plan")
    if not str(queue).strip():
        raise PlanError("the queue name is empty")
    kind, kind_origin = pick(opts.schedule, "--schedule", "kind", "[schedule] ", "constant")
    if kind not in KINDS:
        raise PlanError(f"{kind_origin}: unknown schedule {kind!r} (use {', '.join(KINDS)})")
    rate, _ = pick(opts.rate, "--rate", "rate", "[schedule] ")
    if rate is None:
        rate, _ = pick(None, "--rate", "rate")
    try:
        schedule = _schedule(kind, rate, opts, tables["[schedule] "], where)
    except ScheduleError as exc:
        raise ScheduleError(f"{where}: [schedule] {exc}" if _from_file(opts, doc) else str(exc)) from None
    _check_generator_rate(schedule, opts.agents)
    duration = seconds(opts.duration, "--duration", "duration")
    requests, _ = pick(opts.requests, "--requests", "requests")
    if duration is None and requests is None:
        if isinstance(schedule, Trace):
            duration = schedule.rows[-1].offset_ns / 1e9 + 1e-3
        elif isinstance(schedule, Steps):
            duration = schedule.total_s
        else:
            raise PlanError("give --duration or --requests (or duration/requests in the plan)")
    max_outage = seconds(opts.max_outage, "--max-outage", "max_outage")
    defaults: dict[str, Any] = {} if max_outage is None else {"max_outage_s": max_outage}  # else RunSpec's
    spec = RunSpec(
        queue=str(queue), schedule=schedule, duration_s=duration,
        requests=int(requests) if requests is not None else None,
        warmup_s=seconds(opts.warmup, "--warmup", "warmup", 0) or 0.0,
        timeout_s=seconds(opts.timeout, "--timeout", "timeout", "10s") or 0.0,
        coalesce_s=seconds(opts.coalesce, "--coalesce", "coalesce", COALESCE_S) or 0.0,
        workload=str(pick(opts.workload, "--workload", "workload", "", "default")[0]),
        payload_size=int(pick(opts.payload_size, "--payload-size", "size", "[payload] ", 64)[0]),
        payload=pick(opts.payload_text, "--payload", "text", "[payload] ")[0],
        seed=int(pick(opts.seed, "--seed", "seed", "", 1)[0]),
        confirm=bool(pick(opts.confirm, "--confirm", "confirm", "", False)[0]),
        persistent=bool(pick(opts.persistent, "--persistent", "persistent", "", False)[0]),
        **defaults,
    )
    slos = [parse_slo(s) for s in opts.slos]
    for metric, cond in doc.get("slo", {}).items():
        if not isinstance(cond, str):
            raise PlanError(f"{where}: [slo] {metric} must be a string such as \"<250ms\", not {_show(cond)}")
        if not cond.lstrip().startswith(("<", ">")):
            raise PlanError(f"{where}: [slo] {metric} = {cond!r} needs an operator first (<, <=, >, >=), "
                            "e.g. \"<250ms\"")
        try:
            slos.append(parse_slo(f"{metric}{cond}"))
        except SloError as exc:
            raise SloError(f"{where}: [slo] {exc}") from None
    broker, _ = pick(opts.broker, "--broker", "broker")
    return Plan(broker=str(broker) if broker else None, spec=spec, slos=slos, llm=_llm(opts, doc, where, spec.seed))


def _llm(opts: PlanInput, doc: dict[str, Any], where: str, seed: int) -> LlmLoad | None:
    """The run's LLM settings: the options', else the plan's (a dataset on one side replaces lengths on the other),
    each parsed by the command line's parser and named, in a message, by where it came from."""
    cli = {key: (getattr(opts, key), flag) for key, flag in _LENGTH_FLAGS.items() if getattr(opts, key) is not None}
    plan = {key: (doc[key], f"{where}: {key}") for key in _LENGTH_FLAGS if key in doc}
    for side, names in ((cli, _LENGTH_FLAGS), (plan, {k: k for k in _LENGTH_FLAGS})):
        if "dataset" in side and len(side) > 1:
            other = " and ".join(names[k] for k in side if k != "dataset")
            prefix = "" if side is cli else f"{where}: "
            raise PlanError(f"{prefix}{names['dataset']} and {other} cannot go together: the dataset gives both "
                            "lengths")
    if "dataset" in cli or not cli:
        lengths = cli or plan
    else:
        lengths = {**{k: v for k, v in plan.items() if k != "dataset"}, **cli}
    cap = (opts.max_tokens, "--max-tokens") if opts.max_tokens is not None else (
        (doc["max_tokens"], f"{where}: max_tokens") if "max_tokens" in doc else None)
    texts = opts.objectives or doc.get("objectives") or []
    if not lengths and cap is None and not texts:
        return None
    if cap is not None and "dataset" not in lengths and "output_tokens" not in lengths:
        raise PlanError(f"{cap[1]} caps the output lengths of --output-tokens or --dataset: give one of them")
    try:
        objectives = Objectives.parse(texts)
    except SloError as exc:
        raise SloError(str(exc) if opts.objectives else f"{where}: {exc}") from None
    dist = {k: parse_lengths(str(v), origin) for k, (v, origin) in lengths.items() if k != "dataset"}
    dataset = None
    if "dataset" in lengths:
        path, origin = lengths["dataset"]
        try:
            dataset = read_dataset(path)
        except PlanError as exc:
            raise PlanError(str(exc) if origin == "--dataset" else f"{where}: {exc}") from None
    return LlmLoad(dist.get("input_tokens"), dist.get("output_tokens"), objectives, seed, dataset,
                   parse_max_tokens(*cap) if cap is not None else None)


def _from_file(opts: PlanInput, doc: dict[str, Any]) -> bool:
    """Whether the plan file gave one of the schedule's values (so that a message about them names the file)."""
    sched = doc.get("schedule", {})
    given = {"rate": opts.rate, "from": opts.ramp_from, "to": opts.ramp_to, "over": opts.ramp_over,
             "steps": opts.steps, "file": opts.trace, "concurrency": opts.concurrency}
    return any(given[key] is None and key in sched for key in given) or (opts.rate is None and "rate" in doc)


def _check_generator_rate(schedule: AnySchedule, agents: int | None) -> None:
    """Refuse up front a peak rate past what one generator process can send (``MAX_GENERATOR_RATE``), per agent
    in a distributed run: such a run would only measure the generator falling behind."""
    if isinstance(schedule, ClosedLoop | Trace):
        return
    peak = peak_rate(schedule)
    generators = agents or 1
    if peak / generators <= MAX_GENERATOR_RATE:
        return
    need = math.ceil(peak / MAX_GENERATOR_RATE)
    each = (f"{peak / generators:,.0f}/s per agent ({peak:,.0f}/s over {generators})" if agents
            else f"{peak:,.0f}/s")
    raise PlanError(f"a peak rate of {each} is more than one load generator can send (at most "
                    f"{MAX_GENERATOR_RATE:,.0f}/s): spread it over agents with --agents {need} or more (and "
                    "'qdeck load agent' on each)")


def _schedule(kind: str, rate: Any, opts: PlanInput, doc: dict[str, Any], where: str) -> AnySchedule:
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
        over_origin = "--ramp-over" if opts.ramp_over is not None else f"{where}: [schedule] over"
        if end is None or over is None:
            raise PlanError("the ramp schedule needs --ramp-to (or --rate) and --ramp-over")
        try:
            over_s = parse_duration(over)
        except ValueError as exc:
            raise PlanError(f"{over_origin}: {exc}") from None
        return Ramp(float(start), float(end), over_s)
    if kind == "steps":
        steps = opts.steps if opts.steps is not None else doc.get("steps")
        if steps is None:
            raise PlanError("the steps schedule needs --steps RATE:DURATION,... (e.g. 100:10s,200:10s)")
        return Steps(parse_steps(steps if isinstance(steps, str) else ",".join(steps)))
    if kind == "trace":
        path = opts.trace if opts.trace is not None else doc.get("file")
        if not path:
            raise PlanError("the trace schedule needs --trace FILE.csv")
        return Trace.load(path)
    concurrency = opts.concurrency if opts.concurrency is not None else doc.get("concurrency")
    if concurrency is None or not 1 <= int(concurrency) <= MAX_CONCURRENCY:
        raise PlanError(f"the closed schedule needs --concurrency N (1 <= N <= {MAX_CONCURRENCY:,})")
    return ClosedLoop(int(concurrency))
