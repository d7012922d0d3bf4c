"""Issue 16, RabbitMQ items 5 (rates), 6 (wrong node), 9 (message TTL, DLX overrides) and 16 (x-delivery-limit -1),
against the real shared RabbitMQ (3.10), each test in its own vhost; the second node is a private one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from console.embedded_redis import free_port
from probes import ProbeError, UnsafeOperation, open_probe, parse_broker_url
from probes.lag import lag_rows
from probes.models import BrokerSnapshot
from probes.rabbitmq.deadletter import delivery_limit
from tests.cli import qdeck
from tests.rabbit import RabbitVhost, wait_async, wait_sync

pytestmark = pytest.mark.rabbitmq
MESSAGE_STATS = "management message_stats"  # the rate source named when the Prometheus plugin cannot give rates


def _probe(vhost: RabbitVhost, query: str = ""):  # type: ignore[no-untyped-def]
    return open_probe(parse_broker_url(vhost.url + query))


def _one_line_exit_2(r, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2, (r.code, r.all)
    assert r.out == "" and r.err.count("\n") == 1, r.all
    assert expected in r.err, r.err
    assert "Traceback" not in r.all and ":guest@" not in r.all


# ---- item 5: a get (qdeck's own peek) is not consumption --------------------------------------------------------
async def test_peeked_queue_without_consumers_never_drains(vhost: RabbitVhost) -> None:
    """A dead-letter queue nobody consumes, peeked by qdeck: the management API's deliver_get rate counts those
    requeued gets, and the old rule read them as consumption ("drains in 2 s"). It is stalled."""
    vhost.fill("parked", [f"m{i}".encode() for i in range(5)])
    probe = _probe(vhost)
    try:
        def get_rate() -> float:
            stats = vhost.api.get(f"/queues/{vhost.path}/parked").json().get("message_stats") or {}
            return float((stats.get("deliver_get_details") or {}).get("rate") or 0.0)

        async def peek_then_rate() -> float:
            await probe.peek("parked", 5)
            return get_rate()

        await wait_async(probe.snapshot, lambda s: getattr(s.queue("parked"), "depth", 0) == 5,
                         what="management stats to show 5 messages parked")
        await wait_async(peek_then_rate, lambda rate: rate > 0, timeout=30,
                         what="the management API to show a deliver_get rate from the peeks")
        first = await probe.snapshot()
        await probe.peek("parked", 5)
        second = await probe.snapshot()
        row = next(r for r in lag_rows(second, first) if r.source == "parked")
        assert row.consumers == 0 and row.backlog == 5
        assert row.consume_rate == 0.0, row
        assert row.trend == "stalled" and row.seconds_to_drain is None, row
        assert row.rate_basis in ("prometheus", MESSAGE_STATS)
        queue = second.queue("parked")
        assert queue is not None and queue.deliver_rate == 0.0 and queue.rate_source == row.rate_basis
        assert vhost.exact_depth("parked") == 5
    finally:
        await probe.aclose()


def test_lag_interval_0_shows_no_rate_and_rates_name_their_source(vhost: RabbitVhost) -> None:
    """``lag -i 0`` promises no rate estimate: it used to show the broker's rates."""
    ch = vhost.channel()
    ch.queue_declare("busy")
    for _ in range(20):
        ch.basic_publish("", "busy", b"x")

    def published() -> bool:
        info = vhost.api.get(f"/queues/{vhost.path}/busy").json()
        return "publish_details" in (info.get("message_stats") or {}) and info.get("messages") == 20

    # (the channel stays open: it reports its per-queue publish counts every 5 s, and a closed one never does)
    wait_sync(published, timeout=30, what="publish statistics (a rate, 0 or not) in the management API")
    ch.close()
    once = qdeck("lag", "-b", vhost.url, "-i", "0", "--json")
    assert once.code == 0, once.all
    (row,) = [r for r in once.json()["lag"] if r["source"] == "busy"]
    assert row["produce_rate"] is None and row["consume_rate"] is None and row["net_rate"] is None, row
    assert row["rate_basis"] is None and row["trend"] == "stalled"  # 0 consumers: stalled without any rate
    twice = qdeck("lag", "-b", vhost.url, "-i", "0.5", "--json")
    (row,) = [r for r in twice.json()["lag"] if r["source"] == "busy"]
    assert row["rate_basis"] in ("prometheus", MESSAGE_STATS), row
    table = qdeck("lag", "-b", vhost.url, "-i", "0.5")
    assert f"rate from {row['rate_basis']}" in table.out, table.out
    queues = qdeck("queues", "-b", vhost.url, "--json").json()
    (busy,) = [q for q in queues["queues"] if q["name"] == "busy"]
    assert busy["rate_source"] in ("prometheus", MESSAGE_STATS)
    overview = queues["snapshot"]["overview"]
    assert overview["rate_source"] in ("prometheus", MESSAGE_STATS)
    assert "rates from" in qdeck("queues", "-b", vhost.url).out


