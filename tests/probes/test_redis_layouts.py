"""Redis job-framework layouts against the real Redis: RQ (built by real RQ: jobs enqueued with ``rq.Queue``, run by
an in-process burst ``rq.SimpleWorker``) and Celery's Redis transport (built by real kombu: ``Connection``,
``Exchange``, ``Queue``, a producer and an unacked ``SimpleQueue.get``)."""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
import rq  # a dev dependency: missing, these tests fail rather than skip

from probes import open_probe, parse_broker_url
from probes.models import BrokerSnapshot, PeekResult
from tests.cli import qdeck

pytestmark = pytest.mark.redis



@dataclass
class RqState:
    url: str
    busy: str  # two failed jobs, one waiting, one worker listening, one job in the started registry
    idle: str  # one job finished: the queue list is gone, the queue is only in rq:queues


def _run_async(coro: object) -> object:
    import asyncio

    return asyncio.run(coro)  # type: ignore[arg-type]


def _delete_rq(r: redis.Redis, names: list[str], job_ids: list[str]) -> None:
    keys: set[bytes] = set()
    for marker in [*names, *job_ids]:
        keys.update(r.scan_iter(match=f"rq:*{marker}*", count=1000))
    if keys:
        r.delete(*keys)
    for name in names:
        r.srem("rq:queues", f"rq:queue:{name}")
    for member in r.smembers("rq:workers"):
        if any(n.encode() in member for n in names):
            r.srem("rq:workers", member)


@pytest.fixture
def rq_state(redis_url: str) -> Iterator[RqState]:
    r = redis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex[:8]
    busy, idle = f"qdeck-rq-{tag}", f"qdeck-rq-{tag}-idle"
    job_ids: list[str] = []
    worker = None
    try:
        q_busy, q_idle = rq.Queue(busy, connection=r), rq.Queue(idle, connection=r)
        job_ids.append(q_busy.enqueue(operator.truediv, 1, 0).id)
        job_ids.append(q_busy.enqueue("builtins.int", "abc", description="parse abc").id)
        job_ids.append(q_idle.enqueue(operator.add, 1, 2).id)
        rq.SimpleWorker([q_busy, q_idle], connection=r, name=f"burst-{busy}").work(burst=True)
        job_ids.append(q_busy.enqueue(operator.add, 2, 2).id)  # left waiting
        worker = rq.SimpleWorker([q_busy], connection=r, name=f"listening-{busy}")
        worker.register_birth()  # rq:workers and rq:workers:<queue>, as a running worker does
        # A job being executed: RQ's started (work-in-progress) registry holds "<job id>:<execution id>".
        r.zadd(f"rq:wip:{busy}", {f"{job_ids[-1]}:exec-{tag}": 9_999_999_999})
        yield RqState(redis_url, busy, idle)
    finally:
        if worker is not None:
            worker.register_death()
        _delete_rq(r, [busy, idle], job_ids)
        r.delete("rq:clean_groups")  # the burst worker's registry-cleaning lock (it has a TTL too)
        r.close()


def _snapshot(url: str) -> BrokerSnapshot:
    async def go() -> BrokerSnapshot:
        probe = open_probe(parse_broker_url(url))
        try:
            return await probe.snapshot()
        finally:
            await probe.aclose()
    return _run_async(go())  # type: ignore[return-value]


def _peek(url: str, queue: str, n: int = 10) -> PeekResult:
    async def go() -> PeekResult:
        probe = open_probe(parse_broker_url(url))
        try:
            return await probe.peek(queue, n)
        finally:
            await probe.aclose()
    return _run_async(go())  # type: ignore[return-value]


def test_rq_queues_registries_and_workers_in_the_snapshot(rq_state: RqState) -> None:
    snap = _snapshot(rq_state.url)
    busy = snap.queue(f"rq:queue:{rq_state.busy}")
    assert busy is not None, [q.name for q in snap.queues if rq_state.busy in q.name]
    assert (busy.kind, busy.queue_type, busy.depth, busy.in_flight, busy.consumers) == \
        ("list", "rq queue", 1, 1, 1)
    assert busy.dead_letter_target == f"rq:failed:{rq_state.busy}"
    assert busy.dead_letter_queues == (f"rq:failed:{rq_state.busy}",)
    assert not busy.is_dead_letter
    assert busy.config["failed"] == "2" and busy.config["started"] == "1"
    # An empty queue has no list key: it is found through rq:queues.
    idle = snap.queue(f"rq:queue:{rq_state.idle}")
    assert idle is not None and (idle.depth, idle.in_flight, idle.config["finished"]) == (0, 0, "1")
    failed = snap.queue(f"rq:failed:{rq_state.busy}")
    assert failed is not None and failed.is_dead_letter
    assert (failed.queue_type, failed.depth) == ("rq failed registry", 2)
    # RQ internals (results streams, job hashes, registries other than failed) are not queues.
    assert not [q.name for q in snap.queues if q.name.startswith(("rq:results:", "rq:job:", "rq:wip:",
                                                                   "rq:finished:", "rq:workers"))]


