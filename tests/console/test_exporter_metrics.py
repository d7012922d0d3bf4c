"""The exporter's metric families from built snapshots (parsed back with prometheus_client's own parser), its state
and /healthz, its HTTP server, and ``qdeck exporter``'s bad input. No broker needed; the process and the real
Prometheus tests are in test_exporter_process.py and test_exporter_prometheus.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from console.exporter.metrics import LABEL_CHARS, SnapshotCollector
from console.exporter.server import BindError, Server, make_app
from console.exporter.state import ExporterState
from console.health.rules_file import default_rules
from console.poller import PollResult
from console.safe_text import safe
from probes import BrokerSnapshot, QueueStats, parse_broker_url
from probes.models import BrokerOverview, GroupLag, PartitionLag
from tests.cli import qdeck

RABBIT = parse_broker_url("amqp://ops:s3cret@mq.example:5672/prod")
KAFKA = parse_broker_url("kafka://k1.example:9092")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def queue(name: str, depth: int, *, broker: str = RABBIT.label, in_flight: int = 0, consumers: int = 1,
          publish: float | None = None, deliver: float | None = None, dlq: bool = False,
          kind: str = "queue") -> QueueStats:
    return QueueStats(broker=broker, name=name, kind=kind, depth=depth, in_flight=in_flight,  # type: ignore[arg-type]
                      consumers=consumers, publish_rate=publish, deliver_rate=deliver, dead_letter_target=None,
                      is_dead_letter=dlq)


def snapshot(label: str, kind: str, queues: list[QueueStats], *, groups: tuple[GroupLag, ...] = (),
             taken_at: float | None = None, partial: bool = False) -> BrokerSnapshot:
    overview = BrokerOverview(broker=label, kind=kind, version="x", node="n", cluster=None, queues=len(queues),
                              messages=0, ready=0, unacked=0, consumers=0, connections=None, publish_rate=None,
                              deliver_rate=None, alarms=() if kind == "rabbitmq" else None)
    return BrokerSnapshot(broker=label, kind=kind, taken_at=time.time() if taken_at is None else taken_at,
                          duration_s=0.01, overview=overview, queues=tuple(queues), groups=groups, partial=partial)


def ok(label: str, snap: BrokerSnapshot, *, arrived: float = 100.0) -> PollResult:
    return PollResult(label, snap, None, arrived, duration_s=0.25, next_poll_s=15.0)


def failed(label: str, error: str, *, arrived: float = 100.0) -> PollResult:
    return PollResult(label, None, error, arrived, duration_s=0.5, next_poll_s=30.0)


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def exposition(state: ExporterState) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(state))
    return generate_latest(registry).decode("utf-8")


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = s.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels``."""
    hits = [v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


def state_of(*targets: object, clock: Clock | None = None) -> ExporterState:
    return ExporterState(list(targets), default_rules(), window_s=300, timeout=15,  # type: ignore[arg-type]
                         clock=clock or Clock())


def test_queue_group_partition_and_rule_families() -> None:
    state = state_of(RABBIT, KAFKA)
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [
        queue("jobs", 5, in_flight=2, consumers=3, publish=3.5),
        queue("jobs.dlq", 4, in_flight=1, consumers=0, dlq=True)])))
    group = GroupLag(broker=KAFKA.label, group="billing", source="orders", lag=7, state="Stable", members=2,
                     partitions=(PartitionLag(0, 10, 0, 13, 3), PartitionLag(1, 20, 0, 24, 4)))
    state.record(ok(KAFKA.label, snapshot(KAFKA.label, "kafka", [
        queue("orders", 7, broker=KAFKA.label, kind="topic", consumers=2)], groups=(group,))))
    text = exposition(state)
    found = samples(text)
    rb, kb = RABBIT.label, KAFKA.label
    assert "s3cret" not in text and rb == "amqp://ops:***@mq.example:5672/prod"
    assert value(found, "qdeck_queue_depth", broker=rb, vhost="prod", queue="jobs", kind="queue") == 5
    assert value(found, "qdeck_queue_in_flight", broker=rb, queue="jobs") == 2
    assert value(found, "qdeck_queue_consumers", broker=rb, queue="jobs") == 3
    assert value(found, "qdeck_queue_publish_messages_per_second", broker=rb, queue="jobs") == 3.5
    assert value(found, "qdeck_queue_deliver_messages_per_second", broker=rb, queue="jobs") is None  # unknown
    assert value(found, "qdeck_dlq_depth", broker=rb, queue="jobs.dlq") == 5  # ready + unacked
    assert value(found, "qdeck_dlq_depth", broker=rb, queue="jobs") is None
    assert value(found, "qdeck_queue_depth", broker=kb, queue="orders", vhost="") == 7
    assert value(found, "qdeck_group_lag", broker=kb, queue="orders", group="billing") == 7
    assert value(found, "qdeck_group_members", broker=kb, group="billing") == 2
    assert value(found, "qdeck_partition_lag", broker=kb, group="billing", partition="1") == 4
    assert value(found, "qdeck_rule_status", broker=rb, rule="dlq_not_empty", queue="jobs.dlq") == 1  # WARN
    assert value(found, "qdeck_rule_value", broker=rb, rule="dlq_not_empty", queue="jobs.dlq") == 5
    assert value(found, "qdeck_broker_status", broker=rb) == max(
        v for (n, ls), v in found.items() if n == "qdeck_rule_status" and ("broker", rb) in ls)
    assert value(found, "qdeck_broker_up", broker=rb, kind="rabbitmq") == 1
    assert value(found, "qdeck_broker_polls_total", broker=rb) == 1
    assert value(found, "qdeck_broker_poll_errors_total", broker=rb) == 0
    assert value(found, "qdeck_broker_poll_duration_seconds", broker=rb) == 0.25
    assert value(found, "qdeck_broker_last_poll_age_seconds", broker=rb) == 0.0
    assert value(found, "qdeck_broker_partial", broker=rb) == 0
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert all(helps.values()) and all(name.startswith("qdeck_") for name in helps)


