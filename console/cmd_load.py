"""``qdeck load run | agent | gate | compare``: open-loop load tests (local or over agents), SLO gates, comparisons.

Exit codes: 0 every SLO met, 99 an SLO failed or the run regressed (as k6 does), 2 usage or connection errors.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from console.runner import EXIT_USAGE, broker_option, cli_errors, fail
from probes import ProbeError, resolve_broker
from probes.redact import redact_text

if TYPE_CHECKING:
    from loadgen.engine import RunSpec
    from loadgen.slo import Slo

app = typer.Typer(help="Load tests through a broker to inference workers: run (locally or over agents), gate, "
                       "compare.",
                  no_args_is_help=True)


class ScheduleKind(enum.StrEnum):
    constant = "constant"
    poisson = "poisson"
    ramp = "ramp"
    steps = "steps"
    trace = "trace"
    closed = "closed"


def _usage_errors() -> tuple[type[Exception], ...]:
    from loadgen.plan import PlanError
    from loadgen.report import ReportError
    from loadgen.schedules import ScheduleError
    from loadgen.slo import SloError

    return PlanError, ScheduleError, SloError, ReportError


@app.command("run")
@cli_errors
def run(
    broker: str | None = broker_option(),
    queue: str | None = typer.Option(None, "--queue", "-q", help="Request queue / stream / topic."),
    rate: float | None = typer.Option(None, "--rate", "-r", help="Target requests per second (open loop)."),
    duration: str | None = typer.Option(None, "--duration", "-d", help="Measured time: 30s, 2m, ..."),
    requests: int | None = typer.Option(None, "--requests", "-n", min=1, help="Stop after this many requests."),
    schedule: ScheduleKind | None = typer.Option(None, "--schedule", "-s", help="Arrival schedule; default constant."),
    ramp_from: float | None = typer.Option(None, "--ramp-from", help="ramp: starting rate (default 0)."),
    ramp_to: float | None = typer.Option(None, "--ramp-to", help="ramp: final rate (default --rate)."),
    ramp_over: str | None = typer.Option(None, "--ramp-over", help="ramp: time to reach the final rate."),
    steps: str | None = typer.Option(None, "--steps", help="steps: RATE:DURATION,... e.g. 100:10s,200:10s."),
    trace: Path | None = typer.Option(None, "--trace", help="trace: CSV with offset_ms[,payload_bytes]."),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1,
                                           help="closed: requests in flight (for contrast; hides stalls)."),
    warmup: str | None = typer.Option(None, "--warmup", help="Sent but not measured, before the measured time."),
    timeout: str | None = typer.Option(None, "--timeout", help="No reply after this long = timeout (10s)."),
    coalesce: str | None = typer.Option(None, "--coalesce",
                                        help="Requests due within this window share one write, sent when the last "
                                             "is due; the wait counts as schedule lag (0.5ms; 0 = each on its own)."),
    payload_size: int | None = typer.Option(None, "--payload-size", min=0, help="Payload characters (64)."),
    payload: str | None = typer.Option(None, "--payload", help="A fixed payload text (e.g. a sentence to embed)."),
    workload: str | None = typer.Option(None, "--workload", help="Workload name carried in each request."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed of the schedule (1)."),
    plan: Path | None = typer.Option(None, "--plan", "-p", help="A TOML plan; options given here win."),
    slo: list[str] = typer.Option([], "--slo", help="e.g. 'p99<250ms', 'errors<0.1%', 'achieved_rate>=99%', "
                                                    "'queue_wait.p99<50ms' (repeatable)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write summary.json, latency.hlog, "
                                                              "end_to_end.hgrm (and hlog/<stage>.hlog) here."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the SLO verdicts as JUnit XML."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout instead of tables."),
    quiet: bool = typer.Option(False, "--quiet", help="No live progress."),
    agents: int | None = typer.Option(None, "--agents", min=1,
                                      help="Distributed (Locust's master/worker mode): wait for this many "
                                           "'qdeck load agent' processes and deal each 1/N of the plan."),
    bind: str = typer.Option("*:5557", "--bind", help="With --agents: where the master listens for agents."),
    agents_wait: str = typer.Option("60s", "--agents-wait", help="With --agents: how long to wait for them."),
) -> None:
    """Drive open-loop load through BROKER to the workers on QUEUE and report per-stage latency.

    Latency is measured from each request's intended send time (coordinated-omission correct).
    With --agents N the run is spread over N agents (other machines), its histograms merged exactly.
    Exit 0 when every SLO holds, 99 when one fails, 2 on usage or connection errors.
    """
    from loadgen.plan import PlanInput, build_plan, read_plan_file

    opts = PlanInput(broker=broker, queue=queue, rate=rate, duration=duration, requests=requests,
                     warmup=warmup, timeout=timeout, coalesce=coalesce, schedule=schedule.value if schedule else None,
                     ramp_from=ramp_from, ramp_to=ramp_to, ramp_over=ramp_over, steps=steps,
                     trace=str(trace) if trace else None, concurrency=concurrency, payload_size=payload_size,
                     payload_text=payload, workload=workload, seed=seed, slos=list(slo))
    try:
        built = build_plan(opts, read_plan_file(plan) if plan else None)
    except _usage_errors() as exc:
        raise fail(str(exc)) from None
    if agents is not None:
        from console.load_cluster import run_distributed
        from loadgen.units import parse_duration

        try:
            wait_s = parse_duration(agents_wait)
        except ValueError as exc:
            raise fail(f"--agents-wait: {exc}") from None
        summary = run_distributed(built.broker, built.spec, agents, bind=bind, wait_s=wait_s, out=out, quiet=quiet)
        raise typer.Exit(report(summary, built.slos, out=out, junit=junit, json_out=json_out))
    code = execute(built.broker, built.spec, built.slos, out=out, junit=junit, json_out=json_out, quiet=quiet)
    raise typer.Exit(code)


def execute(broker: str | None, spec: RunSpec, slos: list[Slo], *, out: Path | None, junit: Path | None,
            json_out: bool, quiet: bool) -> int:
    """Run ``spec``, print the report, judge ``slos``; returns the exit code (also used by the demo)."""
    from console.load_view import Progress, stderr_console
    from loadgen import aio
    from loadgen.engine import Engine
    from loadgen.report import build_summary, write_outputs
    from loadgen.transports import open_transport

    target = resolve_broker(broker)
    err = stderr_console()
    if not quiet:
        err.print(f"qdeck load: {spec.schedule.describe()} → {spec.queue} on {target.display}, run {spec.run_id}"
                  + (f", warm-up {spec.warmup_s:g} s" if spec.warmup_s else ""))
    progress = None if quiet else Progress(spec.warmup_s, err)
    engine = Engine(open_transport(target, spec.queue, spec.run_id), spec, progress=progress)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    try:
        result = aio.run(engine.run(str(out) if out is not None else None))
    except ProbeError as exc:
        raise ProbeError(redact_text(str(exc), target.secrets)) from None
    summary = build_summary(result, broker=target.display)
    if out is not None:
        write_outputs(summary, result, out)
    code = report(summary, slos, out=out, junit=junit, json_out=json_out)
    if result.aborted:
        err.print(f"qdeck: run aborted: {redact_text(result.aborted, target.secrets)}")
        return EXIT_USAGE
    return code


def report(summary: dict[str, Any], slos: list[Slo], *, out: Path | None, junit: Path | None,
           json_out: bool) -> int:
    """Print a run's summary (tables or JSON), judge ``slos``, write JUnit; returns 0 or 99."""
    from console.load_view import print_summary, print_verdicts
    from loadgen.slo import EXIT_SLO_FAILED, judge_all

    verdicts = judge_all(summary, slos)
    if json_out:
        doc = dict(summary, slo=[{"slo": v.slo.text, "ok": v.ok, "actual": v.actual} for v in verdicts])
        print(json.dumps(doc, indent=2))
    else:
        print_summary(summary)
        if verdicts:
            print_verdicts(verdicts)
        if out is not None:
            agents = ", agents/<i>/summary.json" if summary.get("agents") else ""
            print(f"results in {out}/ (summary.json, latency.hlog, end_to_end.hgrm, hlog/{agents})")
    if junit is not None:
        from loadgen.junit import write_junit

        write_junit(junit, "qdeck.slo", [(v.slo.text, v.ok, f"{v.slo.text}: actual {v.actual}") for v in verdicts])
    return EXIT_SLO_FAILED if any(not v.ok for v in verdicts) else 0


