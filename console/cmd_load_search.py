"""``qdeck load search``: find the highest open-loop rate λ* (``max_rate``) at which every SLO holds.

The search itself is ``loadgen.run.search``; this module parses the options (through the same plan builder as
``load run``), prints one line per probe as it ends, the latency-against-rate table and λ*, and writes search.json.
Exit codes: 0 a rate held (λ* found), 99 not even the lowest probe held, 2 usage or connection errors.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from console.runner import broker_option, cli_errors, fail, finite, print_error
from loadgen.errors import LoadgenError
from probes import ProbeError, resolve_broker

if TYPE_CHECKING:
    from loadgen.run.search import ProbeOutcome, SearchOutcome, SearchSpec, Trend


class SearchSchedule(enum.StrEnum):
    constant = "constant"
    poisson = "poisson"


@cli_errors
def search(
    broker: str | None = broker_option(),
    queue: str | None = typer.Option(None, "--queue", "-q", help="Request queue / stream / topic."),
    slo: list[str] = typer.Option([], "--slo", help="An SLO every passing probe must hold, e.g. 'p99<250ms', "
                                                    "'errors<0.1%' (repeatable; at least one, here or in --plan)."),
    plan: Path | None = typer.Option(None, "--plan", "-p", help="A 'load run' plan file (queue, broker, payload, "
                                                                "timeout, SLOs ...); options given here win."),
    start: float | None = typer.Option(None, "--start", callback=finite,
                                       help="First rate probed, requests/s (default: the plan's rate, else 10)."),
    max_rate: float | None = typer.Option(None, "--max-rate", callback=finite,
                                          help="Highest rate probed, requests/s (default 200,000: one generator's "
                                               "limit)."),
    min_rate: float | None = typer.Option(None, "--min-rate", callback=finite,
                                          help="When --start fails, halve down to this rate (default --start / 8)."),
    probe: str = typer.Option("10s", "--probe", help="Measured time of each probe (1s to 1h)."),
    warmup: str | None = typer.Option(None, "--warmup", help="Sent before each probe, not measured (default 1s)."),
    timeout: str | None = typer.Option(None, "--timeout", help="No reply after this long = timeout (10s)."),
    precision: str = typer.Option("5%", "--precision",
                                  help="Stop when the lowest failing rate is within this of the highest passing "
                                       "one (5%)."),
    payload_size: int | None = typer.Option(None, "--payload-size", min=0, help="Payload characters (64)."),
    schedule: SearchSchedule = typer.Option(SearchSchedule.constant, "--schedule", "-s",
                                            help="Arrivals within each probe."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write search.json (every probe, its summary and "
                                                              "verdict) and each probe's run in probe-NN-RATE/."),
    json_out: bool = typer.Option(False, "--json", help="Print search.json (every probe and max_rate) instead of "
                                                        "tables."),
    quiet: bool = typer.Option(False, "--quiet", help="No line per probe while the search runs."),
) -> None:
    """Find the highest open-loop rate (λ*, max_rate) at which every SLO holds.

    Probes double the rate from --start, then bisect to --precision. A probe passes when its SLOs hold, the
    generator kept up (schedule-lag p99 at most 10 ms, nothing unsent) and the backlog is not growing: neither the
    requests in flight nor the median queue wait, sampled each interval, has a slope whose 95 % confidence interval
    lies above 0 with a material growth (3 requests and 2 % of those sent; 20 ms of queue wait a second). A probe
    whose backlog clearly grows stops early; each drains (its requests answered or timed out) before the next.

    Exit 0 when a rate held (λ* found), 99 when not even the lowest probe held, 2 on usage or connection errors.
    """
    from loadgen import aio
    from loadgen.run.search import run_search

    spec, broker_spec = build_search(broker=broker, queue=queue, slo=slo, plan=plan, start=start, max_rate=max_rate,
                                     min_rate=min_rate, probe=probe, warmup=warmup, timeout=timeout,
                                     precision=precision, payload_size=payload_size, poisson=schedule == "poisson")
    target = resolve_broker(broker_spec)
    if out is not None:
        _writable_dir(out)
    from console.output import stderr_console
    from console.safe_text import safe

    err = stderr_console()

    def started() -> None:  # once connected: a broker that cannot be reached is the one line on stderr
        if not quiet:
            slos = ", ".join(s.text for s in spec.slos)
            err.print(safe(f"qdeck load search: {spec.run.queue} on {target.display}, {spec.probe_s:g} s "
                           f"{'poisson' if spec.poisson else 'constant'} probes from {spec.start:g}/s (at most "
                           f"{spec.ceiling:g}/s, at least {spec.lowest:g}/s, to ±{spec.precision * 100:g} %), "
                           f"warm-up {spec.run.warmup_s:g} s; SLOs {slos}", None), soft_wrap=True)

    def on_probe(p: ProbeOutcome) -> None:
        if not quiet:
            err.print(safe(probe_line(p), None), soft_wrap=True)

    try:
        outcome = aio.run(run_search(target, spec, out=out, on_probe=on_probe, started=started))
    except ProbeError as exc:
        from probes.redact import redact_text

        raise ProbeError(redact_text(str(exc), target.secrets)) from None
    raise typer.Exit(report(outcome, out=out, json_out=json_out))


def build_search(*, broker: str | None, queue: str | None, slo: list[str], plan: Path | None, start: float | None,
                 max_rate: float | None, min_rate: float | None, probe: str, warmup: str | None, timeout: str | None,
                 precision: str, payload_size: int | None, poisson: bool) -> tuple[SearchSpec, str | None]:
    """The search and its broker from the options and the plan, through ``load run``'s plan builder (so durations,
    SLOs, payloads and plan files are read by one set of rules); bad input is qdeck's one error line, exit 2."""
    from loadgen.run.plan import PlanInput, build_plan, read_plan_file
    from loadgen.run.schedules import MAX_GENERATOR_RATE
    from loadgen.run.search import DEFAULT_START, SearchSpec, check_probe, check_start
    from loadgen.units import parse_duration

    try:
        probe_s = parse_duration(probe)
    except ValueError as exc:
        raise fail(f"--probe: {exc}") from None
    share = parse_precision(precision)
    try:
        check_probe(probe_s)
        if start is not None:
            check_start(start)
        doc = read_plan_file(plan) if plan else {}
        sched = doc.get("schedule")
        plan_rate = (isinstance(sched, dict) and "rate" in sched) or "rate" in doc
        if start is None and not plan_rate:
            start = DEFAULT_START
        opts = PlanInput(broker=broker, queue=queue, rate=start, duration=f"{probe_s!r}s", warmup=warmup,
                         timeout=timeout, schedule="poisson" if poisson else "constant", payload_size=payload_size,
                         slos=list(slo))
        if warmup is None and "warmup" not in doc:
            opts.warmup = "1s"
        built = build_plan(opts, doc, source=str(plan) if plan else None)
        if built.llm is not None:
            raise fail(f"plan {plan}: a search does not send LLM-shaped load (input_tokens, output_tokens, dataset, "
                       "max_tokens, objectives): use the plan with 'qdeck load run'")
        rate = float(getattr(built.spec.schedule, "rate", DEFAULT_START))
        spec = SearchSpec(run=built.spec, slos=tuple(built.slos), start=rate,
                          ceiling=max_rate if max_rate is not None else MAX_GENERATOR_RATE, floor=min_rate,
                          precision=share, probe_s=probe_s, poisson=poisson)
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    return spec, built.broker


