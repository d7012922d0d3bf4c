"""How ``qdeck check`` says its findings: a Nagios plugin's first line (status, counts, performance data), a table,
and a JSON document. Every broker-supplied string passes the one sanitiser."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from console.health.catalog import RULES, fmt_figure
from console.health.model import SEVERITY, Finding, Level, worst
from console.safe_text import safe

NAGIOS_STATUS = {Level.OK: "OK", Level.WARN: "WARNING", Level.CRIT: "CRITICAL", Level.UNKNOWN: "UNKNOWN"}
STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.CRIT: "bold red", Level.UNKNOWN: "magenta"}
PERFDATA_FIGURES = 20  # figures of non-OK findings in the performance data, worst first


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first (CRIT, UNKNOWN, WARN, OK), then by broker, queue, group and rule."""
    return sorted(findings, key=lambda f: (-SEVERITY[f.level], f.broker, f.queue or "", f.group or "", f.rule))


def counts(findings: Iterable[Finding]) -> Counter[Level]:
    return Counter(f.level for f in findings)


def status_line(findings: Sequence[Finding]) -> str:
    """``QDECK CRITICAL - 2 critical, 1 warning | critical=2;;;0 ...``: what Nagios shows, then its perfdata."""
    level = worst(findings)
    n = counts(findings)
    said = [f"{n[lv]} {word}" for lv, word in ((Level.CRIT, "critical"), (Level.UNKNOWN, "unknown"),
                                                 (Level.WARN, "warning")) if n[lv]]
    if not said:
        said = [f"{n[Level.OK]} finding(s) OK"]
    first = next((f for f in ordered(findings) if f.level is not Level.OK), None)
    if first is not None:
        said.append(_where(first) + ": " + first.summary)
    perf = [f"{word}={n[lv]};;;0" for lv, word in ((Level.CRIT, "critical"), (Level.WARN, "warning"),
                                                   (Level.UNKNOWN, "unknown"), (Level.OK, "ok"))]
    perf += [_perf(f) for f in ordered(findings)[:PERFDATA_FIGURES] if f.level is not Level.OK and f.value is not None]
    return safe(f"QDECK {NAGIOS_STATUS[level]} - {', '.join(said)} | {' '.join(perf)}", None)


def _where(f: Finding) -> str:
    parts = [f.broker] + ([f.queue] if f.queue else []) + ([f"group {f.group}"] if f.group else [])
    return " ".join(parts) + f" {f.rule}"


def _perf(f: Finding) -> str:
    """One Nagios performance datum: ``'label'=value[unit];warn;crit`` (a quote in the label doubled, ``=``
    replaced: the format has no other escape)."""
    label = "/".join(p for p in (f.broker, f.queue, f.group, f.rule) if p).replace("'", "''").replace("=", "_")
    info = RULES.get(f.rule)
    unit = "s" if info is not None and info.unit == "seconds" else ""
    warn = crit = ""
    if f.threshold is not None:  # the threshold crossed, in its column
        if f.level is Level.CRIT:
            crit = f"{f.threshold:g}"
        else:
            warn = f"{f.threshold:g}"
    return f"'{label}'={f.value:g}{unit};{warn};{crit}"


def findings_table(findings: Sequence[Finding]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("LEVEL", "BROKER", "QUEUE", "GROUP", "RULE", "VALUE", "THRESHOLD", "SUMMARY"):
        table.add_column(col, justify="right" if col in ("VALUE", "THRESHOLD") else "left", overflow="fold")
    for f in ordered(findings):
        unit = RULES[f.rule].unit if f.rule in RULES else "messages"
        table.add_row(Text(str(f.level), style=STYLE[f.level]), Text(safe(f.broker)), Text(safe(f.queue or "-")),
                      Text(safe(f.group or "-")), f.rule,
                      "-" if f.value is None else fmt_figure(f.value, unit),
                      "-" if f.threshold is None else fmt_figure(f.threshold, unit),
                      Text(safe(f.summary, 400), style="dim" if f.level is Level.OK else ""))
    return table


def finding_doc(f: Finding) -> dict[str, Any]:
    return {"broker": f.broker, "queue": f.queue, "group": f.group, "rule": f.rule, "level": str(f.level),
            "value": f.value, "threshold": f.threshold, "summary": f.summary}


def check_document(findings: Sequence[Finding], brokers: list[dict[str, Any]], rules: str,
                   window_s: float) -> dict[str, Any]:
    level = worst(findings)
    n = counts(findings)
    return {"status": str(level), "exit_code": int(level), "rules": rules, "window_s": window_s,
            "counts": {str(lv): n[lv] for lv in Level}, "brokers": brokers,
            "findings": [finding_doc(f) for f in ordered(findings)]}
