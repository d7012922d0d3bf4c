"""``qdeck check`` against a real RabbitMQ: each queue rule driven to WARN or CRIT and back, with the exit codes;
the worst-level order across brokers; a user without the monitoring tag. The helpers here serve the other
test_check_* files too."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from console.health.catalog import RULES
from probes.rabbitmq.http import management_base_url
from tests.cli import Run, qdeck
from tests.rabbit import RabbitVhost

pytestmark = pytest.mark.rabbitmq
EXIT = {"OK": 0, "WARN": 1, "CRIT": 2, "UNKNOWN": 3}


# ---- helpers (test_check_redis_kafka.py and test_check_alarms.py use them too) -----------------------------------

def only_rule(tmp_path: Path, rule: str, thresholds: str | None = None, match: str | None = None) -> Path:
    """A rules file that judges ``rule`` alone (every other rule "off"), with ``thresholds`` when given; with
    ``match``, only on the queues that match (a shared broker holds other tests' queues too)."""
    lines = ["[defaults]"] + [f'{r} = "off"' for r in sorted(RULES) if r != rule or match is not None]
    if match is not None:
        default = RULES[rule].default
        assert default is not None
        given = (("warn", default.warn), ("crit", default.crit))
        table = thresholds or "{ " + ", ".join(f"{k} = {v:g}" for k, v in given if v is not None) + " }"
        lines += ["[[queue]]", f"match = {match!r}", f"{rule} = {table}"]
    elif thresholds is not None:
        lines.append(f"{rule} = {thresholds}")
    path = tmp_path / f"{rule}-{uuid.uuid4().hex[:6]}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def check(url: str, rules: Path, *extra: str) -> Run:
    return qdeck("check", "-b", url, "--rules", str(rules), "--json", *extra)


def until(run: Callable[[], Run], ok: Callable[[Run], bool], what: str, timeout: float = 40.0) -> Run:
    """Run ``run`` until ``ok`` holds of it (the management API's statistics trail the broker by up to 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        last = run()
        if ok(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last run: exit {last.code}, "
                                 f"{last.all[-3000:]}")
        time.sleep(0.3)


def exits(code: int, rule: str, level: str | None = None, queue: str | None = None) -> Callable[[Run], bool]:
    """The run exited ``code`` and its JSON has ``rule``'s finding (on ``queue``) at ``level``."""
    def ok(r: Run) -> bool:
        if r.code != code or not r.out.startswith("{"):
            return False
        found = [f for f in r.json()["findings"] if f["rule"] == rule and (queue is None or f["queue"] == queue)]
        return bool(found) and all(f["level"] == (level or next(k for k, v in EXIT.items() if v == code))
                                   for f in found)
    return ok


def finding(r: Run, rule: str, queue: str | None = None) -> dict[str, Any]:
    found = [f for f in r.json()["findings"] if f["rule"] == rule and (queue is None or f["queue"] == queue)]
    assert len(found) == 1, r.out
    return found[0]


def nagios(r: Run) -> str:
    return r.out.splitlines()[0]


# ---- queue rules on the shared broker (a throwaway vhost each) ---------------------------------------------------

def _publish(vhost: RabbitVhost, queue: str, n: int, **declare: Any) -> None:
    ch = vhost.channel()
    ch.queue_declare(queue, **declare)
    for _ in range(n):
        ch.basic_publish("", queue, b"x")
    ch.close()


def test_dlq_not_empty_warn_crit_and_back(vhost: RabbitVhost, tmp_path: Path) -> None:
    rules = only_rule(tmp_path, "dlq_not_empty", "{ warn = 1, crit = 3 }")
    ch = vhost.channel()
    ch.queue_declare("work.dlq")
    ch.queue_declare("work", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "work.dlq"})
    ch.close()
    ok = check(vhost.url, rules)
    assert ok.code == 0 and finding(ok, "dlq_not_empty", "work.dlq")["level"] == "OK", ok.all

    _publish(vhost, "work.dlq", 2)
    warn = until(lambda: check(vhost.url, rules), exits(1, "dlq_not_empty", "WARN", "work.dlq"), "a WARN")
    f = finding(warn, "dlq_not_empty", "work.dlq")
    assert (f["value"], f["threshold"], f["broker"]) == (2, 1, vhost.url.replace(":guest@", ":***@"))
    assert warn.json()["status"] == "WARN" and warn.json()["exit_code"] == 1

    _publish(vhost, "work.dlq", 1)
    crit = until(lambda: check(vhost.url, rules), exits(2, "dlq_not_empty", "CRIT", "work.dlq"), "a CRIT")
    assert finding(crit, "dlq_not_empty", "work.dlq")["summary"].startswith("dead letters 3 >= 3 (crit)")
    human = qdeck("check", "-b", vhost.url, "--rules", str(rules))
    assert human.code == 2 and nagios(human).startswith("QDECK CRITICAL - 1 critical")
    assert "'" + "/".join((finding(crit, "dlq_not_empty")["broker"], "work.dlq", "dlq_not_empty")) + "'=3;;3" \
        in nagios(human)
    assert "work.dlq" in human.out.splitlines()[2] and "CRIT" in human.out

    vhost.channel().queue_purge("work.dlq")
    back = until(lambda: check(vhost.url, rules), exits(0, "dlq_not_empty", "OK", "work.dlq"), "back to OK")
    assert finding(back, "dlq_not_empty", "work.dlq")["value"] == 0
    assert nagios(qdeck("check", "-b", vhost.url, "--rules", str(rules))).startswith("QDECK OK - 1 finding(s) OK")


