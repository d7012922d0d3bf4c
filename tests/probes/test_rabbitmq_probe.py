"""The RabbitMQ probe against a real RabbitMQ (management API + AMQP), each test in its own vhost."""

from __future__ import annotations

import pika
import pytest

from probes import BrokerSnapshot, NotFound, UnsafeOperation, Unsupported, open_probe, parse_broker_url
from tests.rabbit import RabbitVhost, wait_async, wait_sync

pytestmark = pytest.mark.rabbitmq


def _probe(vhost: RabbitVhost):  # type: ignore[no-untyped-def]
    return open_probe(parse_broker_url(vhost.url))


def _depth(snap: BrokerSnapshot, name: str) -> int | None:
    q = snap.queue(name)
    return None if q is None else q.depth


def _consumers(snap: BrokerSnapshot, name: str) -> int | None:
    q = snap.queue(name)
    return None if q is None else q.consumers


def _target(snap: BrokerSnapshot, name: str) -> str | None:
    q = snap.queue(name)
    return None if q is None else q.dead_letter_target


def _dead_letter_topology(vhost: RabbitVhost) -> None:
    """work → (rejected, expired) → exchange dlx (fanout) → work.dlq, with one message of each reason."""
    ch = vhost.channel()
    ch.exchange_declare("dlx", "fanout")
    ch.queue_declare("work.dlq")
    ch.queue_bind("work.dlq", "dlx")
    ch.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    ch.basic_publish("", "work", b'{"prompt": "reject me"}',
                     pika.BasicProperties(headers={"tenant": "acme"}, content_type="application/json",
                                          message_id="m-1"))
    ch.basic_publish("", "work", b"expire me", pika.BasicProperties(expiration="20"))
    method, _props, body = ch.basic_get("work")
    assert body == b'{"prompt": "reject me"}'
    ch.basic_reject(method.delivery_tag, requeue=False)
    ch.close()
    wait_sync(lambda: vhost.exact_depth("work.dlq") == 2, what="both messages dead-lettered")


async def test_dead_letter_queue_depth_target_and_peek_reasons(vhost: RabbitVhost) -> None:
    _dead_letter_topology(vhost)
    probe = _probe(vhost)
    try:
        snap: BrokerSnapshot = await wait_async(probe.snapshot, lambda s: _depth(s, "work.dlq") == 2,
                                                what="management stats to show 2 messages in work.dlq")
        work, dlq = snap.queue("work"), snap.queue("work.dlq")
        assert work is not None and dlq is not None
        assert work.dead_letter_target == "dlx" and work.dead_letter_source == "arguments"
        assert work.dead_letter_queues == ("work.dlq",)
        assert not work.is_dead_letter and work.depth == 0
        assert dlq.is_dead_letter and dlq.dead_letter_target is None
        assert snap.overview.version and snap.overview.scope == f"vhost {vhost.name}"

        result = await probe.peek("work.dlq", 10)
        assert "redelivered" in (result.side_effect or "")
        by_reason = {m.death_reason: m for m in result.messages}
        assert set(by_reason) == {"rejected", "expired"}
        for m in result.messages:
            assert m.death_count == 1
            assert m.original_queue == "work"
            assert m.original_exchange == ""  # published through the default exchange
            assert m.original_routing_keys == ("work",)
            assert m.first_death_time is not None and m.last_death_time is not None
        rejected = by_reason["rejected"]
        assert rejected.body == b'{"prompt": "reject me"}'
        assert rejected.headers == {"tenant": "acme"}
        assert rejected.message_id == "m-1"
        assert rejected.first_death_reason == "rejected"
        assert by_reason["expired"].body == b"expire me"

        # The peek put everything back, in order, now marked redelivered.
        assert vhost.exact_depth("work.dlq") == 2
        again = await probe.peek("work.dlq", 10)
        assert [m.body for m in again.messages] == [m.body for m in result.messages]
        assert all(m.redelivered for m in again.messages)
    finally:
        await probe.aclose()


