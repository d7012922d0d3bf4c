from __future__ import annotations

from probes.naming import matches_dlq_name
from probes.rabbitmq.deadletter import (
    dead_letter_config,
    delivery_limit,
    parse_deaths,
    routed_queues,
    topic_matches,
)


def test_arguments_win_over_policy() -> None:
    q = {"arguments": {"x-dead-letter-exchange": "a"}, "effective_policy_definition": {"dead-letter-exchange": "p"},
         "policy": "pol"}
    assert dead_letter_config(q).source == "arguments"  # type: ignore[union-attr]
    q2 = {"arguments": {}, "effective_policy_definition": {"dead-letter-exchange": "p"}, "policy": "pol"}
    cfg = dead_letter_config(q2)
    assert cfg is not None and cfg.exchange == "p" and cfg.source == "policy pol"
    assert dead_letter_config({"name": "q"}) is None  # quorum queues right after a restart omit most keys


def test_delivery_limit_defaults_on_rabbitmq_4() -> None:
    assert delivery_limit({"type": "quorum", "arguments": {"x-delivery-limit": 3}}, "3.13.0") == 3
    assert delivery_limit({"type": "quorum", "arguments": {}}, "3.13.0") is None
    assert delivery_limit({"type": "quorum", "arguments": {}}, "4.1.0") == 20
    assert delivery_limit({"type": "quorum", "effective_policy_definition": {"delivery-limit": 5}}, "3.12") == 5
    assert delivery_limit({"type": "classic", "arguments": {"x-delivery-limit": 3}}, "4.0") is None


def test_routing_through_exchange_types() -> None:
    bindings = [{"destination": "a", "destination_type": "queue", "routing_key": "x.*"},
                {"destination": "b", "destination_type": "queue", "routing_key": "y"},
                {"destination": "ex2", "destination_type": "exchange", "routing_key": "y"}]
    assert routed_queues("fanout", bindings, "anything") == ["a", "b"]
    assert routed_queues("direct", bindings, "y") == ["b"]
    assert routed_queues("topic", bindings, "x.q") == ["a"]
    assert routed_queues("direct", bindings, None) == ["a", "b"]
    assert topic_matches("a.#", "a") and topic_matches("#.z", "a.b.z") and not topic_matches("a.*", "a.b.c")


def test_parse_deaths_and_name_patterns() -> None:
    deaths, reason, queue, exchange = parse_deaths({
        "x-death": [{"count": 2, "reason": "expired", "queue": "q2", "exchange": "e", "routing-keys": ["k"],
                     "time": 1700000000},
                    {"count": 1, "reason": "rejected", "queue": "q1", "exchange": "", "routing-keys": ["k0"],
                     "time": 1600000000}],
        "x-first-death-reason": "rejected", "x-first-death-queue": "q1", "x-first-death-exchange": ""})
    assert [d.reason for d in deaths] == ["expired", "rejected"] and deaths[0].count == 2
    assert (reason, queue, exchange) == ("rejected", "q1", "")
    assert deaths[0].time is not None and deaths[0].time.year == 2023
    assert matches_dlq_name("orders.dlq", ["*.dlq"]) and not matches_dlq_name("orders", ["*.dlq"])
