"""Dead-letter actions on RQ's failed registry against real Redis, with jobs failed by real RQ (``rq.Queue`` and an
in-process burst ``rq.SimpleWorker``): a redrive is RQ's own requeue field for field, and RQ runs the job again;
the loop guard counts across failures; delete removes the job as RQ does; export → import round-trips; read-only
refuses; the pre-flight names a queue nobody works on."""

from __future__ import annotations

import dataclasses
import json
import operator
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import rq  # a dev dependency: missing, these tests fail rather than skip

from probes.dlq import codec
from probes.dlq.engine import Action, Report, run_action
from probes.dlq.model import Place
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.dlq.writes import ReadOnly
from probes.urls import BrokerTarget, parse_broker_url

pytestmark = pytest.mark.redis


@dataclass
class Failed:
    client: redis.Redis
    url: str
    queue: str
    jobs: list[str]  # failed, in the registry's order (its score: when they expire; ties by id)

    @property
    def registry(self) -> str:
        return f"rq:failed:{self.queue}"

    def work(self) -> None:
        """One burst of a real RQ worker on the queue."""
        rq.SimpleWorker([rq.Queue(self.queue, connection=self.client)], connection=self.client,
                        name=f"burst-{uuid.uuid4().hex[:8]}").work(burst=True)


@pytest.fixture
def failed(redis_url: str) -> Iterator[Failed]:
    client = redis.Redis.from_url(redis_url)
    queue = f"qdeck-dlq-rq-{uuid.uuid4().hex[:8]}"
    q = rq.Queue(queue, connection=client)
    jobs = [q.enqueue(operator.truediv, i, 0, description=f"divide {i}").id for i in range(4)]
    state = Failed(client, redis_url, queue, jobs)
    try:
        state.work()
        state.jobs = [j.decode() for j in client.zrange(state.registry, 0, -1)]
        assert sorted(state.jobs) == sorted(jobs)
        yield state
    finally:
        keys = {k for marker in [queue, *jobs] for k in client.scan_iter(match=f"rq:*{marker}*", count=1000)}
        if keys:
            client.delete(*keys)
        client.srem("rq:queues", f"rq:queue:{queue}")
        client.delete("rq:clean_groups")  # the burst worker's registry-cleaning lock
        client.close()


def target(url: str, writable: bool = True) -> BrokerTarget:
    return dataclasses.replace(parse_broker_url(url), allow_write=writable, name="test")


async def act(url: str, source: str, action: Action, selection: Selection | None = None,
              writable: bool = True) -> Report:
    async with open_store(target(url, writable), source) as s:
        return await run_action(s, action, selection or Selection())


def job(f: Failed, job_id: str) -> dict[bytes, bytes]:
    return f.client.hgetall(f"rq:job:{job_id}")


async def test_redrive_is_rqs_own_requeue_and_rq_runs_the_job_again(failed: Failed) -> None:
    f = failed
    ours, theirs = f.jobs[1], f.jobs[0]
    rq.registry.FailedJobRegistry(f.queue, connection=f.client).requeue(theirs)  # RQ itself, for comparison
    report = await act(f.url, f.registry, Action("redrive", dry_run=False, force=True),
                       Selection.parse(ids=[ours]))
    ledger = report.ledger
    assert (ledger.selected, ledger.moved) == (1, 1) and ledger.adds_up()
    assert ledger.destinations == {f.queue: 1} and ledger.reasons == {"ZeroDivisionError: division by zero": 1}
    assert f.client.lrange(f"rq:queue:{f.queue}", 0, -1) == [theirs.encode(), ours.encode()]  # RPUSH, RQ's end
    a, b = job(f, theirs), job(f, ours)
    differ = {b"data", b"description", b"created_at", b"enqueued_at", b"last_heartbeat"}  # per job / per moment
    assert {k: v for k, v in a.items() if k not in differ} == \
        {k: v for k, v in b.items() if k not in differ | {REDRIVE_ID.encode(), REDRIVE_COUNT.encode()}}
    assert b[b"status"] == b"queued" and b[b"ended_at"] == b"" and b[REDRIVE_COUNT.encode()] == b"1"
    assert f.client.zrange(f.registry, 0, -1) == [j.encode() for j in f.jobs[2:]]
    f.work()  # RQ runs both; they fail again, and ours still carries qdeck's count
    assert set(f.client.zrange(f.registry, 0, -1)) == {j.encode() for j in f.jobs}
    again = await act(f.url, f.registry, Action("redrive"), Selection.parse(ids=[ours]))
    assert again.samples[0].record.redrives == 1 and again.samples[0].record.original_id == ours