async def test_dead_letter_target_set_by_policy_is_found(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.exchange_declare("policy-dlx", "direct")
    ch.queue_declare("jobs.failed")
    ch.queue_bind("jobs.failed", "policy-dlx", routing_key="jobs")
    ch.queue_declare("jobs")
    ch.close()
    vhost.put_policy("dead-letters", r"^jobs$", {"dead-letter-exchange": "policy-dlx",
                                                 "dead-letter-routing-key": "jobs"})
    probe = _probe(vhost)
    try:
        snap = await wait_async(probe.snapshot, lambda s: _target(s, "jobs") is not None, what="the policy to apply")
        jobs, failed = snap.queue("jobs"), snap.queue("jobs.failed")
        assert jobs is not None and failed is not None
        assert jobs.dead_letter_target == "policy-dlx → jobs"
        assert jobs.dead_letter_source == "policy dead-letters"
        assert jobs.policy == "dead-letters"
        assert jobs.dead_letter_queues == ("jobs.failed",)
        assert failed.is_dead_letter  # found through the binding, not the name
    finally:
        await probe.aclose()


async def test_default_exchange_target_and_missing_exchange(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.queue_declare("orders-parked")
    ch.queue_declare("orders", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "orders-parked"})
    ch.queue_declare("lossy", arguments={"x-dead-letter-exchange": "no-such-exchange"})
    ch.close()
    probe = _probe(vhost)
    try:
        snap = await probe.snapshot()
        orders, parked = snap.queue("orders"), snap.queue("orders-parked")
        assert orders is not None and parked is not None
        assert orders.dead_letter_target == "(default exchange) → orders-parked"
        assert orders.dead_letter_queues == ("orders-parked",)
        assert parked.is_dead_letter
        assert any("no-such-exchange" in note and "dropped" in note for note in snap.notes)
    finally:
        await probe.aclose()


async def test_quorum_queue_with_delivery_limit_refuses_peek_unless_forced(vhost: RabbitVhost) -> None:
    vhost.fill("qq", [f"m{i}".encode() for i in range(3)], durable=True,
               arguments={"x-queue-type": "quorum", "x-delivery-limit": 2})
    probe = _probe(vhost)
    try:
        with pytest.raises(UnsafeOperation, match=r"delivery limit of 2.*--force"):
            await probe.peek("qq", 3)
        assert vhost.exact_depth("qq") == 3  # the refusal touched nothing
        forced = await probe.peek("qq", 1, force=True)
        assert [m.body for m in forced.messages] == [b"m0"]
        assert "x-delivery-count" in (forced.side_effect or "")
        assert vhost.exact_depth("qq") == 3
    finally:
        await probe.aclose()


async def test_stream_peek_is_unsupported_and_missing_queue_not_found(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.queue_declare("events", durable=True, arguments={"x-queue-type": "stream"})
    ch.close()
    probe = _probe(vhost)
    try:
        with pytest.raises(Unsupported, match="stream"):
            await probe.peek("events", 1)
        with pytest.raises(NotFound, match="nope"):
            await probe.peek("nope", 1)
        snap = await probe.snapshot()
        events = snap.queue("events")
        assert events is not None and events.kind == "stream" and events.queue_type == "stream"
    finally:
        await probe.aclose()


async def test_consumers_are_listed_per_queue(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.queue_declare("inference")
    ch.basic_qos(prefetch_count=16)
    ch.basic_consume("inference", lambda *a: None, consumer_tag="worker-1")
    probe = _probe(vhost)
    try:
        found = await wait_async(lambda: probe.consumers("inference"), lambda c: len(c) == 1,
                                 what="the consumer to show up")
        assert found[0].tag == "worker-1" and found[0].prefetch == 16 and found[0].ack_required is True
        with pytest.raises(NotFound, match="elsewhere"):  # a missing queue is an error, never "no consumers"
            await probe.consumers("elsewhere")
        snap = await wait_async(probe.snapshot, lambda s: _consumers(s, "inference") == 1,
                                what="consumer count in stats")
        assert snap.overview.consumers == 1
    finally:
        ch.close()
        await probe.aclose()


@pytest.mark.slow
async def test_ten_thousand_queues_are_listed_through_paging(vhost: RabbitVhost) -> None:
    names = [f"tenant-{i:05d}" for i in range(10_000)]
    vhost.import_queues(names)
    probe = _probe(vhost)
    try:
        snap = await probe.snapshot()
        assert [q.name for q in snap.queues] == sorted(names)
        assert snap.overview.queues == 10_000
    finally:
        await probe.aclose()
