"""The worker survives its broker going away (issue 15, item 2, the worker's side): one line when the link drops,
one when it is back, queues and groups declared again, serving resumes. Redis restarts are of a private server
(killed by PID); on RabbitMQ only this test's own connection is closed (as an admin or a node shutdown does)."""

from __future__ import annotations

import time

import pytest

from console import embedded_redis
from tests.rabbit import wait_sync
from tests.workers import open_client, unique, worker

pytestmark = pytest.mark.slow


async def _answered(url: str, queue: str, n: int, start_seq: int = 0) -> int:
    client = await open_client(url, queue)
    try:
        await client.send([f"r{i}" for i in range(n)], start_seq=start_seq)
        await client.wait_for(n, timeout=30)
    finally:
        await client.transport.aclose()
    return len(client.replies)


async def test_worker_survives_a_redis_restart(tmp_path) -> None:
    port = embedded_redis.free_port()
    proc, url = embedded_redis.start(port)
    queue = unique("qdeck-test-reconnect")
    try:
        with worker(url, queue, "--model", "echo", "--max-wait-ms", "1", tmp_path=tmp_path) as w:
            assert await _answered(url, queue, 20) == 20
            proc.kill()  # kill -9: every connection drops; the server comes back empty (no persistence)
            proc.wait()
            time.sleep(0.5)
            proc, _ = embedded_redis.start(port)
            wait_sync(lambda: "the broker is back" in w.log() or w.proc.poll() is not None, 30, "a reconnect")
            assert w.proc.poll() is None, w.log()
            assert await _answered(url, queue, 20, start_seq=100) == 20  # the stream and the group made again
            log = w.log()
        assert log.count("lost the broker") == 1 and log.count("the broker is back") == 1, log
        assert "Traceback" not in log
    finally:
        embedded_redis.stop(proc)


@pytest.mark.rabbitmq
async def test_worker_survives_its_rabbitmq_connection_being_closed(vhost, tmp_path) -> None:
    queue = unique("qdeck-test-reconnect")
    with worker(vhost.url, queue, "--model", "echo", "--max-wait-ms", "1", tmp_path=tmp_path) as w:
        assert await _answered(vhost.url, queue, 20) == 20

        def ours() -> list[str]:
            return [c["name"] for c in vhost.api.get("/connections").json() if c.get("vhost") == vhost.name]

        wait_sync(lambda: bool(ours()), 10, "the worker's connections")
        for name in ours():
            vhost.api.delete(f"/connections/{name}", headers={"X-Reason": "closed by the qdeck test"})
        wait_sync(lambda: "the broker is back" in w.log() or w.proc.poll() is not None, 30, "a reconnect")
        assert w.proc.poll() is None, w.log()
        assert await _answered(vhost.url, queue, 20, start_seq=100) == 20
        log = w.log()
    assert "the broker closed the connection (320 CONNECTION_FORCED" in log, log
    assert "AMQP handshake failed" not in log
    assert log.count("the broker is back") >= 1 and "Traceback" not in log


async def test_a_lone_request_on_redis_waits_max_wait_not_redis_timer_tick(redis_url: str, tmp_path) -> None:
    """Redis ends a timed-out BLOCK only at its next timer tick (100 ms at hz 10): a 20 ms --max-wait-ms held a
    lone request ~100 ms. The batch closes after max-wait, give or take a few ms of polling."""
    queue = unique("qdeck-test-maxwait")
    with worker(redis_url, queue, "--model", "echo", "--max-batch", "16", "--max-wait-ms", "20", tmp_path=tmp_path):
        client = await open_client(redis_url, queue)
        try:
            waits = []
            for i in range(5):
                [seq] = await client.send([f"alone {i}"], start_seq=i)
                assert await client.wait_for(i + 1, timeout=20)
                s = client.replies[seq].stamps
                waits.append((s.inference_start_ns - s.dequeued_ns) / 1e6)
        finally:
            await client.transport.aclose()
    import redis

    with redis.Redis.from_url(redis_url) as r:
        r.delete(queue, f"{queue}:dlq")
    assert all(w >= 19 for w in waits), waits
    assert sorted(waits)[2] < 60, f"a lone request waited {waits} ms for a 20 ms max-wait"


@pytest.mark.kafka
async def test_kafka_worker_says_when_the_link_drops_and_when_it_is_back(private_kafka, tmp_path) -> None:
    """librdkafka reconnects by itself; the worker used to say nothing. A private broker, stopped and started."""
    url = f"kafka://{private_kafka.bootstrap}"
    queue = unique("qdeck-test-kreconnect")
    with worker(url, queue, "--model", "echo", "--max-wait-ms", "1", tmp_path=tmp_path) as w:
        assert await _answered(url, queue, 5) == 5
        private_kafka.stop()
        wait_sync(lambda: "lost the broker" in w.log() or w.proc.poll() is not None, 60, "the worker to notice")
        private_kafka.start()
        assert await _answered(url, queue, 5, start_seq=100) == 5
        wait_sync(lambda: "the broker is back" in w.log(), 30, "the worker to say it is back")
        assert w.proc.poll() is None
        log = w.log()
    assert log.count("lost the broker") == 1 and "Traceback" not in log, log


async def test_a_read_ahead_done_when_the_link_drops_is_given_back() -> None:
    """The worker reads the next batch ahead while every model slot is busy; if that read completed just as the
    link dropped, its deliveries were dropped on the floor — on Redis kept fresh as "in hand" forever and never
    taken over again. They are released to the broker instead."""
    import asyncio

    from loadgen.worker.core import Worker, WorkerConfig
    from loadgen.worker.metrics import MetricsReporter
    from loadgen.worker.models import load_model
    from loadgen.worker.source import Delivery
    from probes.errors import ConnectionLost

    class Source:
        queue, dead_letter_name = "q", "q:dlq"

        def __init__(self) -> None:
            self.released: list[Delivery] = []
            self.reconnects = 0

        async def reconnect(self) -> None:
            self.reconnects += 1

        async def release(self, deliveries: list[Delivery]) -> None:
            self.released.extend(deliveries)

    source = Source()
    w = Worker(source, load_model("echo", "cpu"), WorkerConfig(metrics_interval_s=60), worker_id="w",  # type: ignore[arg-type]
               metrics=MetricsReporter("w", "cpu", "echo"))
    taken = [Delivery(b"x", "1-0"), Delivery(b"y", "2-0")]

    async def done_read() -> list[Delivery]:
        return taken

    w._ahead = asyncio.create_task(done_read())
    await asyncio.sleep(0)  # the read completed before the link dropped
    await w._recover(ConnectionLost("gone"), asyncio.Event())
    assert source.released == taken and source.reconnects == 1 and w._ahead is None
