"""The inference worker against real RabbitMQ, Redis and Kafka: replies, batching, SIGTERM, dead letters."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from probes import open_probe, parse_broker_url
from tests.loadgen.conftest import Case
from tests.rabbit import wait_sync
from tests.workers import open_client, worker

pytestmark = pytest.mark.slow


async def test_replies_carry_ids_and_ordered_stamps(case: Case, tmp_path) -> None:
    with worker(case.url, case.queue, "--model", "echo", "--max-batch", "8", tmp_path=tmp_path):
        client = await open_client(case.url, case.queue)
        try:
            seqs = await client.send([f"hello {i}" for i in range(40)])
            assert await client.wait_for(40), f"only {len(client.replies)} of 40 replies"
        finally:
            await client.transport.aclose()
    assert sorted(client.replies) == seqs
    for seq, rep in client.replies.items():
        assert rep.output == f"hello {seq - 1}"
        assert rep.error is None and rep.run == client.run
        assert rep.stamps.ordered(), rep.stamps
        assert client.sent_ns[seq] <= rep.stamps.dequeued_ns
        assert rep.stamps.reply_published_ns <= client.received_ns[seq]
        assert 1 <= rep.batch_size <= 8
        assert rep.device == "cpu"


async def test_burst_of_64_makes_four_batches_of_16(case: Case, tmp_path) -> None:
    client = await open_client(case.url, case.queue)
    try:
        # A long max-wait: a batch closes only when it holds 16, however the burst trickles in.
        with worker(case.url, case.queue, "--max-batch", "16", "--max-wait-ms", "3000", tmp_path=tmp_path):
            await client.send([f"r{i}" for i in range(64)])
            assert await client.wait_for(64, timeout=30)
    finally:
        await client.transport.aclose()
    sizes = Counter(rep.batch_size for rep in client.replies.values())
    assert sizes == {16: 64}
    batches = {rep.stamps.batch_formed_ns for rep in client.replies.values()}
    assert len(batches) == 4


async def test_lone_request_waits_at_most_max_wait(case: Case, tmp_path) -> None:
    with worker(case.url, case.queue, "--model", "synthetic:base_ms=10", "--max-batch", "16", "--max-wait-ms", "300",
                tmp_path=tmp_path):
        client = await open_client(case.url, case.queue)
        try:
            [seq] = await client.send(["alone"])
            assert await client.wait_for(1, timeout=20)
        finally:
            await client.transport.aclose()
    rep = client.replies[seq]
    s = rep.stamps
    assert rep.batch_size == 1
    waited = (s.inference_start_ns - s.dequeued_ns) / 1e6
    assert waited >= 290, f"the batch closed after {waited:.1f} ms, before max-wait"
    service = (s.inference_end_ns - s.inference_start_ns) / 1e6
    assert service >= 10
    worker_side = (s.reply_published_ns - s.dequeued_ns) / 1e6
    assert worker_side < 300 + service + 200, f"the worker held a lone request {worker_side:.0f} ms"


async def test_sigterm_mid_stream_loses_nothing(case: Case, tmp_path) -> None:
    total = 300
    client = await open_client(case.url, case.queue)
    try:
        with worker(case.url, case.queue, "--model", "synthetic:base_ms=15", "--max-batch", "4", "--max-wait-ms",
                    "1", tmp_path=tmp_path) as w:
            await client.send([f"m{i}" for i in range(total)])
            assert await client.wait_for(20, timeout=30)
            code = await asyncio.get_running_loop().run_in_executor(None, w.terminate)
            assert code == 0, w.log()
            assert "stopped" in w.log()
        await client.settle(quiet_s=1.0)
    finally:
        await client.transport.aclose()
    replied = len(client.replies)
    assert client.duplicates == 0
    assert 20 <= replied < total, "SIGTERM should have come mid-stream"
    queued = await asyncio.get_running_loop().run_in_executor(None, case.remaining)
    assert replied + queued == total, f"sent {total}, replied {replied}, still queued {queued}"


async def test_malformed_message_is_dead_lettered_and_serving_goes_on(case: Case, tmp_path) -> None:
    with worker(case.url, case.queue, "--model", "echo", "--max-wait-ms", "1", tmp_path=tmp_path):
        client = await open_client(case.url, case.queue)
        try:
            await client.transport.send([b"\xff\xfe not an envelope"])
            await client.transport.send([b'{"v": 1, "t": "req", "run": "x"}'])
            seqs = await client.send(["after the garbage"])
            assert await client.wait_for(1)
        finally:
            await client.transport.aclose()
    assert client.replies[seqs[0]].output == "after the garbage"
    probe = open_probe(parse_broker_url(case.url))
    try:
        deadline = time.monotonic() + 20
        while True:
            result = await probe.peek(case.dlq, 10)
            if len(result.messages) >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await probe.aclose()
    reasons = sorted(m.deaths[0].reason for m in result.messages if m.deaths)
    assert len(reasons) == 2, result
    assert reasons[0].startswith("malformed request: missing field"), reasons
    assert reasons[1].startswith("malformed request: not"), reasons
    assert all(m.deaths[0].queue == case.queue for m in result.messages)


async def test_model_error_fails_only_the_poisoned_request(redis_url: str, tmp_path) -> None:
    """The failure path is broker-independent (the DLQ path of each broker is covered above): Redis only."""
    from tests.workers import unique

    queue = unique("qdeck-test-poison")
    dlq = f"{queue}:dlq"
    with worker(redis_url, queue, "--model", "tests.models:fail_on_poison", "--max-batch", "8",
                "--max-wait-ms", "500", "--max-attempts", "2", tmp_path=tmp_path):
        client = await open_client(redis_url, queue)
        try:
            await client.send(["a", "b", "poison", "c"])
            assert await client.wait_for(4)
        finally:
            await client.transport.aclose()
    by_payload = {rep.seq: rep for rep in client.replies.values()}
    assert by_payload[3].error is not None and "cannot embed poison" in by_payload[3].error
    assert "after 2 attempts" in by_payload[3].error
    assert [by_payload[i].output for i in (1, 2, 4)] == ["a", "b", "c"]
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        entries = r.xrange(dlq)
    finally:
        r.delete(queue, dlq)
        r.close()
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"reason"].startswith(b"model error after 2 attempts: RuntimeError: cannot embed poison")
    assert fields[b"attempts"] == b"2" and fields[b"source"] == queue.encode()


async def test_redis_pending_entries_of_a_killed_worker_are_claimed(redis_url: str, tmp_path) -> None:
    from tests.loadgen.conftest import _redis_remaining
    from tests.workers import unique

    queue = unique("qdeck-test-claim")
    total = 40
    client = await open_client(redis_url, queue)
    try:
        with worker(redis_url, queue, "--model", "synthetic:base_ms=400", "--max-batch", "8", "--max-wait-ms", "1",
                    "--concurrency", "2", tmp_path=tmp_path) as first:
            await client.send([f"k{i}" for i in range(total)])
            import redis

            r = redis.Redis.from_url(redis_url)
            wait_sync(lambda: int(r.xpending(queue, "qdeck-workers")["pending"]) >= 8, what="entries pending")
            first.kill()  # SIGKILL: no chance to finish, its entries stay pending
            pending_after_kill = int(r.xpending(queue, "qdeck-workers")["pending"])
            r.close()
        assert pending_after_kill >= 8
        answered_before = len(client.replies)
        with worker(redis_url, queue, "--model", "echo", "--claim-idle", "0.5", tmp_path=tmp_path) as second:
            assert await client.wait_for(total, timeout=30), second.log()
        left = _redis_remaining(redis_url, queue)()
    finally:
        await client.transport.aclose()
        import redis

        r = redis.Redis.from_url(redis_url)
        r.delete(queue)
        r.close()
    assert answered_before < total
    assert sorted(client.replies) == list(range(1, total + 1))
    assert left == 0


class _ThreadRecordingModel:
    """Records which thread warms it up and which runs it."""

    name = "thread-recorder"
    device = "cpu"

    def __init__(self) -> None:
        self.warm_thread: int | None = None
        self.infer_threads: set[int] = set()

    def warmup(self) -> None:
        self.warm_thread = threading.get_ident()

    def infer(self, inputs: list[object]) -> list[object]:
        self.infer_threads.add(threading.get_ident())
        return list(inputs)


async def test_model_is_warmed_on_the_thread_that_runs_it(redis_url: str) -> None:
    """An OpenMP runtime keeps a thread team per calling thread: a warm-up on another thread would leave a second
    team behind, and libgomp then stops spin-waiting (the model ran ~25 % slower on 2 cores)."""
    from loadgen.worker.core import WorkerConfig
    from loadgen.worker.runner import WorkerOptions, serve
    from tests.workers import unique

    queue = unique("qdeck-test-warm")
    model = _ThreadRecordingModel()
    stop = asyncio.Event()
    opts = WorkerOptions(queue=queue, model="thread-recorder", config=WorkerConfig(max_batch=4, max_wait_s=0.001))
    served = asyncio.create_task(serve(parse_broker_url(redis_url), opts, model=model, stop=stop))
    client = await open_client(redis_url, queue)
    try:
        await client.send([f"w{i}" for i in range(12)])
        assert await client.wait_for(12)
    finally:
        stop.set()
        await served
        await client.transport.aclose()
        import redis

        r = redis.Redis.from_url(redis_url)
        r.delete(queue)
        r.close()
    assert model.warm_thread is not None and model.infer_threads == {model.warm_thread}
    assert model.warm_thread != threading.get_ident()  # a blocking model never runs on the event loop
