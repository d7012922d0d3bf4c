"""``qdeck load run | agent | gate | compare``: open-loop load tests (local or over agents), SLO gates, comparisons.

Exit codes: 0 every SLO met, 99 an SLO failed or the run regressed (as k6 does), 2 usage or connection errors.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from console import cmd_load_compare, cmd_load_plan, cmd_load_report, cmd_load_search
from console.runner import EXIT_USAGE, broker_option, cli_errors, fail, finite, host_port, print_error
from loadgen.errors import LoadgenError
from probes import ProbeError, resolve_broker
from probes.redact import redact_text

if TYPE_CHECKING:
    from loadgen.results.abort_rule import AbortRule
    from loadgen.results.slo import Slo
    from loadgen.run.llm_load import LlmLoad
    from loadgen.run.spec import RunSpec

MAX_AGENTS_WAIT_S = 24 * 3600.0

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


@app.command("run")
@cli_errors
def run(
    broker: str | None = broker_option(),
    queue: str | None = typer.Option(None, "--queue", "-q", help="Request queue / stream / topic."),
    rate: float | None = typer.Option(None, "--rate", "-r", callback=finite,
                                      help="Target requests per second (open loop)."),
    duration: str | None = typer.Option(None, "--duration", "-d", help="Measured time: 30s, 2m, ..."),
    requests: int | None = typer.Option(None, "--requests", "-n", min=1, help="Stop after this many requests."),
    schedule: ScheduleKind | None = typer.Option(None, "--schedule", "-s", help="Arrival schedule; default constant."),
    ramp_from: float | None = typer.Option(None, "--ramp-from", callback=finite,
                                           help="ramp: starting rate (default 0)."),
    ramp_to: float | None = typer.Option(None, "--ramp-to", callback=finite,
                                         help="ramp: final rate (default --rate)."),
    ramp_over: str | None = typer.Option(None, "--ramp-over", help="ramp: time to reach the final rate."),
    steps: str | None = typer.Option(None, "--steps", help="steps: RATE:DURATION,... e.g. 100:10s,200:10s."),
    trace: Path | None = typer.Option(None, "--trace", help="trace: CSV with offset_ms[,payload_bytes]."),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1,
                                           help="closed: requests in flight (for contrast; hides stalls)."),
    warmup: str | None = typer.Option(None, "--warmup", help="Sent but not measured, before the measured time."),
    timeout: str | None = typer.Option(None, "--timeout", help="No reply after this long = timeout (10s)."),
    coalesce: str | None = typer.Option(None, "--coalesce",
                                        help="Requests due within this window share one write, sent when the last "
                                             "is due; the wait counts as schedule lag (1ms; 0 = each on its own)."),
    max_outage: str | None = typer.Option(None, "--max-outage",
                                          help="Abort the run when the broker stays unreachable this long (60s)."),
    payload_size: int | None = typer.Option(None, "--payload-size", min=0, help="Payload characters (64)."),
    payload: str | None = typer.Option(None, "--payload", help="A fixed payload text (e.g. a sentence to embed)."),
    workload: str | None = typer.Option(None, "--workload", help="Workload name carried in each request."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed of the schedule (1)."),
    confirm: bool | None = typer.Option(None, "--confirm/--no-confirm",
                                        help="RabbitMQ: publisher confirms on the request channel, counted, never "
                                             "waited for, so that requests the broker never took when a connection "
                                             "drops end at once as not_confirmed (off: they time out). Costs the "
                                             "broker work real clients rarely add. Redis and Kafka confirm anyway."),
    persistent: bool | None = typer.Option(None, "--persistent/--no-persistent",
                                           help="RabbitMQ: publish requests persistent (delivery mode 2, a disk "
                                                "write each, as Celery does); the worker's replies mirror it. With "
                                                "it, requests and replies queued when the broker restarts survive "
                                                "the restart (off: RabbitMQ drops them, and they time out)."),
    plan: Path | None = typer.Option(None, "--plan", "-p", help="A TOML plan; options given here win."),
    slo: list[str] = typer.Option([], "--slo", help="e.g. 'p99<250ms', 'errors<0.1%', 'achieved_rate>=99%', "
                                                    "'queue_wait.p99<50ms' (repeatable)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write summary.json, latency.hlog, "
                                                              "end_to_end.hgrm (and hlog/<stage>.hlog) here."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the SLO verdicts as JUnit XML."),
    input_tokens: str | None = typer.Option(None, "--input-tokens", help="LLM-shaped load: prompt tokens per "
                                            "request, N | uniform:LOW,HIGH | normal:MEAN,SD (seeded)."),
    output_tokens: str | None = typer.Option(None, "--output-tokens", help="LLM-shaped load: max_tokens per "
                                             "request, N | uniform:LOW,HIGH | normal:MEAN,SD (seeded)."),
    dataset: Path | None = typer.Option(None, "--dataset", help="LLM-shaped load: each request's input and output "
                                        "tokens from this file's rows, shuffled by --seed (CSV/TSV or JSONL with "
                                        "input_tokens and output_tokens, or ShareGPT conversations)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="LLM-shaped load: cap every request's output "
                                          "tokens (max_tokens) at N."),
    objective: list[str] = typer.Option([], "--objective", help="Per-request objective that goodput and "
                                        "attainment count, e.g. 'ttft<500ms', 'tpot<50ms' (repeatable)."),
    abort_on: list[str] = typer.Option([], "--abort-on", help="Stop the run once an SLO has been breached this "
                                       "long, e.g. 'p99<250ms for 10s' (judged each second; exit 99; repeatable)."),
    csv_file: Path | None = typer.Option(None, "--csv", help="Write every interval's figures per stage as CSV rows "
                                                             "(written as the run goes)."),
    html: Path | None = typer.Option(None, "--html", help="Write the run's HTML report to this file when it ends "
                                                          "(as 'qdeck load report' does; self-contained, offline)."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout instead of tables."),
    broker_samples: bool = typer.Option(True, "--broker-samples/--no-broker-samples",
                                        help="Sample the request queue at the broker each interval (depth, in flight, "
                                             "consumers, lag; its own connection) and check Little's law on it."),
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
    Each interval is written as it closes to a live feed, --out/live.jsonl (without --out: in
    $XDG_RUNTIME_DIR/qdeck/runs/RUN_ID/), which 'qdeck console --run DIR' follows.
    Ctrl-C stops sending, waits for the replies in flight and writes the run's files (exit 130); twice: at once.
    Exit 0 when every SLO holds, 99 when one fails, 2 on usage or connection errors.
    """
    from loadgen.run.plan import PlanInput, build_plan, read_plan_file
    from loadgen.units import parse_duration

    wait_s = 0.0
    if agents is not None:
        try:
            wait_s = parse_duration(agents_wait)
        except ValueError as exc:
            raise fail(f"--agents-wait: {exc}") from None
        if not 0 < wait_s <= MAX_AGENTS_WAIT_S:
            raise fail(f"--agents-wait must be above zero and at most {MAX_AGENTS_WAIT_S / 3600:g} h, not "
                       f"{agents_wait!r}")
        host_port(bind, "--bind")
    opts = PlanInput(broker=broker, queue=queue, rate=rate, duration=duration, requests=requests,
                     warmup=warmup, timeout=timeout, coalesce=coalesce, max_outage=max_outage,
                     schedule=schedule.value if schedule else None,
                     ramp_from=ramp_from, ramp_to=ramp_to, ramp_over=ramp_over, steps=steps,
                     trace=str(trace) if trace else None, concurrency=concurrency, payload_size=payload_size,
                     payload_text=payload, workload=workload, seed=seed, confirm=confirm, persistent=persistent,
                     slos=list(slo), input_tokens=input_tokens, output_tokens=output_tokens,
                     dataset=str(dataset) if dataset is not None else None, max_tokens=max_tokens,
                     objectives=list(objective), agents=agents)
    try:
        built = build_plan(opts, read_plan_file(plan) if plan else None, source=str(plan) if plan else None)
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    from loadgen.results.abort_rule import parse_abort_rule

    try:
        rules = [parse_abort_rule(text) for text in abort_on]
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    if rules and agents is not None:
        raise fail("--abort-on is for a run on this machine (each agent judges only its own share)")
    llm = built.llm
    if csv_file is not None:
        if agents is not None:
            raise fail("--csv is for a run on this machine; with --agents, read the merged interval logs under --out")
        writable_file(csv_file, "--csv")
    if html is not None:
        writable_file(html, "--html")
        if agents is not None and out is None:
            raise fail("--html with --agents needs --out (the report reads the merged run's directory)")
    if agents is not None:
        from console.load_cluster import run_distributed

        summary = run_distributed(built.broker, built.spec, agents, bind=bind, wait_s=wait_s, out=out, quiet=quiet,
                                  llm=llm)
        code = report(summary, built.slos, out=out, junit=junit, json_out=json_out)
        if html is not None and out is not None:
            code = html_report(out, html, code)
        raise typer.Exit(code)
    code = execute(built.broker, built.spec, built.slos, out=out, junit=junit, json_out=json_out, quiet=quiet,
                   csv_file=csv_file, abort_on=rules, broker_samples=broker_samples, html=html, llm=llm)
    raise typer.Exit(code)


