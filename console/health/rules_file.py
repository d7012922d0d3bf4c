"""Health rule thresholds from a TOML file: built-in defaults, a ``[defaults]`` table that replaces some of them,
and ``[[queue]]`` overrides for the queues, groups and brokers whose names match.

```toml
[defaults]                                   # replaces the built-in thresholds of the rules it names
lag = { warn = 1000, crit = 10000 }          # messages
drain_time = { warn = "5m", crit = "30m" }   # seconds, or a duration ("90s", "5m", "2h")
missing_dead_letter_exchange = "crit"        # occurrence rules: "warn" / "crit" mean { warn = 1 } / { crit = 1 }

[[queue]]
match = "batch-*"                            # the queue / topic / stream name
lag = { warn = 100000, crit = 1000000 }
no_consumers = "off"                         # "off": this rule is not judged here

[[queue]]
match = "orders"
group = "billing"                            # only this consumer group's findings on it
broker = "prod-*"                            # only on the brokers whose label matches
pending_idle = { crit = 120 }
```

- Each rule takes ``{ warn = N, crit = N }`` (either or both; a figure at least N is WARN / CRIT), ``"off"``, or
  for the occurrence rules (``no_committed_offset``, ``offset_before_log_start``, ``node_alarm``,
  ``missing_dead_letter_exchange``) ``"warn"`` / ``"crit"``. A table replaces the rule's thresholds whole: a
  ``{ warn = 5 }`` override has no CRIT.
- ``match``, ``group`` and ``broker`` follow qdeck's one name filter (``--filter``): a glob when they hold
  ``* ? [``, else a substring; case-insensitive. An entry applies when every pattern it gives matches; it needs at
  least one. ``match`` and ``group`` never match a finding with no queue or no group (``node_alarm`` is about the
  broker: give it ``broker`` alone).
- Entries are read in file order and **the last entry that matches and names a rule wins** for that rule (put
  broad globs first, exceptions after, as in .gitignore); rules an entry does not name fall through to earlier
  entries, then ``[defaults]``, then the built-in thresholds.
- Unknown keys and rule names are errors that name the nearest valid one (``probes.strict_keys``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.health.catalog import RULES, RuleInfo, Thresholds
from console.queue_filter import name_matches
from loadgen.units import parse_duration
from probes.errors import ConfigError
from probes.strict_keys import ConfigFileError, check_keys, read_toml

Settings = Mapping[str, Thresholds | None]  # rule id -> thresholds; None: off
PATTERN_KEYS = ("match", "group", "broker")
TOP_KEYS = ("defaults", "queue")


@dataclass(frozen=True, slots=True)
class Override:
    settings: Settings
    match: str | None = None
    group: str | None = None
    broker: str | None = None

    def applies(self, broker: str, queue: str | None, group: str | None) -> bool:
        if self.broker is not None and not name_matches(broker, self.broker):
            return False
        if self.match is not None and (queue is None or not name_matches(queue, self.match)):
            return False
        return self.group is None or (group is not None and name_matches(group, self.group))


@dataclass(frozen=True)
class RuleSet:
    """Thresholds per rule: the defaults, and ``overrides`` in file order (the last that applies wins)."""

    defaults: Settings = field(default_factory=lambda: {r.id: r.default for r in RULES.values()})
    overrides: tuple[Override, ...] = ()
    source: str = "built-in defaults"  # the file the rules came from

    def thresholds(self, rule: str, broker: str, queue: str | None = None,
                   group: str | None = None) -> Thresholds | None:
        """The thresholds ``rule`` is judged by for this subject; None: the rule is off there."""
        for entry in reversed(self.overrides):
            if rule in entry.settings and entry.applies(broker, queue, group):
                return entry.settings[rule]
        return self.defaults.get(rule)


def default_rules() -> RuleSet:
    return RuleSet()


def load_rules(path: Path | None) -> RuleSet:
    """The rules in ``path`` (None: the built-in defaults); a bad file raises ``ConfigError`` naming it."""
    if path is None:
        return default_rules()
    try:
        doc = read_toml(path)
    except ConfigFileError as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None
    try:
        return parse_rules(doc, str(path))
    except ValueError as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None


def parse_rules(doc: Mapping[str, Any], source: str = "rules") -> RuleSet:
    """A ``RuleSet`` from a parsed TOML document; ``ValueError`` says what is wrong and where."""
    problem = check_keys(dict(doc), TOP_KEYS)
    if problem:
        raise ValueError(problem)
    defaults = dict(default_rules().defaults)
    table = doc.get("defaults", {})
    if not isinstance(table, dict):
        raise ValueError("[defaults] must be a table of rules")
    defaults.update(_settings(table, "[defaults]"))
    entries = doc.get("queue", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("queue must be an array of tables ([[queue]])")
    overrides = tuple(_override(e, f"[[queue]] #{n}") for n, e in enumerate(entries, start=1))
    return RuleSet(defaults=defaults, overrides=overrides, source=source)


def _override(entry: dict[str, Any], where: str) -> Override:
    problem = check_keys(entry, (*RULES, *PATTERN_KEYS), table=where)
    if problem:  # a misspelt key is said first: "mach" is more use than "names no queue"
        raise ValueError(problem)
    patterns: dict[str, str] = {}
    for key in PATTERN_KEYS:
        if key in entry:
            value = entry[key]
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} in {where} must be a non-empty string (a glob or a substring)")
            patterns[key] = value
    if not patterns:
        raise ValueError(f"{where} names no queue: give match = \"GLOB\" (or group / broker)")
    settings = _settings({k: v for k, v in entry.items() if k not in PATTERN_KEYS}, where, extra=PATTERN_KEYS)
    if not settings:
        raise ValueError(f"{where} sets no rule (rules: {', '.join(sorted(RULES))})")
    return Override(settings, **patterns)


def _settings(table: Mapping[str, Any], where: str, extra: tuple[str, ...] = ()) -> dict[str, Thresholds | None]:
    problem = check_keys(dict(table), (*RULES, *extra), table=where)
    if problem:
        raise ValueError(problem)
    return {rule: _thresholds(RULES[rule], value, where) for rule, value in table.items()}


def _thresholds(info: RuleInfo, value: Any, where: str) -> Thresholds | None:
    shorthand = '"off", "warn", "crit"' if info.flag else '"off"'
    if isinstance(value, str):
        if value == "off":
            return None
        if info.flag and value in ("warn", "crit"):
            return Thresholds(warn=1) if value == "warn" else Thresholds(crit=1)
        raise ValueError(f"{info.id} in {where} is {value!r}: give {{ warn = N, crit = N }} or {shorthand}")
    if not isinstance(value, dict):
        raise ValueError(f"{info.id} in {where} must be {{ warn = N, crit = N }} or {shorthand}")
    problem = check_keys(value, ("warn", "crit"), table=f"{where} {info.id}")
    if problem:
        raise ValueError(problem)
    if not value:
        raise ValueError(f"{info.id} in {where} gives neither warn nor crit (say \"off\" to turn it off)")
    warn, crit = (_number(info, value.get(k), f"{info.id}.{k} in {where}") for k in ("warn", "crit"))
    if warn is not None and crit is not None and crit < warn:
        raise ValueError(f"{info.id} in {where}: crit ({crit:g}) is below warn ({warn:g}); a larger figure is "
                         "worse")
    return Thresholds(warn=warn, crit=crit)


def _number(info: RuleInfo, value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and info.unit == "seconds":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        unit = "seconds or a duration such as \"5m\"" if info.unit == "seconds" else info.unit
        raise ValueError(f"{where} must be a number ({unit}), not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number of at least 0, not {value!r}")
    return float(value)