def parse_precision(text: str) -> float:
    """``5%`` or ``5`` (percent) as a share; a usage error otherwise."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise fail(f"--precision {text!r} is not a percentage (e.g. 5%)") from None
    if not math.isfinite(value) or not 0 < value <= 50:
        raise fail(f"--precision must be above 0 % and at most 50 %, not {text!r}")
    return value / 100


def _writable_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise fail(f"--out: {str(out)!r} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"--out: cannot create {str(out)!r}: {exc.strerror}") from None


def probe_line(p: ProbeOutcome) -> str:
    """One probe as the live view prints it: rate, verdict, why, latency, schedule lag, backlog slope ± CI."""
    s = p.summary
    e2e = s["stages"]["end_to_end"]
    p99 = _ms(e2e, "p99", float(s.get("timeout_s", 0.0)))
    head = f"probe {p.index:2d}  {p.rate:>10,.2f}/s  {'ok  ' if p.ok else 'FAIL'}"
    figures = (f"achieved {s['rates']['achieved']:,.1f}/s  p99 {p99}  lag p99 "
               f"{s['generator']['schedule_lag_p99_ms']:.1f} ms  {p.backlog_text()}")
    rest = [w for w in p.why if not w.startswith("backlog")] + (["stopped early"] if p.stopped_early else [])
    return f"{head}  {figures}" + (f"  — {'; '.join(rest)}" if rest else "")


def _ms(entry: dict[str, Any], stat: str, timeout_s: float) -> str:
    value = entry.get(f"{stat}_ms")
    if value is None:
        return "-"
    if stat in entry.get("at_least", ()):
        return f"≥ {timeout_s:g} s"
    return f"{value:,.1f} ms"


def report(outcome: SearchOutcome, *, out: Path | None, json_out: bool) -> int:
    """Print the search (JSON, or the latency-against-rate table and λ*); returns the exit code (0 or 99)."""
    from console.output import stdout_console
    from console.safe_text import json_text, safe
    from loadgen.results.slo import EXIT_SLO_FAILED

    code = 0 if outcome.max_rate is not None else EXIT_SLO_FAILED
    if json_out:
        print(json_text(outcome.document()))
    else:
        console = stdout_console()
        console.print(rate_table(outcome))
        for line in conclusion(outcome):
            console.print(line, soft_wrap=True)
        if out is not None:
            print(f"results in {safe(str(out), None)}/ (search.json, probe-NN-RATE/ per probe)")
    if code:
        print_error("no rate held its SLOs: not even the lowest probe passed")
    return code


def rate_table(outcome: SearchOutcome) -> Any:
    """Latency against rate: every probe, in rate order."""
    from rich.table import Table
    from rich.text import Text

    from console.safe_text import safe

    t = Table(title=safe(f"qdeck load search — {outcome.spec.run.queue} on {outcome.broker}: latency against rate",
                         None), title_justify="left", show_edge=False)
    for col in ("rate/s", "achieved/s", "p50", "p99", "queue_wait p99", "lag p99", "in flight /s (95% CI)",
                "queue wait ms/s (95% CI)", "result"):
        t.add_column(col, justify="left" if "CI" in col or col == "result" else "right")
    for p in sorted(outcome.probes, key=lambda q: (q.rate, q.index)):
        s = p.summary
        timeout_s = float(s.get("timeout_s", 0.0))
        verdict = Text("ok", style="green") if p.ok else Text("FAIL: " + ", ".join(p.failures), style="bold red")
        t.add_row(f"{p.rate:,.2f}", f"{s['rates']['achieved']:,.1f}", _ms(s["stages"]["end_to_end"], "p50", timeout_s),
                  _ms(s["stages"]["end_to_end"], "p99", timeout_s), _ms(s["stages"]["queue_wait"], "p99", timeout_s),
                  f"{s['generator']['schedule_lag_p99_ms']:.1f} ms", _slope(p.backlog), _slope(p.queue_wait), verdict)
    return t


def _slope(trend: Trend) -> str:
    if not math.isfinite(trend.half_width):
        return "-"
    return f"{trend.slope:+.2f} ({trend.low:+.2f} to {trend.high:+.2f})"


def conclusion(outcome: SearchOutcome) -> list[str]:
    """λ* and what bounds it, in words."""
    from console.safe_text import safe

    spec = outcome.spec
    lines = []
    slos = ", ".join(s.text for s in spec.slos)
    above = outcome.probe_at(outcome.failed_rate)
    if outcome.max_rate is None:
        why = "; ".join(above.why) if above is not None else "no probe ran"
        lines.append(f"max rate (λ*): none — the lowest probe, {outcome.failed_rate or spec.lowest:,.2f}/s, failed: "
                     f"{why}")
    elif above is None:
        lines.append(f"max rate (λ*): at least {outcome.max_rate:,.2f}/s — the ceiling (--max-rate) held every SLO "
                     f"({slos}) with no backlog growing; raise --max-rate to search higher")
    else:
        lines.append(f"max rate (λ*): {outcome.max_rate:,.2f}/s — the highest rate that held every SLO ({slos}), "
                     f"with the generator on time and no backlog growing; {above.rate:,.2f}/s failed: "
                     f"{'; '.join(above.why)}")
        lines.append(f"the limit lies between {outcome.max_rate:,.2f}/s and {above.rate:,.2f}/s "
                     f"(±{spec.precision * 100:g} %)")
        if above.failures == ["generator"]:
            lines.append("the probe above failed only because the load generator fell behind: λ* is this "
                         "generator's limit, not the system's (spread the load with agents to search higher)")
    return [safe(line, None) for line in lines]
