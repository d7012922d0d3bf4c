"""Redis: a crashed worker's requests are taken over in time for the load generator still to count their replies,
and a live worker's long batch is never taken over, by others or by itself (issue 15, item 4)."""

from __future__ import annotations

import asyncio

import pytest

from tests.rabbit import wait_sync
from tests.workers import open_client, unique, worker

pytestmark = pytest.mark.slow


def test_default_claim_idle_is_shorter_than_the_default_reply_timeout() -> None:
    """An entry is taken over between claim-idle and 1.5 × claim-idle after its worker died (XAUTOCLAIM scans the
    pending entries every half claim-idle): that, and the answer, must fit in the generator's reply timeout."""
    from loadgen.run.spec import RunSpec
    from loadgen.worker.runner import WorkerOptions

    timeout_s = RunSpec.__dataclass_fields__["timeout_s"].default
    claim_idle_s = WorkerOptions(queue="q").claim_idle_s
    assert isinstance(timeout_s, float) and 1.5 * claim_idle_s < timeout_s


async def test_a_killed_workers_requests_are_answered_before_the_default_timeout(redis_url: str, tmp_path) -> None:
    """With every default (claim-idle and the generator's --timeout), the requests a SIGKILLed worker held are
    answered by the next worker before the load generator would have given up on them."""
    import redis

    from loadgen.run.spec import RunSpec

    timeout_s = RunSpec.__dataclass_fields__["timeout_s"].default
    queue = unique("qdeck-test-claimdef")
    client = await open_client(redis_url, queue)
    r = redis.Redis.from_url(redis_url)
    try:
        with worker(redis_url, queue, "--model", "synthetic:base_ms=60000", "--max-batch", "8",
                    "--max-wait-ms", "100", tmp_path=tmp_path) as first:
            await client.send([f"k{i}" for i in range(8)])
            wait_sync(lambda: int(r.xpending(queue, "qdeck-workers")["pending"]) == 8, what="entries pending")
            first.kill()
        with worker(redis_url, queue, "--model", "echo", tmp_path=tmp_path) as second:
            answered = await client.wait_for(8, timeout=timeout_s + 2)
            log = second.log()
    finally:
        await client.transport.aclose()
        r.delete(queue)
        r.close()
    assert answered, log
    late = {seq: (client.received_ns[seq] - client.sent_ns[seq]) / 1e9 for seq in client.replies}
    assert max(late.values()) < timeout_s, late


async def test_a_live_workers_long_batch_is_not_claimed_by_itself(redis_url: str, tmp_path) -> None:
    """A batch that outlasts --claim-idle stays this worker's: its second model slot keeps reading, and must not
    take over (and answer again) the entries the first slot is still working on."""
    import redis

    queue = unique("qdeck-test-selfclaim")
    client = await open_client(redis_url, queue)
    try:
        with worker(redis_url, queue, "--model", "synthetic:base_ms=1500", "--max-batch", "4", "--max-wait-ms", "50",
                    "--concurrency", "2", "--claim-idle", "0.3", "--metrics-format", "json",
                    tmp_path=tmp_path) as w:
            await client.send([f"s{i}" for i in range(4)])
            assert await client.wait_for(4, timeout=20), w.log()
            await client.settle(quiet_s=2.0)
            assert w.terminate() == 0, w.log()
        [stopped] = w.events("stopped")
    finally:
        await client.transport.aclose()
        r = redis.Redis.from_url(redis_url)
        r.delete(queue)
        r.close()
    assert client.duplicates == 0 and stopped["items"] == 4, stopped


async def test_a_live_workers_long_batch_is_not_claimed_by_another(redis_url: str, tmp_path) -> None:
    """A worker keeps the entries it works on fresh, so a second worker's XAUTOCLAIM leaves them alone however
    long the batch takes."""
    import redis

    queue = unique("qdeck-test-otherclaim")
    client = await open_client(redis_url, queue)
    r = redis.Redis.from_url(redis_url)
    try:
        with worker(redis_url, queue, "--model", "synthetic:base_ms=2500", "--max-batch", "4", "--max-wait-ms", "50",
                    "--claim-idle", "0.5", tmp_path=tmp_path) as slow:
            await client.send([f"o{i}" for i in range(4)])
            wait_sync(lambda: int(r.xpending(queue, "qdeck-workers")["pending"]) == 4, what="entries pending")
            with worker(redis_url, queue, "--model", "echo", "--claim-idle", "0.5", "--metrics-format", "json",
                        tmp_path=tmp_path) as other:
                assert await client.wait_for(4, timeout=20), slow.log()
                await asyncio.sleep(0.5)
                assert other.terminate() == 0
            [stopped] = other.events("stopped")
    finally:
        await client.transport.aclose()
        r.delete(queue)
        r.close()
    assert client.duplicates == 0 and stopped["items"] == 0, stopped
