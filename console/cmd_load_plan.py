"""``qdeck load plan``: the capacity model (``loadgen.results.capacity``) fitted to saved runs, checked against them.

Exit codes: 0 a plan was printed, 2 usage errors (unreadable runs, runs of different workers, nothing to fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from console.output import emit_json, stdout_console
from console.runner import cli_errors, fail
from console.safe_text import safe
from loadgen.errors import LoadgenError, ReportError
from loadgen.results import capacity as cap
from loadgen.results.capacity import Policy, Prediction, ServiceFit

RATE_HELP = "Predict at this rate, requests/s (repeatable; the runs' own rates are always predicted)."


def _finite_rates(values: list[float]) -> list[float]:
    for v in values:
        if not (math.isfinite(v) and 0 < v <= 10_000_000):
            raise typer.BadParameter(f"{v:g} is not a rate (a number of requests/s above 0)")
    return values


def _finite(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 < value <= 10_000_000):
        raise typer.BadParameter(f"{value:g} is not a rate (a number of requests/s above 0)")
    return value


@cli_errors
def plan(
    run_dir: Path = typer.Argument(..., help="A run's directory from 'qdeck load run --out' (or its summary.json)."),
    rate: list[float] = typer.Option([], "--rate", "-r", callback=_finite_rates, help=RATE_HELP),
    measured: list[Path] = typer.Option([], "--measured", "-m",
                                        help="Another run of the same worker (a directory or summary.json): its rate "
                                             "is predicted and its figures shown beside (repeatable); its service "
                                             "times join the fit."),
    target_rate: float | None = typer.Option(None, "--target-rate", callback=_finite,
                                             help="With --target-p99: the workers needed at this rate."),
    target_p99: str | None = typer.Option(None, "--target-p99",
                                          help="p99 of the time in the worker (queue + batch wait + service) to "
                                               "meet at --target-rate, e.g. 250ms."),
    max_batch: int | None = typer.Option(None, "--max-batch", min=1, max=100_000,
                                         help="The worker's --max-batch (default: what the run's replies say)."),
    max_wait_ms: float | None = typer.Option(None, "--max-wait-ms", min=0, max=60_000,
                                             help="The worker's --max-wait-ms (default: from the run)."),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1, max=1_000,
                                           help="The worker's --concurrency, model slots (default: from the run)."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, max=100_000,
                                       help="Worker processes that served the runs (summaries do not record it; "
                                            "default 1)."),
    overhead_ms: float | None = typer.Option(None, "--overhead-ms", min=0, max=60_000,
                                             help="The worker loop's own time per step, ms (default: fitted to the "
                                                  "runs' batch sizes)."),
    json_out: bool = typer.Option(False, "--json", help="The plan as JSON."),
) -> None:
    """Fit the worker's service time against batch size from saved runs, predict queue and batch waits (mean, p99)
    at given rates, and print the measured figure and the error beside every prediction a run measured. With
    --target-rate and --target-p99: the fewest workers that meet the p99. Exit 0, or 2 on bad input."""
    from loadgen.units import parse_duration

    if (target_rate is None) != (target_p99 is None):
        raise fail("--target-rate and --target-p99 go together (e.g. --target-rate 500 --target-p99 250ms)")
    target = None
    if target_rate is not None and target_p99 is not None:
        try:
            p99_s = parse_duration(target_p99)
        except ValueError as exc:
            raise fail(f"--target-p99: {exc}") from None
        if not (math.isfinite(p99_s) and 0 < p99_s <= 86_400):
            raise fail(f"--target-p99 {target_p99!r} must be a duration above 0 and at most a day")
        target = (target_rate, p99_s * 1000)
    try:
        docs = [(str(p), _summary(p)) for p in (run_dir, *measured)]
        report = plan_report(docs, rate, Overrides(max_batch, max_wait_ms, concurrency, workers, overhead_ms),
                             target)
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a summary.json edited out of shape
        raise fail(f"a summary given is not a complete qdeck summary.json ({type(exc).__name__}: {exc})") from None
    if json_out:
        emit_json(_jsonable(report))
    else:
        _print(report)


@dataclass(frozen=True, slots=True)
class Overrides:
    """The batching policy as given on the command line (None: from the runs)."""

    max_batch: int | None = None
    max_wait_ms: float | None = None
    concurrency: int | None = None
    workers: int | None = None
    overhead_ms: float | None = None


def plan_report(docs: list[tuple[str, dict[str, Any]]], rates: list[float], given: Overrides,
                target: tuple[float, float] | None) -> dict[str, Any]:
    """The plan as plain data: the fitted service line, the policy, the model, one row per rate (the runs' own,
    with what they measured, and ``rates``), the workers for ``target`` (rate, p99 ms) and notes."""
    policy = _policy(docs, given)
    notes: list[str] = []
    fit = _fit(docs, policy, notes)
    policy = _overhead(docs, fit, policy, given, notes)
    rows = []
    for name, doc in docs:
        row = _measured_row(name, doc, fit, policy, notes)
        if row is not None:
            rows.append(row)
    rows += [_row(cap.predict(fit, policy, r), None, None) for r in rates]
    rows.sort(key=lambda r: r["rate"])
    if any(r["measured"] for r in rows):
        notes.append("measured 'in worker p99' is actual send → reply received: it adds the reply's transit to "
                     "the time in the worker")
    if policy.workers > 1 or given.workers is None:
        notes.append(f"worker processes: {policy.workers}" + (" (the summaries do not record it: --workers)"
                                                              if given.workers is None else ""))
    return {"service": {"a_ms": fit.a_ms, "b_ms": fit.b_ms, "spread_ms": fit.spread_ms, "r2": fit.r2,
                        "sizes": fit.sizes, "batches": fit.batches, "source": fit.source},
            "policy": {"max_batch": policy.max_batch, "max_wait_ms": policy.max_wait_ms,
                       "concurrency": policy.concurrency, "workers": policy.workers,
                       "overhead_ms": policy.overhead_ms},
            "capacity_rps": cap.capacity(fit, policy), "model": cap.statement(policy), "rows": rows,
            "target": _target(fit, policy, target) if target is not None else None, "notes": notes}


def _policy(docs: list[tuple[str, dict[str, Any]]], given: Overrides) -> Policy:
    label, first = docs[0]

    def profiles(doc: dict[str, Any]) -> list[str]:
        return sorted(str(k) for k in (doc.get("workers") or {}) if k != "unknown")

    for name, doc in docs[1:]:
        if profiles(doc) != profiles(first):
            theirs, ours = "; ".join(profiles(doc)) or "none named", "; ".join(profiles(first)) or "none named"
            raise ReportError(f"{name} is a run of other workers than {label} ({theirs} against {ours}): plan from "
                              "runs of one worker")
    base, why = cap.policy_from_summary(first)
    if base is None:
        if given.max_batch is None or given.max_wait_ms is None or given.concurrency is None:
            raise ReportError(f"{label}: {why}: give --max-batch, --max-wait-ms and --concurrency")
        base = Policy(given.max_batch, given.max_wait_ms, given.concurrency)
    return Policy(given.max_batch if given.max_batch is not None else base.max_batch,
                  given.max_wait_ms if given.max_wait_ms is not None else base.max_wait_ms,
                  given.concurrency if given.concurrency is not None else base.concurrency,
                  given.workers if given.workers is not None else 1)


def _overhead(docs: list[tuple[str, dict[str, Any]]], fit: ServiceFit, policy: Policy, given: Overrides,
              notes: list[str]) -> Policy:
    if given.overhead_ms is not None:
        return replace(policy, overhead_ms=given.overhead_ms)
    runs = [(float(m["rate"]), float(m["batch"])) for _name, doc in docs if _comparable(doc)
            and (m := cap.measured(doc)) is not None and m["rate"] and m["batch"]]
    over = cap.estimate_overhead(fit, policy, runs)
    if over is None:
        return policy
    notes.append(f"worker loop overhead {over:.2f} ms (time the loop takes per step outside the service stamps: a "
                 "broker round trip), fitted to the runs' mean batch sizes; --overhead-ms sets it")
    return replace(policy, overhead_ms=over)


def _comparable(doc: dict[str, Any]) -> bool:
    """A run whose arrivals were a steady Poisson (or constant) stream the model can be checked against."""
    kind = (doc.get("schedule") or {}).get("kind")
    return kind in ("poisson", "constant") and not doc.get("closed_loop")


def _fit(docs: list[tuple[str, dict[str, Any]]], policy: Policy, notes: list[str]) -> ServiceFit:
    sums: dict[int, tuple[int, float, float]] = {}
    lacking = []
    for name, doc in docs:
        found = cap.service_sums(doc)
        if not found:
            lacking.append(name)
        for size, (n, total, squares) in found.items():
            old = sums.get(size, (0, 0.0, 0.0))
            sums[size] = (old[0] + n, old[1] + total, old[2] + squares)
    if sums:
        fit = cap.fit_service(sums)
        if lacking:
            notes.append(f"no service_by_batch record in {', '.join(lacking)}: left out of the fit")
    else:
        means = [m for _name, doc in docs if (m := cap.run_means(doc)) is not None]
        if not means:
            raise ReportError("nothing to fit: the runs have no replies")
        if len({round(m[0], 3) for m in means}) < 2 and policy.max_batch > 1:
            raise ReportError("cannot fit service time against batch size: the runs hold no service_by_batch "
                              "record, and fewer than two mean batch sizes; give runs at other rates with "
                              "--measured")
        fit = cap.fit_means(means)
        notes.append("the runs hold no service_by_batch record: the service line is fitted over their mean "
                     "service time against their mean batch size")
    if fit.sizes < 2 and policy.max_batch > 1:
        size = next(iter(sums), 1)
        raise ReportError(f"cannot fit service time against batch size: every batch in the runs had size {size}; "
                          "add a run at a higher rate with --measured")
    if fit.mean_ms(1) <= 0 or fit.mean_ms(policy.max_batch) <= 0:
        raise ReportError(f"the fitted service line ({fit.a_ms:.3f} ms + {fit.b_ms:.3f} ms × batch) is not "
                          "positive over the batch sizes: the runs do not support a plan")
    return fit


def _measured_row(name: str, doc: dict[str, Any], fit: ServiceFit, policy: Policy,
                  notes: list[str]) -> dict[str, Any] | None:
    seen = cap.measured(doc)
    kind = (doc.get("schedule") or {}).get("kind", "?")
    if seen is None or seen["rate"] is None or not seen["rate"] > 0:
        notes.append(f"{name}: no replies: nothing measured to compare")
        return None
    if not _comparable(doc):
        notes.append(f"{name}: a {kind} schedule has no single Poisson rate: not compared")
        return None
    if kind == "constant":
        notes.append(f"{name}: evenly spaced requests (constant schedule); the model assumes Poisson arrivals and "
                     "predicts longer waits than even spacing gives")
    counts = doc.get("counts") or {}
    if counts.get("timeouts") or counts.get("errors"):
        notes.append(f"{name}: {counts.get('errors', 0):,} errors (of which {counts.get('timeouts', 0):,} timeouts): "
                     "its figures leave them out")
    if (doc.get("generator") or {}).get("behind"):
        notes.append(f"{name}: the load generator fell behind: its arrivals were not the schedule's")
    return _row(cap.predict(fit, policy, float(seen["rate"])), seen, name)


def _row(pred: Prediction, seen: dict[str, float | None] | None, run: str | None) -> dict[str, Any]:
    figures = {"rate": pred.rate, "load": pred.load, "busy": pred.busy, "batch": pred.batch, "queue_ms": pred.queue_ms,
               "batch_ms": pred.batch_ms, "wait_ms": pred.wait_ms, "wait_p99_ms": pred.wait_p99_ms,
               "in_worker_p99_ms": pred.in_worker_p99_ms}
    errors = None
    if seen is not None and pred.stable:
        errors = {k: 100 * (figures[k] / v - 1) if v else None for k, v in seen.items()
                  if k != "rate" and v is not None}
    return {**figures, "stable": pred.stable, "run": run, "measured": seen, "error_pct": errors}


def _target(fit: ServiceFit, policy: Policy, target: tuple[float, float]) -> dict[str, Any]:
    rate, p99 = target
    need = cap.workers_needed(fit, policy, rate, p99)
    out: dict[str, Any] = {"rate": rate, "p99_ms": p99, "workers": need, "why": None}
    if need is None:
        out["why"] = ("one batch alone takes longer" if fit.mean_ms(1) > p99 else
                      "the p99 stays above it however many workers share the rate")
        return out
    pred = cap.predict(fit, replace(policy, workers=need), rate)
    out.update(in_worker_p99_ms=pred.in_worker_p99_ms, load=pred.load, wait_ms=pred.wait_ms)
    return out


def _summary(path: Path) -> dict[str, Any]:
    from loadgen.results.summary import load_summary

    file = path / "summary.json" if path.is_dir() else path
    if not file.exists():
        raise ReportError(f"{path}: no summary.json there (give a directory from 'qdeck load run --out')")
    return load_summary(file)


def _jsonable(value: Any) -> Any:
    """Infinite and undefined figures (an unstable load) are null in JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def _err(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.1f} %"


