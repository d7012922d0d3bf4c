"""``--read-only`` is strict: on RabbitMQ, where a peek takes the messages and requeues them, the peek is refused
in one line (exit 2) and the queue is left as it was; the console's dead-letter actions are off."""

from __future__ import annotations

import dataclasses

from console.tui.dlq_action import writable
from probes.urls import parse_broker_url
from tests.cli import qdeck
from tests.rabbit import RabbitVhost


def test_read_only_refuses_a_rabbitmq_peek_and_leaves_the_queue_untouched(vhost: RabbitVhost) -> None:
    vhost.fill("held.dlq", [b'{"n": 1}', b'{"n": 2}'])
    run = qdeck("dlq", "peek", "held.dlq", "-b", vhost.url, "--read-only")
    assert run.code == 2 and run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and "--read-only is set" in lines[0] and "requeues" in lines[0]
    assert vhost.base.password not in run.err if vhost.base.password else True
    run = qdeck("dlq", "peek", "held.dlq", "-b", vhost.url, "--json")  # now peek for real: nothing was redelivered
    assert run.code == 0, run.all
    assert [m["redelivered"] for m in run.json()["messages"]] == [False, False]


def test_read_only_turns_off_the_consoles_actions_whatever_the_profile_says() -> None:
    target = dataclasses.replace(parse_broker_url("memory://ro"), allow_write=True, name="ro")
    assert writable(target) and not writable(dataclasses.replace(target, read_only=True))
    run = qdeck("console", "--help")
    assert "--read-only" in run.out and "--clipboard" in run.out