async def test_prometheus_plugin_on_3_10_is_read_and_found_without_per_queue_counters(vhost: RabbitVhost) -> None:
    """The shared node has ``rabbitmq_prometheus`` enabled by the harness. 3.10 offers per-queue counters only per
    channel (they vanish with their channel): the probe says so and names message_stats as the source."""
    try:
        metrics = httpx.get("http://127.0.0.1:15692/metrics/detailed?family=queue_coarse_metrics", timeout=5)
    except httpx.HTTPError:
        pytest.skip("the Prometheus plugin is not enabled on the test node (tests/brokers.py enables it)")
    assert metrics.status_code == 200 and "rabbitmq_identity_info" in metrics.text
    probe = _probe(vhost)
    try:
        snap: BrokerSnapshot = await probe.snapshot()
        assert snap.overview.version is not None
        if snap.overview.version.startswith("3."):
            assert snap.overview.rate_source == MESSAGE_STATS
            assert "no per-queue counters" in (snap.overview.rate_note or ""), snap.overview.rate_note
        again = await probe.snapshot()
        assert again.overview.rate_source in ("prometheus", MESSAGE_STATS)
    finally:
        await probe.aclose()
    off = _probe(vhost, "?prometheus_url=off")
    try:
        assert "disabled" in ((await off.snapshot()).overview.rate_note or "")
    finally:
        await off.aclose()


def test_prometheus_counters_give_rates_over_the_interval() -> None:
    """The per-queue families of newer RabbitMQ (text in the format of rabbitmq_prometheus_collector's
    ``queue_delivery_metrics`` / ``queue_exchange_metrics``; not from a broker: 3.10 lacks them)."""
    from probes.rabbitmq.prometheus import parse_counters, rates_between

    def scrape(delivered_ack: int, delivered: int, get_ack: int, published: int) -> str:
        return "\n".join([
            "# TYPE rabbitmq_detailed_queue_messages_delivered_ack_total counter",
            f'rabbitmq_detailed_queue_messages_delivered_ack_total{{vhost="v",queue="jobs"}} {delivered_ack}',
            "# TYPE rabbitmq_detailed_queue_messages_delivered_total counter",
            f'rabbitmq_detailed_queue_messages_delivered_total{{vhost="v",queue="jobs"}} {delivered}',
            "# TYPE rabbitmq_detailed_queue_get_ack_total counter",
            f'rabbitmq_detailed_queue_get_ack_total{{vhost="v",queue="jobs"}} {get_ack}',
            "# TYPE rabbitmq_detailed_queue_exchange_messages_published_total counter",
            f'rabbitmq_detailed_queue_exchange_messages_published_total{{vhost="v",exchange="",queue="jobs"}} '
            f"{published}",
            'rabbitmq_detailed_queue_exchange_messages_published_total{vhost="v",exchange="x",queue="jobs"} 0',
            'rabbitmq_detailed_queue_messages_delivered_total{vhost="other",queue="jobs"} 999',
            'rabbitmq_identity_info{rabbitmq_node="rabbit@a",rabbitmq_cluster="c\\"1",rabbitmq_endpoint="detailed"} 1',
        ])

    old = parse_counters(scrape(100, 10, 0, 200), "v", taken_at=10.0)
    new = parse_counters(scrape(150, 20, 500, 230), "v", taken_at=12.0)
    assert old is not None and new is not None and new.cluster == 'c"1' and new.node == "rabbit@a"
    assert rates_between(old, new) == {"jobs": (15.0, 30.0)}  # 30 published, 60 delivered (gets excluded) in 2 s
    assert parse_counters("# TYPE rabbitmq_build_info untyped\nrabbitmq_build_info 1\n", "v") is None


# ---- item 6: the AMQP port must be AMQP, and the management API's cluster ----------------------------------------
def test_amqp_port_that_is_redis_or_http_is_refused(rabbitmq_url: str, redis_url: str) -> None:
    base = parse_broker_url(rabbitmq_url)
    auth = f"{base.username}:{base.password}"
    redis_port = parse_broker_url(redis_url).port
    for port in (redis_port, 15672):
        url = f"amqp://{auth}@{base.host}:{port}/"
        _one_line_exit_2(qdeck("queues", "-b", url), f"{base.host}:{port} does not speak AMQP")
    _one_line_exit_2(qdeck("consumers", "-b", f"amqp://{auth}@{base.host}:{redis_port}/"), "does not speak AMQP")