def _print(report: dict[str, Any]) -> None:
    console = stdout_console()
    fit, pol = report["service"], report["policy"]
    r2 = f", R² {fit['r2']:.3f}" if fit["r2"] is not None else ""
    console.print(Text(safe(f"service: {fit['a_ms']:.3f} ms + {fit['b_ms']:.3f} ms × batch, spread "
                            f"{fit['spread_ms']:.3f} ms{r2} ({fit['source']}: {fit['sizes']} points, "
                            f"{fit['batches']:,.0f} batches)", None)))
    console.print(Text(safe(f"policy: max batch {pol['max_batch']}, max wait {pol['max_wait_ms']:g} ms, "
                            f"{pol['concurrency']} slot{'s' if pol['concurrency'] > 1 else ''} × {pol['workers']} "
                            f"worker{'s' if pol['workers'] > 1 else ''} → capacity "
                            f"{report['capacity_rps']:,.1f} requests/s", None)))
    console.print(Text(safe(f"model: {report['model']}", None)))
    t = Table(title="predicted (measured) — waits in ms, before inference starts", title_justify="left",
              show_edge=False)
    for col in ("rate/s", "load", "busy", "batch", "queue", "batch wait", "wait mean", "measured", "error",
                "wait p99", "in worker p99", "measured ", "error ", "run"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for row in report["rows"]:
        m = row["measured"] or {}
        err = row["error_pct"] or {}
        if not row["stable"]:
            t.add_row(f"{row['rate']:,.1f}", f"{row['load']:.2f}", *["-"] * 4,
                      Text("unstable", style="bold red"), _ms(m.get("wait_ms")), "-", "-", "-",
                      _ms(m.get("in_worker_p99_ms")), "-", safe(row["run"] or ""))
            continue
        batch = f"{row['batch']:.1f}" + (f" ({m['batch']:.1f})" if m.get("batch") is not None else "")
        t.add_row(f"{row['rate']:,.1f}", f"{row['load']:.2f}", f"{row['busy']:.2f}", batch, _ms(row["queue_ms"]),
                  _ms(row["batch_ms"]), _ms(row["wait_ms"]), _ms(m.get("wait_ms")), _err(err.get("wait_ms")),
                  _ms(row["wait_p99_ms"]), _ms(row["in_worker_p99_ms"]), _ms(m.get("in_worker_p99_ms")),
                  _err(err.get("in_worker_p99_ms")), safe(row["run"] or ""))
    console.print(t)
    target = report.get("target")
    if target is not None:
        if target["workers"] is None:
            line = (f"target: no number of workers meets p99 {target['p99_ms']:g} ms at {target['rate']:,.1f}/s "
                    f"({target['why']})")
        else:
            slots = f"{pol['concurrency']} slot{'s' if pol['concurrency'] > 1 else ''} each"
            line = (f"target: {target['workers']} worker{'s' if target['workers'] > 1 else ''} ({slots}) meet "
                    f"p99 {target['p99_ms']:g} ms at {target['rate']:,.1f}/s: "
                    f"predicted p99 {_ms(target['in_worker_p99_ms'])} ms, load {target['load']:.2f}")
        console.print(Text(safe(line, None), style="bold"))
    for note in report["notes"]:
        console.print(Text(f"note: {safe(note, None)}", style="yellow"))