def test_rq_failed_registry_peeks_as_dead_letters(rq_state: RqState) -> None:
    result = _peek(rq_state.url, f"rq:failed:{rq_state.busy}")
    assert len(result.messages) == 2
    by_reason = {m.death_reason: m for m in result.messages}
    assert set(by_reason) == {"ZeroDivisionError: division by zero",
                              "ValueError: invalid literal for int() with base 10: 'abc'"}
    m = by_reason["ValueError: invalid literal for int() with base 10: 'abc'"]
    assert m.original_queue == rq_state.busy and m.death_count == 1
    assert m.first_death_time is not None and m.message_id
    assert m.body == b"parse abc" and m.size == len(b"parse abc")
    assert m.headers["origin"] == rq_state.busy and m.headers["status"] == "failed"
    assert m.headers["description"] == "parse abc"
    assert "Traceback" in m.headers["exception"]
    z = by_reason["ZeroDivisionError: division by zero"]
    assert z.headers["function"] == "_operator.truediv" and z.body == b"_operator.truediv(1, 0)"
    # The queue itself peeks as its jobs, not as bare job ids.
    waiting = _peek(rq_state.url, f"rq:queue:{rq_state.busy}")
    assert [(w.headers["status"], w.body, w.deaths) for w in waiting.messages] == \
        [("queued", b"_operator.add(2, 2)", ())]


def test_rq_cli_queues_dlq_list_and_peek(rq_state: RqState) -> None:
    r = qdeck("queues", "-b", rq_state.url, "--filter", rq_state.busy, "--json")
    assert r.code == 0, r.all
    rows = {q["name"]: q for q in r.json()["queues"]}
    assert set(rows) == {f"rq:queue:{rq_state.busy}", f"rq:queue:{rq_state.idle}", f"rq:failed:{rq_state.busy}",
                         f"rq:failed:{rq_state.idle}"}, sorted(rows)
    assert rows[f"rq:failed:{rq_state.busy}"]["is_dead_letter"]

    r = qdeck("dlq", "list", "-b", rq_state.url, "--json")
    assert r.code == 0, r.all
    fed = {d["queue"]["name"]: d["fed_by"] for d in r.json()["dead_letter_queues"]}
    assert fed[f"rq:failed:{rq_state.busy}"] == [f"rq:queue:{rq_state.busy}"]

    r = qdeck("dlq", "peek", f"rq:failed:{rq_state.busy}", "-b", rq_state.url)
    assert r.code == 0, r.all
    assert "ZeroDivisionError: division by zero" in r.out and f"queue {rq_state.busy}" in r.out
    assert "None" not in r.out and "is a Redis zset" not in r.all
    r = qdeck("dlq", "peek", f"rq:failed:{rq_state.busy}", "-b", rq_state.url, "--json")
    assert r.code == 0, r.all
    doc = r.json()
    assert {m["original_queue"] for m in doc["messages"]} == {rq_state.busy}
    assert "parse abc" in {m["body_text"] for m in doc["messages"]}

    r = qdeck("consumers", f"rq:queue:{rq_state.busy}", "-b", rq_state.url, "--json")
    assert r.code == 0, r.all
    assert [c["tag"] for c in r.json()["consumers"]] == [f"listening-{rq_state.busy}"]

    # The bare queue name is not a key: one line that says where its jobs and failed jobs are.
    r = qdeck("dlq", "peek", rq_state.busy, "-b", rq_state.url)
    assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r.all
    assert f"rq:failed:{rq_state.busy}" in r.err and "Traceback" not in r.err


def test_rq_legacy_hostile_and_missing_jobs(redis_url: str) -> None:
    """State by hand, following RQ < 1.12's layout (the traceback zlib-compressed in the job hash's ``exc_info``,
    no results stream): a hostile description, a job whose hash has expired, and a zset that is not RQ's."""
    import zlib

    tag = uuid.uuid4().hex[:8]
    name = f"qdeck-rq-legacy-{tag}"
    r = redis.Redis.from_url(redis_url)
    try:
        r.sadd("rq:queues", f"rq:queue:{name}")
        r.hset(f"rq:job:{tag}-a", mapping={
            "origin": name, "status": "failed", "description": "evil\x1b]0;pwned\x07(\u202e)",
            "data": zlib.compress(b"\x80\x05not a real pickle"), "ended_at": "2024-05-01T10:00:00.000000Z",
            "exc_info": zlib.compress(b"Traceback (most recent call last):\n  ...\nRuntimeError: model \x1b[31mOOM\n")})
        r.zadd(f"rq:failed:{name}", {f"{tag}-a": 1, f"{tag}-gone": 2})
        r.zadd(f"qdeck-plain-zset-{tag}", {"x": 1})
        out = qdeck("dlq", "peek", f"rq:failed:{name}", "-b", redis_url)
        assert out.code == 0, out.all
        assert "\x1b" not in out.out and "\u202e" not in out.out and "\x07" not in out.out
        assert "RuntimeError: model \\x1b[31mOOM" in out.out and f"queue {name}" in out.out
        assert "missing: its hash expired or was deleted" in out.out
        doc = qdeck("dlq", "peek", f"rq:failed:{name}", "-b", redis_url, "--json").json()
        assert doc["messages"][0]["first_death_time"] == "2024-05-01T10:00:00+00:00"
        refused = qdeck("dlq", "peek", f"qdeck-plain-zset-{tag}", "-b", redis_url)
        assert refused.code == 2 and "is a Redis zset" in refused.err and refused.err.count("\n") == 1
    finally:
        r.delete(f"rq:job:{tag}-a", f"rq:failed:{name}", f"qdeck-plain-zset-{tag}")
        r.srem("rq:queues", f"rq:queue:{name}")
        r.close()