async def test_probe_refuses_every_read_on_a_port_that_is_not_amqp(rabbitmq_url: str, redis_url: str) -> None:
    base = parse_broker_url(rabbitmq_url)
    url = f"amqp://{base.username}:{base.password}@{base.host}:{parse_broker_url(redis_url).port}/"
    probe = open_probe(parse_broker_url(url))
    try:
        for call in (probe.snapshot(), probe.consumers(), probe.peek("anything", 1)):
            with pytest.raises(ProbeError, match="does not speak AMQP"):
                await call
    finally:
        await probe.aclose()


def test_a_garbled_first_frame_is_refused_in_one_line(rabbitmq_url: str) -> None:
    """A server that answers the protocol header with a short method frame (pika's decoder meets it with a
    struct.error): one line, exit 2, not an internal error. Also a ?prometheus_url= that is not an http(s) URL."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def answer() -> None:
        for _ in range(2):  # the CLI may connect more than once
            try:
                conn, _addr = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(8)
                conn.sendall(bytes.fromhex("01 0000 00000002 000a ce".replace(" ", "")))

    threading.Thread(target=answer, daemon=True).start()
    base = parse_broker_url(rabbitmq_url)
    try:
        url = f"amqp://{base.username}:{base.password}@127.0.0.1:{port}/?management_url=http://{base.host}:15672"
        _one_line_exit_2(qdeck("queues", "-b", url), "does not speak AMQP 0-9-1")
    finally:
        server.close()
    bad = f"amqp://{base.username}:{base.password}@{base.host}:{base.port}/?prometheus_url=http://[::1"
    _one_line_exit_2(qdeck("queues", "-b", bad), "?prometheus_url= is not an http:// or https:// URL")


def test_closed_amqp_port_with_a_live_management_api_is_unreachable(rabbitmq_url: str) -> None:
    base = parse_broker_url(rabbitmq_url)
    url = f"amqp://{base.username}:{base.password}@{base.host}:{free_port()}/?management_url=http://{base.host}:15672"
    _one_line_exit_2(qdeck("queues", "-b", url), "nothing answers at")


@pytest.mark.slow
def test_amqp_port_of_another_node_is_refused(private_rabbit: Any) -> None:
    """AMQP on the private node, the management API of the shared node: they are different clusters."""
    url = private_rabbit.url + "?management_url=http://127.0.0.1:15672"
    r = qdeck("queues", "-b", url)
    _one_line_exit_2(r, f"AMQP at 127.0.0.1:{private_rabbit.port} is RabbitMQ cluster")
    overview = httpx.get("http://127.0.0.1:15672/api/overview", auth=("guest", "guest"), timeout=10).json()
    props = asyncio.run(_properties(private_rabbit.url))
    assert props["cluster_name"] != overview["cluster_name"]
    assert f"is RabbitMQ cluster {props['cluster_name']!r}" in r.err
    assert f"management API at http://127.0.0.1:15672 is cluster {overview['cluster_name']!r}" in r.err
    _one_line_exit_2(qdeck("dlq", "peek", "q", "-b", url), "is RabbitMQ cluster")
    ok = qdeck("queues", "-b", "amqp://guest:guest@127.0.0.1:5672/")  # the matching pair still reads
    assert ok.code == 0, ok.all


async def _properties(url: str) -> dict[str, Any]:
    from probes.rabbitmq.node_check import server_properties

    return await server_properties(parse_broker_url(url))


# ---- item 9: message TTL beside the DLX, and a DLX argument that overrides a policy -----------------------------
async def test_message_ttl_and_dead_letter_override_are_shown(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.exchange_declare("argdlx", "fanout")
    ch.exchange_declare("poldlx", "fanout")
    ch.queue_declare("both", arguments={"x-message-ttl": 60000, "x-dead-letter-exchange": "argdlx"})
    ch.queue_declare("policy-only")
    ch.queue_declare("arg-only", arguments={"x-message-ttl": 1500})
    ch.close()
    vhost.put_policy("p1", "^(both|policy-only)$", {"message-ttl": 30000, "dead-letter-exchange": "poldlx"})
    probe = _probe(vhost)
    try:
        snap = await wait_async(probe.snapshot, lambda s: all(q.policy == "p1" for q in s.queues
                                                              if q.name in ("both", "policy-only")),
                                what="the policy to apply")
        both, policy_only, arg_only = snap.queue("both"), snap.queue("policy-only"), snap.queue("arg-only")
        assert both is not None and policy_only is not None and arg_only is not None
        # the dead-letter exchange: the argument wins, and the row says which policy it overrides
        assert both.dead_letter_target == "argdlx" and both.dead_letter_source == "arguments"
        assert both.dead_letter_overrides == "policy p1"
        assert policy_only.dead_letter_target == "poldlx" and policy_only.dead_letter_overrides is None
        # the message TTL: the lower of argument and policy applies
        assert both.message_ttl_ms == 30000 and "policy p1" in (both.message_ttl_source or "")
        assert policy_only.message_ttl_ms == 30000 and policy_only.message_ttl_source == "policy p1"
        assert arg_only.message_ttl_ms == 1500 and arg_only.message_ttl_source == "argument"
    finally:
        await probe.aclose()
    table = qdeck("queues", "-b", vhost.url)
    assert table.code == 0, table.all
    line = next(x for x in table.out.splitlines() if x.startswith("both "))
    assert "argdlx (argument, overrides policy p1)" in line and "30s (policy p1" in line, line
    assert "1.5s (argument)" in next(x for x in table.out.splitlines() if x.startswith("arg-only "))
    doc = qdeck("queues", "-b", vhost.url, "--json").json()
    (row,) = [q for q in doc["queues"] if q["name"] == "both"]
    assert row["message_ttl_ms"] == 30000 and row["dead_letter_overrides"] == "policy p1"


# ---- item 16: x-delivery-limit -1 ----------------------------------------------------------------------------------
async def test_negative_delivery_limit_on_3_10_is_refused_not_taken_as_none(vhost: RabbitVhost) -> None:
    """Measured on the real 3.10 node: a quorum queue with ``x-delivery-limit: -1`` drops a message the first time
    it is requeued, so a requeueing peek loses everything it reads. The probe used to skip the negative value and
    peek (no limit before 4.0)."""
    vhost.fill("qq-neg", [f"m{i}".encode() for i in range(2)], durable=True,
               arguments={"x-queue-type": "quorum", "x-delivery-limit": -1})
    probe = _probe(vhost)
    try:
        snap = await wait_async(probe.snapshot, lambda s: s.queue("qq-neg") is not None, what="qq-neg listed")
        version = snap.overview.version or ""
        if not version.startswith("3."):
            pytest.skip(f"the rule for RabbitMQ 3.x; this node is {version}")
        with pytest.raises(UnsafeOperation, match=r"delivery limit of -1.*first time it is requeued.*--force"):
            await probe.peek("qq-neg", 2)
        assert vhost.exact_depth("qq-neg") == 2  # the refusal touched nothing
    finally:
        await probe.aclose()


def test_delivery_limit_minus_one_means_unlimited_on_rabbitmq_4(vhost: RabbitVhost) -> None:
    """Real: the management API JSON of a 3.10 quorum queue declared with ``x-delivery-limit: -1`` (3.10 reports no
    ``delivery_limit`` field). Rule (RabbitMQ 4.0 source, rabbit_quorum_queue ``resolve_delivery_limit`` and its
    default of 20): with version "4.0.5" a negative limit is no limit, so the peek is not refused; an argument of
    -1 beside a policy of 5 gives 5; nothing set gives 20; a reported ``delivery_limit`` wins."""
    ch = vhost.channel()
    ch.queue_declare("qq-unlimited", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": -1})
    ch.close()
    info = vhost.api.get(f"/queues/{vhost.path}/qq-unlimited").json()
    assert info["type"] == "quorum" and info["arguments"]["x-delivery-limit"] == -1
    assert delivery_limit(info, "4.0.5") is None
    assert delivery_limit(info, "3.10.8") == -1  # 3.x: dangerous, see the test above
    with_policy = dict(info, effective_policy_definition={"delivery-limit": 5})
    assert delivery_limit(with_policy, "4.0.5") == 5
    plain = dict(info, arguments={"x-queue-type": "quorum"})
    assert delivery_limit(plain, "4.0.5") == 20 and delivery_limit(plain, "3.10.8") is None
    assert delivery_limit(dict(info, delivery_limit="unlimited"), "4.1.0") is None
    assert delivery_limit(dict(plain, delivery_limit=7), "4.1.0") == 7