def test_time_to_drain_comes_from_two_polls_through_probes_lag() -> None:
    state = state_of(RABBIT)
    t0 = time.time()
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [queue("jobs", 120, publish=2, deliver=12)],
                                           taken_at=t0)))
    assert value(samples(exposition(state)), "qdeck_time_to_drain_seconds", queue="jobs") is None  # one poll: no rate
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [queue("jobs", 100, publish=2, deliver=12)],
                                           taken_at=t0 + 15), arrived=115))
    found = samples(exposition(state))
    assert value(found, "qdeck_time_to_drain_seconds", broker=RABBIT.label, vhost="prod", queue="jobs",
                 group="") == pytest.approx(100 / (12 - 2))


def test_hostile_queue_names_cannot_break_the_exposition() -> None:
    nasty = ['evil"} 1\nqdeck_broker_up{broker="x"} 0', "esc\x1b[31mred", "back\\slash", "bidi\u202eevil",
             "a" * 1000, "tab\there"]
    state = state_of(RABBIT)
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [queue(n, i + 1) for i, n in enumerate(nasty)]
                                           + [queue("esc\\x1b[31mred", 99)])))  # sanitises to the same as #2
    text = exposition(state)
    assert "\x1b" not in text and "\u202e" not in text and "\t" not in text
    found = samples(text)
    depths = {dict(ls)["queue"]: v for (n, ls), v in found.items() if n == "qdeck_queue_depth"}
    assert depths == {safe(n, LABEL_CHARS): i + 1 for i, n in enumerate(nasty)}  # the collision exported once
    assert len([k for k in found if k[0] == "qdeck_broker_up"]) == 1  # the injected sample is only a label


def test_a_failed_poll_exports_up_0_and_unreachable_not_stale_figures() -> None:
    clock = Clock(100.0)
    state = state_of(RABBIT, clock=clock)
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [queue("jobs", 5)], partial=True)))
    assert value(samples(exposition(state)), "qdeck_broker_partial") == 1
    state.record(failed(RABBIT.label, "broker unreachable: connection refused", arrived=110.0))
    clock.now = 112.5
    found = samples(exposition(state))
    assert value(found, "qdeck_broker_up", broker=RABBIT.label) == 0
    assert value(found, "qdeck_broker_poll_errors_total") == 1 and value(found, "qdeck_broker_polls_total") == 2
    assert value(found, "qdeck_broker_last_poll_age_seconds") == 2.5
    assert value(found, "qdeck_rule_status", rule="unreachable") == 3
    assert value(found, "qdeck_broker_status") == 3
    assert not [k for k in found if k[0] in ("qdeck_queue_depth", "qdeck_broker_partial")]
    assert value(found, "qdeck_broker_snapshot_age_seconds") is not None  # how old the last good figures are


