"""A long-lived Kafka probe recovers after its broker restarts (issue 16, item 14).

The test owns its broker (DESIGN rule 16): a private noida-db on its own port and data dir, killed by PID and
restarted on the same port with the same data dir. The shared test broker is never touched."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench._private_brokers import PrivateKafka
from probes import ProbeError, open_probe, parse_broker_url
from tests import brokers as harness

pytestmark = pytest.mark.kafka


def _commit(bootstrap: str, group: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("orders", 0, offset)], asynchronous=False)
    consumer.close()


async def test_snapshot_recovers_after_a_broker_restart(private_kafka: PrivateKafka) -> None:
    bs = private_kafka.bootstrap
    admin = AdminClient({"bootstrap.servers": bs})
    for fut in admin.create_topics([NewTopic("orders", 1, 1)]).values():
        fut.result(15)
    producer = Producer({"bootstrap.servers": bs})
    for i in range(5):
        producer.produce("orders", value=f"v{i}".encode())
    assert producer.flush(15) == 0
    _commit(bs, "billing", 3)

    probe = open_probe(parse_broker_url(f"kafka://{bs}"), timeout=2.0)
    try:
        before = await probe.snapshot()
        assert [g.group for g in before.groups] == ["billing"]

        private_kafka.stop()
        with pytest.raises(ProbeError):
            await probe.snapshot()
        private_kafka.start()
        harness.wait_for(lambda: private_kafka.has_topic("orders"), 30, "the topic after the restart")
        # The group's commit is made again after the restart, so the test does not depend on the broker
        # keeping group offsets across a kill -9 (real Kafka does; the test broker need not).
        _commit(bs, "billing", 3)

        deadline = time.monotonic() + 40
        errors: list[str] = []
        while time.monotonic() < deadline:
            try:
                after = await probe.snapshot()
                break
            except ProbeError as exc:
                errors.append(str(exc))
        else:
            pytest.fail(f"the probe never recovered after the restart; its errors: {sorted(set(errors))}")
        assert len(errors) <= 3, errors
        assert [(g.group, g.lag) for g in after.groups] == [("billing", 2)]
        # every failure message names the call that failed
        assert all(" (" in e and ")" in e for e in errors), errors
    finally:
        await probe.aclose()