def test_no_consumers_warn_and_back_when_a_consumer_comes(vhost: RabbitVhost, tmp_path: Path) -> None:
    rules = only_rule(tmp_path, "no_consumers")
    _publish(vhost, "jobs", 3)
    warn = until(lambda: check(vhost.url, rules), exits(1, "no_consumers", "WARN", "jobs"), "a WARN")
    assert finding(warn, "no_consumers", "jobs")["value"] == 3
    ch = vhost.channel()
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume("jobs", lambda *_a: None)  # holds one message unacked; the consumer stays while the test runs
    try:
        back = until(lambda: check(vhost.url, rules), exits(0, "no_consumers", "OK", "jobs"), "back to OK")
        assert "1 consumer(s)" in finding(back, "no_consumers", "jobs")["summary"]
    finally:
        ch.close()


def test_lag_warn_crit_and_back(vhost: RabbitVhost, tmp_path: Path) -> None:
    rules = only_rule(tmp_path, "lag", "{ warn = 5, crit = 10 }")
    _publish(vhost, "requests", 5)
    until(lambda: check(vhost.url, rules), exits(1, "lag", "WARN", "requests"), "a WARN")
    _publish(vhost, "requests", 5)
    crit = until(lambda: check(vhost.url, rules), exits(2, "lag", "CRIT", "requests"), "a CRIT")
    assert finding(crit, "lag", "requests")["value"] == 10
    vhost.channel().queue_purge("requests")
    until(lambda: check(vhost.url, rules), exits(0, "lag", "OK", "requests"), "back to OK")


def test_missing_dead_letter_exchange_warn_and_back(vhost: RabbitVhost, tmp_path: Path) -> None:
    rules = only_rule(tmp_path, "missing_dead_letter_exchange")
    ch = vhost.channel()
    ch.queue_declare("orders", arguments={"x-dead-letter-exchange": "orders.dlx"})
    warn = check(vhost.url, rules)
    assert exits(1, "missing_dead_letter_exchange", "WARN", "orders")(warn), warn.all
    assert "orders.dlx, which does not exist" in finding(warn, "missing_dead_letter_exchange")["summary"]
    queues = qdeck("queues", "-b", vhost.url, "--json").json()["queues"]
    assert [q["dead_letter_exchange_missing"] for q in queues] == [True]  # a fact of the snapshot, not note text
    ch.exchange_declare("orders.dlx", "fanout")
    ch.close()
    back = check(vhost.url, rules)
    assert exits(0, "missing_dead_letter_exchange", "OK", "orders")(back), back.all


def test_unreachable_is_unknown_but_critical_outranks_it(vhost: RabbitVhost, tmp_path: Path) -> None:
    rules = only_rule(tmp_path, "lag", "{ warn = 1, crit = 2 }")
    down = "redis://127.0.0.1:1/0"
    alone = qdeck("check", "-b", down, "-b", vhost.url, "--rules", str(rules), "--json")
    assert alone.code == 3, alone.all
    gone = finding(alone, "unreachable")
    assert (gone["broker"], gone["level"], gone["queue"]) == (down, "UNKNOWN", None)
    assert "connection refused" in gone["summary"]
    assert [b["reachable"] for b in alone.json()["brokers"]] == [False, True]
    assert nagios(qdeck("check", "-b", down, "--rules", str(rules))).startswith("QDECK UNKNOWN - 1 unknown")

    _publish(vhost, "requests", 2)
    worst = until(lambda: qdeck("check", "-b", down, "-b", vhost.url, "--rules", str(rules), "--json"),
                  exits(2, "lag", "CRIT", "requests"), "CRIT beside UNKNOWN")
    assert worst.json()["counts"] == {"OK": 0, "WARN": 0, "CRIT": 1, "UNKNOWN": 1}


@pytest.fixture
def monitoring_less_user(vhost: RabbitVhost) -> Iterator[str]:
    """A user with the management tag only (it may not read /api/nodes), allowed on the test's vhost."""
    name, password = f"qdeck-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    api = httpx.Client(base_url=management_base_url(vhost.base) + "/api", auth=("guest", "guest"), timeout=30)
    api.put(f"/users/{name}", json={"password": password, "tags": "management"}).raise_for_status()
    try:
        api.put(f"/permissions/{vhost.path}/{name}",
                json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        yield f"amqp://{name}:{password}@{vhost.base.host}:{vhost.base.port}/{quote(vhost.name, safe='')}"
    finally:
        api.delete(f"/users/{name}")
        api.close()


def test_a_user_without_monitoring_tag_gets_a_note_not_a_failure(monitoring_less_user: str,
                                                                   tmp_path: Path) -> None:
    queues = qdeck("queues", "-b", monitoring_less_user, "--json")
    assert queues.code == 0, queues.all
    assert any("node alarms unknown" in n and "'monitoring' tag" in n for n in queues.json()["snapshot"]["notes"])
    unknown = check(monitoring_less_user, only_rule(tmp_path, "node_alarm"))
    assert unknown.code == 3, unknown.all
    assert "node_alarm = \"off\"" in finding(unknown, "node_alarm")["summary"]
    skipped = check(monitoring_less_user, only_rule(tmp_path, "node_alarm", '"off"'))
    assert skipped.code == 0 and skipped.json()["findings"] == [], skipped.all
    password = monitoring_less_user.split(":")[2].split("@")[0]
    assert password not in unknown.all + queues.all
