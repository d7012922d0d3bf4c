"""Every request ends in a reply or a durable dead letter, and only then is it acknowledged (issue 15, item 1).

A reply destination the broker refuses (a Redis key of another type, a RabbitMQ routing key over 255 bytes, a
Kafka topic name with '/', a lone surrogate anywhere), a Redis at maxmemory, a deleted RabbitMQ dead-letter queue, a
model output JSON cannot write, a failing settle: each ends in a reply, a confirmed dead letter with its reason, or
an entry left pending to be retried; never in a lost request or an unobserved task exception."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest

from probes import open_probe, parse_broker_url
from tests.loadgen.conftest import Case
from tests.rabbit import wait_sync
from tests.workers import open_client, unique, worker

pytestmark = pytest.mark.slow

LONE_SURROGATE = "qdeck-reply-\ud800"


async def _dead_letters(url: str, dlq: str, count: int, timeout: float = 20.0) -> list[Any]:
    probe = open_probe(parse_broker_url(url))
    try:
        deadline = time.monotonic() + timeout
        while True:
            result = await probe.peek(dlq, 20)
            if len(result.messages) >= count or time.monotonic() > deadline:
                return list(result.messages)
            await asyncio.sleep(0.3)
    finally:
        await probe.aclose()


def _bad_destination(case: Case, which: str) -> tuple[str, str]:
    """(a reply_to the broker refuses, what the dead letter's reason must say)."""
    if which == "lone-surrogate":  # valid JSON (the \\ud800 escape), but no UTF-8 spells it
        return LONE_SURROGATE, "UnicodeEncodeError"
    if case.kind == "redis":
        import redis

        key = f"{case.queue}:a-string"
        r = redis.Redis.from_url(case.url)
        try:
            r.set(key, "not a stream")
        finally:
            r.close()
        return key, "WRONGTYPE"
    if case.kind == "rabbitmq":
        return "q" * 300, "ShortStringTooLong"
    return "bad/topic!", "Invalid topic"


@pytest.mark.parametrize("which", ["refused", "lone-surrogate"])
async def test_a_bad_reply_destination_is_dead_lettered_and_the_rest_served(case: Case, which: str,
                                                                            tmp_path) -> None:
    dest, why = _bad_destination(case, which)
    client = await open_client(case.url, case.queue)
    try:
        # A long max-wait: the refused reply shares a batch with good ones, which must not suffer for it.
        with worker(case.url, case.queue, "--model", "echo", "--max-batch", "16", "--max-wait-ms", "300",
                    "--metrics-format", "json", tmp_path=tmp_path) as w:
            await client.send_to(dest, ["bad"], start_seq=1000)
            good = await client.send([f"good {i}" for i in range(10)])
            assert await client.wait_for(10), w.log()
            letters = await _dead_letters(case.url, case.dlq, 1)
            assert w.terminate() == 0, w.log()
        log = w.log()
        [stopped] = w.events("stopped")
    finally:
        await client.transport.aclose()
        if case.kind == "redis":
            import redis

            r = redis.Redis.from_url(case.url)
            r.delete(f"{case.queue}:a-string")
            r.close()
    assert sorted(client.replies) == good and client.duplicates == 0
    # Acknowledged only once durable, and all of it: nothing is left for a restarted worker to answer again.
    assert await asyncio.get_running_loop().run_in_executor(None, case.remaining) == 0
    reasons = [(m.deaths[0].reason or "") for m in letters if m.deaths]
    assert len(reasons) == 1 and reasons[0].startswith("reply to ") and why in reasons[0], letters
    assert letters[0].deaths[0].queue == case.queue
    assert stopped["dead_lettered"] == 1 and stopped["reply_failures"] == 1, stopped
    assert stopped["held"] == 0 and stopped["task_failures"] == 0, stopped
    assert "Traceback" not in log and "never retrieved" not in log, log


async def test_an_unencodable_model_output_is_an_error_reply_and_a_dead_letter(redis_url: str, tmp_path) -> None:
    import redis

    queue = unique("qdeck-test-unenc")
    client = await open_client(redis_url, queue)
    try:
        with worker(redis_url, queue, "--model", "tests.loadgen.settle_models:unencodable", "--max-batch", "8",
                    "--max-wait-ms", "300", "--metrics-format", "json", tmp_path=tmp_path) as w:
            await client.send(["a", "poison", "b"])
            assert await client.wait_for(3), w.log()
            assert w.terminate() == 0, w.log()
        [stopped] = w.events("stopped")
        r = redis.Redis.from_url(redis_url)
        try:
            letters = r.xrange(f"{queue}:dlq")
            pending = int(r.xpending(queue, "qdeck-workers")["pending"])
        finally:
            r.close()
    finally:
        await client.transport.aclose()
        with redis.Redis.from_url(redis_url) as r:  # even when the test fails: nothing left on the shared Redis
            r.delete(queue, f"{queue}:dlq")
    assert [client.replies[i].output for i in (1, 3)] == ["a", "b"]
    error = client.replies[2].error
    assert error is not None and error.startswith("model output cannot be encoded"), error
    assert len(letters) == 1 and letters[0][1][b"reason"].startswith(b"model output cannot be encoded")
    assert pending == 0
    assert stopped["errors"] == 1 and stopped["dead_lettered"] == 1 and stopped["task_failures"] == 0, stopped
    assert "Traceback" not in w.log()


async def test_redis_at_maxmemory_acks_nothing_and_loses_nothing(tmp_path) -> None:
    """A private Redis (killed afterwards) at maxmemory with noeviction refuses every XADD: neither the replies nor
    their dead letters can be written, so nothing may be acknowledged; once memory is back, every request is
    answered from the pending entries."""
    import redis

    from console import embedded_redis

    proc, url = embedded_redis.start()
    queue = "qdeck-oom"
    r = redis.Redis.from_url(url)
    client = await open_client(url, queue)
    try:
        with worker(url, queue, "--model", "synthetic:base_ms=800", "--max-batch", "32", "--max-wait-ms", "50",
                    "--claim-idle", "0.5", "--metrics-format", "json", tmp_path=tmp_path) as w:
            await client.send([f"m{i}" for i in range(20)])
            wait_sync(lambda: int(r.xpending(queue, "qdeck-workers")["pending"]) == 20, what="all 20 read")
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", 1)  # from now on every XADD is refused with OOM
            time.sleep(2.5)  # the batch's settle fails, and retries of the claimed entries fail again
            pending_during = int(r.xpending(queue, "qdeck-workers")["pending"])
            replies_during = len(client.replies)
            dlq_during = r.exists(f"{queue}:dlq")
            r.config_set("maxmemory", 0)
            assert await client.wait_for(20, timeout=30), w.log()
            wait_sync(lambda: int(r.xpending(queue, "qdeck-workers")["pending"]) == 0, what="all acked")
            assert w.terminate() == 0, w.log()
        [stopped] = w.events("stopped")
        log = w.log()
    finally:
        await client.transport.aclose()
        r.close()
        embedded_redis.stop(proc)
    assert (pending_during, replies_during, dlq_during) == (20, 0, 0)
    assert sorted(client.replies) == list(range(1, 21))
    assert stopped["held"] >= 20 and stopped["dead_lettered"] == 0, stopped
    assert "OutOfMemoryError" in log and "Traceback" not in log, log


@pytest.mark.rabbitmq
async def test_rabbitmq_dead_letter_is_confirmed_even_if_its_queue_was_deleted(vhost, tmp_path) -> None:
    """Dead letters go out mandatory, on a confirm channel: one that cannot be routed (someone deleted the
    dead-letter queue) comes back, the queue is declared again and the dead letter re-sent, and only its confirm
    lets the request be acked."""
    queue = unique("qdeck-test-dlq-gone")
    dlq = f"{queue}.dlq"
    with worker(vhost.url, queue, "--model", "echo", "--max-wait-ms", "1", "--metrics-format", "json",
                tmp_path=tmp_path) as w:
        ch = vhost.channel()
        ch.queue_delete(dlq)
        ch.basic_publish("", queue, b"\xff not an envelope")
        ch.close()
        wait_sync(lambda: vhost.exact_depth(queue) == 0, what="the request taken")
        time.sleep(0.5)
        assert w.terminate() == 0, w.log()
    [stopped] = w.events("stopped")
    letters = await _dead_letters(vhost.url, dlq, 1, timeout=10)
    assert len(letters) == 1 and letters[0].deaths[0].reason.startswith("malformed request"), letters
    assert vhost.exact_depth(queue) == 0
    assert stopped["dead_lettered"] == 1, stopped


class _FlakySource:
    """Hands out one request per fetch; its first settle raises (a broker hiccup nobody foresaw)."""

    queue = "flaky"
    dead_letter_name = "flaky.dlq"

    def __init__(self, bodies: list[bytes]) -> None:
        from loadgen.worker.source import Delivery

        self._left = [Delivery(b, i) for i, b in enumerate(bodies)]
        self.settled: list[Any] = []
        self._failed = False

    async def start(self) -> None:
        return None

    async def fetch(self, max_items: int, timeout_s: float) -> list[Any]:
        if self._left:
            out, self._left = self._left[:1], self._left[1:]
            out[0].dequeued_ns = time.time_ns()
            return out
        await asyncio.sleep(min(timeout_s, 0.01))
        return []

    async def settle(self, replies: list[Any], dead: list[Any], done: list[Any]) -> Any:
        if not self._failed:
            self._failed = True
            raise RuntimeError("the broker said something odd")
        self.settled.extend(done)
        from loadgen.worker import source

        settlement = getattr(source, "Settlement", None)
        return settlement(replied=len(replies)) if settlement else None

    async def stop_fetching(self) -> list[Any]:
        return []

    async def release(self, deliveries: list[Any]) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_a_failed_batch_task_is_counted_logged_and_the_worker_keeps_serving(caplog, capsys) -> None:
    from loadgen.envelope import Request, encode_request
    from loadgen.worker.core import Worker, WorkerConfig
    from loadgen.worker.metrics import MetricsReporter
    from loadgen.worker.models import load_model

    bodies = [encode_request(Request("r", i, 1, 1, "replies", "w", f"p{i}")) for i in range(1, 4)]
    source = _FlakySource(bodies)
    metrics = MetricsReporter("w1", "cpu", "echo")
    w = Worker(source, load_model("echo", "cpu"), WorkerConfig(max_batch=1, max_wait_s=0, metrics_interval_s=60),
               worker_id="w1", metrics=metrics)
    stop = asyncio.Event()
    served = asyncio.create_task(w.run(stop))
    deadline = time.monotonic() + 10
    while len(source.settled) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await asyncio.wait_for(served, 10)
        gc.collect()
    assert len(source.settled) == 2  # the two batches after the failed one
    assert metrics.counters.task_failures == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "the broker said something odd" in line]
    assert len(lines) == 1 and "RuntimeError" in lines[0], err
    assert "never retrieved" not in caplog.text and "Traceback" not in err
