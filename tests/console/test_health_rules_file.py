"""The rules file: defaults, overrides, "off", durations, and strict keys; bad input through the real CLI is one line
on stderr and exit 2 (which Nagios shows as CRITICAL)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from console.health.catalog import RULES, Thresholds
from console.health.rules_file import default_rules, load_rules, parse_rules
from probes.errors import ConfigError
from tests.cli import qdeck


def rules(text: str) -> object:
    return parse_rules(tomllib.loads(text), "test.toml")


def test_defaults_without_a_file() -> None:
    r = default_rules()
    assert load_rules(None) == r and r.source == "built-in defaults"
    assert r.thresholds("lag", "b", "q") == Thresholds(1000, 10000)
    assert r.thresholds("drain_time", "b", "q") == Thresholds(300, 1800)
    assert r.thresholds("offset_before_log_start", "b", "t", "g") == Thresholds(None, 1)
    assert set(r.defaults) == set(RULES)


def test_defaults_table_shorthands_durations_and_matching(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("""
[defaults]
drain_time = { warn = "90s", crit = "1h" }
node_alarm = "warn"
dlq_growing = "off"
[[queue]]
match = "orders*"
lag = { warn = 5 }
[[queue]]
match = "ORDERS.eu"
group = "billing"
lag = "off"
[[queue]]
broker = "staging-*"
node_alarm = "off"
""")
    r = load_rules(path)
    assert r.source == str(path)
    assert r.thresholds("drain_time", "b", "q") == Thresholds(90, 3600)
    assert r.thresholds("node_alarm", "prod") == Thresholds(1, None)
    assert r.thresholds("node_alarm", "staging-1") is None  # broker-only entry applies to the broker itself
    assert r.thresholds("dlq_growing", "b", "q") is None
    assert r.thresholds("lag", "b", "orders.us") == Thresholds(5, None)  # the table replaces the rule whole
    assert r.thresholds("lag", "b", "orders.eu", "billing") is None  # later entry wins; case-insensitive glob
    assert r.thresholds("lag", "b", "orders.eu", "shipping") == Thresholds(5, None)
    assert r.thresholds("lag", "b", "orders.eu") == Thresholds(5, None)  # a queue row has no group
    assert r.thresholds("lag", "b", None) == Thresholds(1000, 10000)  # match never matches a broker-level subject


@pytest.mark.parametrize(("text", "message"), [
    ("[defaults]\nlagg = { warn = 1 }", "unknown key 'lagg' in [defaults] (did you mean 'lag'?)"),
    ("[default]\nlag = { warn = 1 }", "unknown key 'default' (did you mean 'defaults'?)"),
    ("[[queue]]\nmatch = 'a'\nlag = { warn = 1, crti = 2 }", "unknown key 'crti' in [[queue]] #1 lag"),
    ("[[queue]]\nmach = 'a'\nlag = { warn = 1 }", "unknown key 'mach' in [[queue]] #1 (did you mean 'match'?)"),
    ("[[queue]]\nlag = { warn = 1 }", "[[queue]] #1 names no queue"),
    ("[[queue]]\nmatch = 'a'", "[[queue]] #1 sets no rule"),
    ("[defaults]\nlag = { warn = 10, crit = 5 }", "crit (5) is below warn (10)"),
    ("[defaults]\nlag = 'warn'", "lag in [defaults] is 'warn'"),
    ("[defaults]\nlag = {}", "gives neither warn nor crit"),
    ("[defaults]\nlag = { warn = -1 }", "at least 0"),
    ("[defaults]\nlag = { warn = true }", "must be a number (messages)"),
    ("[defaults]\nlag = { warn = '5m' }", "must be a number (messages)"),
    ("[defaults]\ndrain_time = { warn = 'soon' }", "'soon' is not a duration"),
    ("queue = 3", "queue must be an array of tables"),
])
def test_bad_rules_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        rules(text)
    assert message in str(err.value)


def test_bad_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults\n")
    with pytest.raises(ConfigError, match=r"rules file .*bad\.toml: it is not valid TOML"):
        load_rules(bad)


@pytest.mark.parametrize(("args", "message"), [
    (["--rules", "RULES"], "unknown key 'no_consumer' in [[queue]] #1 (did you mean 'no_consumers'?)"),
    (["--rules", "MISSING"], "cannot read it"),
    (["--window", "soon"], "--window: 'soon' is not a duration"),
    (["--window", "2h"], "--window '2h' must be more than 0 and at most 60 minutes"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[[queue]]\nmatch = 'x'\nno_consumer = 'off'\n")
    args = [str(path) if a == "RULES" else str(tmp_path / "missing.toml") if a == "MISSING" else a for a in args]
    r = qdeck("check", "-b", "memory://health-bad-input", *args)
    assert r.code == 2, r.all
    assert r.out == "" and len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    assert r.err.startswith("qdeck: ") and message in r.err