@app.command("agent")
@cli_errors
def agent(
    master: str = typer.Option(..., "--master", "-m", help="The master's HOST:PORT ('qdeck load run --agents N')."),
    broker: str | None = typer.Option(None, "--broker", "-b", envvar="QDECK_BROKER",
                                      help="This agent's broker (URL or profile); default: the master's."),
) -> None:
    """Serve a distributed run (Locust's worker mode): take a share of the master's plan, send it, report back.

    Runs until the master's run ends. Give --broker here to keep a broker password off the control link (the
    master otherwise sends its --broker as given, over Locust's unencrypted ZeroMQ connection).
    """
    import os
    import sys

    env = dict(os.environ)
    if broker is not None:
        resolve_broker(broker)  # a bad URL or unknown profile fails here, not at the first run
        env["QDECK_BROKER"] = broker
    os.execve(sys.executable, [sys.executable, "-m", "loadgen.locust_nodes", "agent", "--master", master], env)


@app.command("gate")
@cli_errors
def gate(
    summary_file: Path = typer.Argument(..., help="A summary.json written by 'qdeck load run --out'."),
    slo: list[str] = typer.Option([], "--slo", help="SLO to judge (repeatable); see 'qdeck load run --help'."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the verdicts as JUnit XML."),
    json_out: bool = typer.Option(False, "--json", help="Verdicts as JSON."),
) -> None:
    """Re-judge a saved run against SLOs. Exit 0 pass, 99 fail, 2 usage errors."""
    from console.load_view import print_verdicts
    from loadgen.report import load_summary
    from loadgen.slo import EXIT_SLO_FAILED, judge_all, parse_slos

    if not slo:
        raise fail("give at least one --slo (e.g. --slo 'p99<250ms')")
    try:
        summary = load_summary(summary_file)
        verdicts = judge_all(summary, parse_slos(slo))
    except _usage_errors() as exc:
        raise fail(str(exc)) from None
    if json_out:
        print(json.dumps([{"slo": v.slo.text, "ok": v.ok, "actual": v.actual, "detail": v.detail}
                          for v in verdicts], indent=2))
    else:
        print_verdicts(verdicts)
    if junit is not None:
        from loadgen.junit import write_junit

        write_junit(junit, "qdeck.slo", [(v.slo.text, v.ok, f"{v.slo.text}: actual {v.actual}") for v in verdicts])
    raise typer.Exit(EXIT_SLO_FAILED if any(not v.ok for v in verdicts) else 0)


@app.command("compare")
@cli_errors
def compare(
    base: Path = typer.Argument(..., help="Baseline summary.json."),
    new: Path = typer.Argument(..., help="New summary.json."),
    max_regression: str = typer.Option("10%", "--max-regression", help="Largest allowed worsening, e.g. 10%."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the checks as JUnit XML."),
    json_out: bool = typer.Option(False, "--json", help="Checks as JSON."),
) -> None:
    """Compare a run with a baseline: exit 99 when a latency percentile, the error share or the achieved rate
    regressed by more than --max-regression."""
    from console.load_view import print_checks
    from loadgen.compare import compare as run_compare
    from loadgen.report import load_summary
    from loadgen.slo import EXIT_SLO_FAILED

    text = max_regression.strip().rstrip("%")
    try:
        limit = float(text) / 100
    except ValueError:
        raise fail(f"--max-regression {max_regression!r} is not a percentage (e.g. 10%)") from None
    if limit < 0:
        raise fail("--max-regression must not be negative")
    try:
        checks = run_compare(load_summary(base), load_summary(new), limit)
    except _usage_errors() as exc:
        raise fail(str(exc)) from None
    if not checks:
        raise fail("nothing to compare: the two runs share no recorded stage")
    if json_out:
        print(json.dumps([{"metric": c.name, "base": c.base, "new": c.new, "change": c.change, "ok": c.ok}
                          for c in checks], indent=2))
    else:
        print_checks(checks)
    if junit is not None:
        from loadgen.junit import write_junit

        write_junit(junit, "qdeck.compare", [(c.name, c.ok, f"{c.name}: {c.base} → {c.new} ({c.change})")
                                             for c in checks])
    raise typer.Exit(EXIT_SLO_FAILED if any(not c.ok for c in checks) else 0)