def html_report(run_dir: Path, html: Path, code: int) -> int:
    """``--html``: the report of the run in ``run_dir``; returns the run's exit code, or 2 (one line) when the
    report cannot be written."""
    from console.cmd_load_report import write_report
    from console.safe_text import safe
    from loadgen.errors import ReportError

    try:
        write_report(run_dir, html)
    except ReportError as exc:
        print_error(f"--html: {exc}")
        return EXIT_USAGE
    print(f"report in {safe(str(html), None)}", file=sys.stderr)
    return code


def writable_file(path: Path, option: str) -> None:
    """Refuse, in one line, a file that cannot be written (before the run, not after it)."""
    if path.is_dir():
        raise fail(f"{option}: {str(path)!r} is a directory")
    if not path.parent.is_dir():
        raise fail(f"{option}: no directory {str(path.parent)!r}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise fail(f"{option}: {str(path)!r} is not writable")


def execute(broker: str | None, spec: RunSpec, slos: list[Slo], *, out: Path | None, junit: Path | None,
            json_out: bool, quiet: bool, csv_file: Path | None = None,
            abort_on: Sequence[AbortRule] = (), broker_samples: bool = True, html: Path | None = None,
            llm: LlmLoad | None = None) -> int:
    """Run ``spec``, print the report, judge ``slos``; returns the exit code (also used by the demo). ``html``: also
    write the HTML report there (the run's files go to a temporary directory when there is no ``out``)."""
    if html is not None and out is None:
        with tempfile.TemporaryDirectory(prefix="qdeck-run-") as tmp:
            return _execute(broker, spec, slos, out=None, junit=junit, json_out=json_out, quiet=quiet,
                            csv_file=csv_file, abort_on=abort_on, broker_samples=broker_samples, html=html,
                            files=Path(tmp), llm=llm)
    return _execute(broker, spec, slos, out=out, junit=junit, json_out=json_out, quiet=quiet, csv_file=csv_file,
                    abort_on=abort_on, broker_samples=broker_samples, html=html, files=out, llm=llm)


def _execute(broker: str | None, spec: RunSpec, slos: list[Slo], *, out: Path | None, junit: Path | None,
             json_out: bool, quiet: bool, csv_file: Path | None, abort_on: Sequence[AbortRule],
             broker_samples: bool, html: Path | None, files: Path | None, llm: LlmLoad | None = None) -> int:
    from console.load_live import EXIT_INTERRUPTED, end_feed, fail_feed, open_feed, run_interruptible
    from console.load_view import Progress
    from console.output import stderr_console
    from console.safe_text import safe
    from loadgen import aio
    from loadgen.results.summary import build_summary
    from loadgen.run.broker_sampler import broker_sampler
    from loadgen.run.engine import Engine
    from loadgen.transports import open_transport

    target = resolve_broker(broker)
    err = stderr_console()
    feed = open_feed(spec, target, slos, out)  # the live feed (qdeck console --run follows it)

    def started() -> None:  # once connected: a broker that cannot be reached is the one line on stderr
        if not quiet:
            err.print(safe(f"qdeck load: {spec.schedule.describe()} → {spec.queue} on {target.display}, run "
                           f"{spec.run_id}" + (f", warm-up {spec.warmup_s:g} s" if spec.warmup_s else "")
                           + (f", live feed {feed.path}" if feed is not None else ""), None), soft_wrap=True)

    progress = None if quiet else Progress(spec.warmup_s, err, timeout_s=spec.timeout_s)
    transport = open_transport(target, spec.queue, spec.run_id, confirm=spec.confirm,
                               persistent=spec.persistent)
    sampler = broker_sampler(target, spec.queue, spec.interval_s) if broker_samples else None
    engine = Engine(transport, spec, progress=progress, started=started, abort_on=abort_on, sampler=sampler,
                    live=feed, llm=llm)
    if feed is not None and sampler is not None:
        feed.broker_figures = sampler.figures_for
    try:
        if files is not None:
            files.mkdir(parents=True, exist_ok=True)
        try:
            result = aio.run(run_interruptible(engine, files, csv_file))
        except ProbeError as exc:
            message = redact_text(str(exc), target.secrets)
            fail_feed(feed, exc, message)
            raise ProbeError(message) from None
        summary = build_summary(result.record(broker=target.display, broker_kind=target.kind))
        code = report(summary, slos, out=out, junit=junit, json_out=json_out)
        if html is not None and files is not None:
            if out is None:  # the run's files in a temporary directory, for the report only
                from loadgen.results.summary import stage_histogram, write_outputs

                write_outputs(summary, stage_histogram(summary, "end_to_end"), files)
            code = html_report(files, html, code)
        if result.interrupted:
            code = EXIT_INTERRUPTED
        elif result.stopped_by_slo:
            from loadgen.results.slo import EXIT_SLO_FAILED

            print_error(f"run stopped: {result.aborted}", target.secrets)
            code = EXIT_SLO_FAILED
        elif result.aborted:
            print_error(f"run aborted: {result.aborted}", target.secrets)
            code = EXIT_USAGE
        end_feed(feed, result, summary, code, out)
        return code
    except BaseException as exc:
        fail_feed(feed, exc)  # a second Ctrl-C, or a bug (a feed already ended stays as it is)
        raise


def report(summary: dict[str, Any], slos: list[Slo], *, out: Path | None, junit: Path | None,
           json_out: bool) -> int:
    """Judge ``slos`` (written into the summary with their results), write the run's files under ``out``, print
    the summary (tables or JSON), write JUnit; returns 0 or 99."""
    from console.load_view import print_summary, print_verdicts
    from console.safe_text import safe
    from loadgen.results.slo import EXIT_SLO_FAILED, judge_all, verdicts_json
    from loadgen.results.summary import stage_histogram, write_outputs

    verdicts = judge_all(summary, slos)
    summary["slo"] = verdicts_json(verdicts)
    if out is not None:
        write_outputs(summary, stage_histogram(summary, "end_to_end"), out)
    if json_out:
        print(json.dumps(summary, indent=2, ensure_ascii=True))
    else:
        print_summary(summary)
        if summary.get("llm"):
            from console.llm_view import print_llm

            print_llm(summary)
        if verdicts:
            print_verdicts(verdicts)
        if out is not None:
            agents = ", agents/<i>/summary.json" if summary.get("agents") else ""
            print(f"results in {safe(str(out), None)}/ (summary.json, latency.hlog, end_to_end.hgrm, hlog/{agents})")
    if junit is not None:
        from loadgen.results.junit import write_junit

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

    host_port(master, "--master")
    env = dict(os.environ)
    if broker is not None:
        resolve_broker(broker)  # a bad URL or unknown profile fails here, not at the first run
        env["QDECK_BROKER"] = broker
    os.execve(sys.executable, [sys.executable, "-m", "loadgen.distributed.locust_nodes", "agent", "--master", master],
              env)


@app.command("gate")
@cli_errors
def gate(
    summary_file: Path = typer.Argument(..., help="A summary.json written by 'qdeck load run --out'."),
    slo: list[str] = typer.Option([], "--slo", help="SLO to judge (repeatable; default: the SLOs the run was "
                                                    "judged by, saved in its summary); see 'qdeck load run --help'."),
    junit: Path | None = typer.Option(None, "--junit", help="Write the verdicts as JUnit XML."),
    json_out: bool = typer.Option(False, "--json", help="Verdicts as JSON."),
) -> None:
    """Re-judge a saved run against SLOs (given, or those saved with the run). Exit 0 pass, 99 fail, 2 usage
    errors."""
    from console.load_view import print_verdicts
    from loadgen.results.slo import EXIT_SLO_FAILED, judge_all, parse_slos, saved_slos, verdicts_json
    from loadgen.results.summary import load_summary

    try:
        summary = load_summary(summary_file)
        slos = parse_slos(slo) if slo else saved_slos(summary)
        if not slos:
            raise fail(f"{summary_file} holds no SLOs: give at least one --slo (e.g. --slo 'p99<250ms')")
        verdicts = judge_all(summary, slos)
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    if json_out:
        print(json.dumps(verdicts_json(verdicts), indent=2, ensure_ascii=True))
    else:
        print_verdicts(verdicts)
    if junit is not None:
        from loadgen.results.junit import write_junit

        write_junit(junit, "qdeck.slo", [(v.slo.text, v.ok, f"{v.slo.text}: actual {v.actual}") for v in verdicts])
    raise typer.Exit(EXIT_SLO_FAILED if any(not v.ok for v in verdicts) else 0)


app.command("compare")(cmd_load_compare.compare)
app.command("search")(cmd_load_search.search)
app.command("report")(cmd_load_report.report)
app.command("plan")(cmd_load_plan.plan)