def test_healthz_states() -> None:
    clock = Clock(100.0)
    state = state_of(RABBIT, KAFKA, clock=clock)
    state.running = True
    healthy, doc = state.health()
    assert not healthy and doc["status"] == "starting"
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [])))
    state.record(failed(KAFKA.label, "broker unreachable"))
    healthy, doc = state.health()
    assert healthy and doc["status"] == "ok"  # a broker that is down is a figure, not the exporter failing
    assert [(b["broker"], b["up"], b["status"]) for b in doc["brokers"]] == [
        (RABBIT.label, True, "OK"), (KAFKA.label, False, "UNKNOWN")]
    clock.now = 100.0 + 15 + 2 * 15 + 1  # the rabbit's next poll is overdue: the loop is wedged
    healthy, doc = state.health()
    assert not healthy and doc["status"] == "stalled"
    state.running = False
    assert state.health()[1]["status"] == "stopped"


@pytest.fixture
def served() -> Iterator[tuple[Server, ExporterState]]:
    state = state_of(RABBIT)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(state))
    server = Server("127.0.0.1", 0, make_app(registry, state.health))
    server.start()
    try:
        yield server, state
    finally:
        server.close()


def test_server_routes(served: tuple[Server, ExporterState]) -> None:
    server, state = served
    state.running = True
    assert httpx.get(f"{server.url}/healthz").status_code == 503
    state.record(ok(RABBIT.label, snapshot(RABBIT.label, "rabbitmq", [queue("jobs\x1b", 5)])))
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json()["brokers"][0]["up"] is True
    assert health.content.isascii()
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert value(samples(metrics.text), "qdeck_queue_depth", queue="jobs\\x1b") == 5
    om = httpx.get(f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text") and om.text.endswith("# EOF\n")
    assert httpx.get(f"{server.url}/nope").status_code == 404


def test_a_port_in_use_is_one_error(served: tuple[Server, ExporterState]) -> None:
    server, _ = served
    with pytest.raises(BindError, match=f"port {server.port} on 127.0.0.1 is in use"):
        Server("127.0.0.1", server.port, make_app(CollectorRegistry(), lambda: (True, {})))


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: object) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = qdeck("exporter", "-b", "memory://x", "--port", str(port))
    assert busy.code == 2 and busy.err.strip() == f"qdeck: port {port} on 127.0.0.1 is in use (--port)", busy.all
    fast = qdeck("exporter", "-b", "memory://x", "--interval", "1")
    assert fast.code == 2 and len(fast.err.strip().splitlines()) == 1 and "less than 5" in fast.err
    twice = qdeck("exporter", "-b", "memory://x", "-b", "memory://x")
    assert twice.code == 2 and twice.err.strip() == "qdeck: the same broker was given twice"
    rules = tmp_path / "rules.toml"  # type: ignore[operator]
    rules.write_text("[defaults]\nlagg = { warn = 1 }\n")
    bad = qdeck("exporter", "-b", "memory://x", "--rules", str(rules))
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1 and "lagg" in bad.err, bad.all
    nowhere = qdeck("exporter", "-b", "memory://x", "--bind", "no.such.host.invalid")
    assert nowhere.code == 2 and len(nowhere.err.strip().splitlines()) == 1 and "Traceback" not in nowhere.all
    for args in (["--port", "70000"], ["--interval", "nan"], ["--scan-calls", "0"],
                 ["-b", "amqp://u:hunter2@127.0.0.1:70000/"]):
        r = qdeck("exporter", "-b", "memory://x", *args) if args[0] != "-b" else qdeck("exporter", *args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, (args, r.all)
        assert r.err.startswith("qdeck: ") and "hunter2" not in r.all and "Traceback" not in r.all