async def test_loop_guard_leaves_a_looping_job_in_the_registry(failed: Failed) -> None:
    f = failed
    f.client.hset(f"rq:job:{f.jobs[0]}", REDRIVE_COUNT, "3")
    report = await act(f.url, f.registry, Action("redrive", dry_run=False, force=True, max_redrives=3))
    assert (report.ledger.moved, report.ledger.skipped, report.ledger.parked) == (3, 1, 0)
    assert "redriven 3 times already" in next(iter(report.ledger.skip_reasons))
    assert f.client.zrange(f.registry, 0, -1) == [f.jobs[0].encode()]


async def test_delete_and_purge_remove_the_jobs_as_rq_does(failed: Failed) -> None:
    f = failed
    gone = f.jobs[2]
    assert f.client.exists(f"rq:results:{gone}")
    report = await act(f.url, f.registry, Action("delete", dry_run=False), Selection.parse(ids=[gone]))
    assert report.ledger.deleted == 1 and not f.client.exists(f"rq:job:{gone}", f"rq:results:{gone}")
    assert gone.encode() not in f.client.zrange(f.registry, 0, -1)
    report = await act(f.url, f.registry, Action("purge", dry_run=False))
    assert report.ledger.deleted == 3 and f.client.zcard(f.registry) == 0
    assert not any(f.client.exists(f"rq:job:{j}") for j in f.jobs)


async def export(url: str, source: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    async with open_store(target(url, writable=False), source) as s:
        await run_action(s, Action("export"), Selection(),
                         on_export=lambda r: docs.append(json.loads(json.dumps(codec.record_to_json(r)))))
    return docs


async def test_export_import_round_trip(failed: Failed) -> None:
    f = failed
    first = await export(f.url, f.registry)
    assert len(first) == 4 and all(d["origin"] == {"kind": "rq", "name": f.queue, "routing_key": None,
                                                   "partition": None} for d in first)
    hashes = {j: job(f, j) for j in f.jobs}
    await act(f.url, f.registry, Action("purge", dry_run=False))
    records = [codec.record_from_json(d, "test") for d in first]
    async with open_store(target(f.url), f.registry) as s:
        assert await s.write(await s.resolve(f.registry), records) == [None] * 4
    assert {j: job(f, j) for j in f.jobs} == hashes  # every field of every job hash, byte for byte
    assert f.client.ttl(f"rq:job:{f.jobs[0]}") > 0  # RQ's failure_ttl, as FailedJobRegistry.add sets it
    assert await export(f.url, f.registry) == first  # the reasons too: the result entries came back
    async with open_store(target(f.url), f"rq:queue:{f.queue}") as s:  # an existing job is never overwritten
        out = await s.write(await s.resolve(f"rq:queue:{f.queue}"), records[:1])
    assert out[0] is None  # the same hash: written again, enqueued
    assert f.client.lrange(f"rq:queue:{f.queue}", 0, -1) == [f.jobs[0].encode()]
    changed = dataclasses.replace(records[1], properties={**records[1].properties, "description": b"other"})
    async with open_store(target(f.url), f"rq:queue:{f.queue}") as s:
        out = await s.write(Place("rq", f.queue), [changed])
    assert out[0] is not None and "different hash" in out[0]


async def test_read_only_and_preflight(failed: Failed) -> None:
    f = failed
    with pytest.raises(ReadOnly, match="allow_write = true"):
        await act(f.url, f.registry, Action("redrive", dry_run=False), writable=False)
    with pytest.raises(ReadOnly):
        await act(f.url, f.registry, Action("purge", dry_run=False), writable=False)
    assert f.client.zcard(f.registry) == 4
    dry = await act(f.url, f.registry, Action("redrive"), writable=False)  # the burst worker has gone: nobody works
    assert dry.problems == {f.queue: ["nobody consumes it: no RQ worker listens on it"]} and dry.ledger.skipped == 4
    async with open_store(target(f.url), f.registry) as s:
        assert s.parked() is None
        assert (await s.resolve(f"rq:queue:{f.queue}")) == Place("rq", f.queue)
        missing = await s.preflight(Place("rq", "no-such-queue-" + f.queue))
        assert missing and "does not exist" in missing[0]