# ---- Celery (kombu's Redis transport) ------------------------------------------------------------------------

kombu = pytest.importorskip("kombu")


def test_celery_redis_transport_queues_with_priorities_and_unacked(redis_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    name, exchange_name = f"qdeck-celery-{tag}", f"qdeck-celery-ex-{tag}"
    conn = kombu.Connection(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        exchange = kombu.Exchange(exchange_name, type="direct")
        queue = kombu.Queue(name, exchange, routing_key=name)
        producer = conn.Producer()
        for i in range(3):
            producer.publish({"task": "tasks.embed", "n": i}, exchange=exchange, routing_key=name,
                             declare=[queue], serializer="json")
        producer.publish({"task": "tasks.embed", "n": 9}, exchange=exchange, routing_key=name, declare=[queue],
                         serializer="json", priority=6)  # kombu keeps priorities in "<queue>\x06\x16<step>" lists
        consumer_queue = conn.SimpleQueue(queue)
        taken = consumer_queue.get(timeout=5)  # delivered, not acked: in the `unacked` hash
        assert taken is not None
        snap = _snapshot(redis_url)
        rows = [q for q in snap.queues if name in q.name]
        assert [(q.name, q.kind, q.queue_type, q.depth, q.in_flight) for q in rows] == \
            [(name, "list", "celery queue", 3, 1)], rows
        assert rows[0].config.get("exchange") == exchange_name
        cli = qdeck("queues", "-b", redis_url, "--filter", name, "--json")
        assert cli.code == 0, cli.all
        assert [q["name"] for q in cli.json()["queues"]] == [name]
        taken.ack()
        consumer_queue.close()
    finally:
        conn.release()
        keys = [k for k in r.scan_iter(match=f"*{tag}*", count=1000)]
        if keys:
            r.delete(*keys)
        r.close()


def test_celery_queue_found_without_list_pattern_match(redis_url: str) -> None:
    """A queue named unlike any list pattern is still listed, from kombu's binding table (state by hand, following
    kombu's layout: ``_kombu.binding.<exchange>`` holds ``routing_key\\x06\\x16pattern\\x06\\x16queue``)."""
    tag = uuid.uuid4().hex[:8]
    name, exchange = f"qdeck-emb-{tag}", f"qdeck-x-{tag}"
    r = redis.Redis.from_url(redis_url)
    try:
        r.sadd(f"_kombu.binding.{exchange}", f"{name}\x06\x16\x06\x16{name}")
        r.lpush(name, json.dumps({"body": "x"}))
        snap = _snapshot(redis_url)
        row = snap.queue(name)
        assert row is not None and (row.queue_type, row.depth) == ("celery queue", 1)
    finally:
        r.delete(f"_kombu.binding.{exchange}", name)
        r.close()


def test_consumers_of_an_idle_rq_or_celery_queue_is_not_an_error(rq_state: RqState) -> None:
    """RQ and kombu delete a queue's list when it empties: ``consumers`` on such a queue lists its consumers (none
    here) with exit 0, as ``queues`` lists the queue; only a name no layout knows is "not found" (exit 2)."""
    idle = qdeck("consumers", f"rq:queue:{rq_state.idle}", "-b", rq_state.url, "--json")
    assert idle.code == 0 and idle.json() == {"consumers": []}, idle.all
    tag = uuid.uuid4().hex[:8]
    name, exchange = f"qdeck-emb-{tag}", f"qdeck-x-{tag}"
    r = redis.Redis.from_url(rq_state.url)
    try:
        r.sadd(f"_kombu.binding.{exchange}", f"{name}\x06\x16\x06\x16{name}")  # bound, its list empty (absent)
        empty = qdeck("consumers", name, "-b", rq_state.url)
        assert empty.code == 0 and f"no consumers on {name}" in empty.out, empty.all
    finally:
        r.delete(f"_kombu.binding.{exchange}")
        r.close()
    typo = qdeck("consumers", f"rq:queue:{rq_state.idle}-typo", "-b", rq_state.url)
    assert typo.code == 2 and typo.err.count("\n") == 1, typo.all
