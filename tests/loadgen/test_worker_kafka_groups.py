"""Kafka worker groups (issue 15, item 3): a consumer group per request topic, rebalances that commit only what the
worker owns, and topics created with the partitions and replication factor the user chose.

noida-db never expires a dead member (DESIGN): no test here waits for a session timeout. The one test that kills a
worker does it on a private broker of its own."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.loadgen.conftest import _kafka_remaining
from tests.workers import WorkerProc, open_client, unique, worker

pytestmark = pytest.mark.slow


def _bootstrap(url: str) -> str:
    return url.removeprefix("kafka://")


def _partitions(url: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": _bootstrap(url)}).list_topics(topic, timeout=10)
    return len(meta.topics[topic].partitions)


def _events(w: WorkerProc, name: str) -> list[dict[str, Any]]:
    """``WorkerProc.events``, also reading JSON lines two of the worker's threads wrote at once (``print`` writes the
    newline apart from the text, so one line can hold ``{...}{...}``): an event lost there would stall a wait."""
    decoder = json.JSONDecoder()
    found = []
    for line in w.log().splitlines():
        at = 0
        while line.startswith("{", at):
            try:
                doc, at = decoder.raw_decode(line, at)
            except ValueError:
                break
            if isinstance(doc, dict) and doc.get("event") == name:
                found.append(doc)
    return found


def _assigned(w: WorkerProc) -> list[int]:
    """How many partitions each of the worker's assignments gave it, in order."""
    return [len(e["partitions"]) for e in _events(w, "partitions assigned")]


def _owns(w: WorkerProc) -> int:
    """How many partitions the worker's latest assignment gave it (0: none yet)."""
    return (_assigned(w) or [0])[-1]


_GROUP_PROBE: list[Callable[[], str]] = []


def _describe_group(url: str, group: str) -> Callable[[], str]:
    def describe() -> str:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": _bootstrap(url)})
        try:
            g = admin.describe_consumer_groups([group])[group].result(10)
        except Exception as exc:  # diagnostics only
            return f"describe failed: {exc}"
        return f"state {g.state}, members " + "; ".join(
            f"{m.member_id} {m.client_id} {[tp.partition for tp in m.assignment.topic_partitions]}" for m in g.members)

    return describe


async def _until(check: Callable[[], bool], what: str, timeout: float = 30.0,
                 *workers: WorkerProc) -> None:
    """Poll a blocking ``check`` (off the event loop, so replies keep arriving) until it holds, or fail with the
    workers' logs."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while not await loop.run_in_executor(None, check):
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- worker {i} ---\n{w.log()}" for i, w in enumerate(workers))
            if _GROUP_PROBE:
                logs += "\n--- group ---\n" + await loop.run_in_executor(None, _GROUP_PROBE[-1])
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")
        await asyncio.sleep(0.1)


async def test_the_default_group_is_one_per_request_topic(kafka_url: str, tmp_path) -> None:
    topic = unique("qdeck-test-kgroup")
    client = await open_client(kafka_url, topic)
    try:
        with worker(kafka_url, topic, "--model", "echo", "--max-wait-ms", "1", "--metrics-format", "json",
                    tmp_path=tmp_path) as w:
            await client.send([f"g{i}" for i in range(5)])
            assert await client.wait_for(5), w.log()
            assert w.terminate() == 0, w.log()
        [serving] = w.events("serving")
    finally:
        await client.transport.aclose()
    # the offsets are committed under that group, all of them
    assert await asyncio.get_running_loop().run_in_executor(None, _kafka_remaining(kafka_url, topic)) == 0
    assert serving["group"] == f"qdeck-workers.{topic}"


async def test_a_dead_worker_on_one_topic_does_not_stall_another_topic(private_kafka, tmp_path) -> None:
    """Worker A (topic X) is killed -9 and stays a member of its group for good (noida-db never expires it; real
    Kafka would after the session timeout). Worker C on topic Y must not wait for it: its own group is empty."""
    url = private_kafka.url
    x, y = unique("qdeck-test-kx"), unique("qdeck-test-ky")
    cx = await open_client(url, x)
    cy = await open_client(url, y)
    try:
        with worker(url, x, "--model", "echo", "--max-wait-ms", "1", tmp_path=tmp_path) as a:
            await cx.send(["x0"])
            assert await cx.wait_for(1, timeout=30), a.log()
            a.kill()
        with worker(url, y, "--model", "echo", "--max-wait-ms", "1", tmp_path=tmp_path) as c:
            await cy.send(["y0", "y1", "y2"])
            served = await cy.wait_for(3, timeout=20)
            log = c.log()
    finally:
        await cx.transport.aclose()
        await cy.transport.aclose()
    assert served, log


async def test_an_idle_worker_commits_what_it_has_done(kafka_url: str, tmp_path) -> None:
    """Commits are made at most every 0.5 s, with a trailing edge: once the last batch is done the group's offsets
    reach the end while the worker still runs and nothing more comes to settle (not only when it stops)."""
    topic = unique("qdeck-test-kidle")
    client = await open_client(kafka_url, topic)
    try:
        with worker(kafka_url, topic, "--model", "echo", "--max-batch", "4", "--max-wait-ms", "1",
                    tmp_path=tmp_path) as w:
            for start in range(0, 20, 4):  # a few batches in quick succession: most settle within 0.5 s of a commit
                await client.send([f"i{i}" for i in range(start, start + 4)], start_seq=start)
            assert await client.wait_for(20), w.log()
            remaining = _kafka_remaining(kafka_url, topic)
            await _until(lambda: remaining() == 0, "the idle worker's commits to reach the end", timeout=10)
            assert w.proc.poll() is None, w.log()  # committed while serving, not by the final commit
    finally:
        await client.transport.aclose()


async def test_a_rebalance_commits_only_partitions_the_worker_owns(kafka_url: str, tmp_path) -> None:
    """A serves both partitions; B joins, and once each owns one the rest of the requests are sent, so B answers
    its share; B leaves; A takes both partitions back and works through what is left; then A stops. Every request
    is answered, and the group's committed offsets reach the end of both partitions while A serves and stay there
    once it has stopped: A's final commit does not write back the position it had, before the rebalance, on the
    partition B then served.

    Each step waits for what the workers say or for the group's offsets, never for time: on busy cores B can take
    longer to start than A takes to answer everything, noida-db can fold B's join and leave into one rebalance, and
    it refuses a commit made on revocation (ILLEGAL_GENERATION), so what was done since the last commit is consumed
    again by the partition's next owner: A must have worked through that before it is stopped."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from loadgen.envelope import Request, encode_request

    topic = unique("qdeck-test-kreb")
    group = f"{topic}-group"  # named, so that this test does not depend on the default group's name
    admin = AdminClient({"bootstrap.servers": _bootstrap(kafka_url)})
    for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        fut.result(10)
    total, first = 120, 40
    client = await open_client(kafka_url, topic)
    producer = Producer({"bootstrap.servers": _bootstrap(kafka_url), "linger.ms": 0})

    def produce(seqs: range) -> None:
        for i in seqs:
            now = time.time_ns()
            client.sent_ns[i] = now
            body = encode_request(Request(client.run, i, now, now, client.transport.reply_to, "t", f"r{i}"))
            producer.produce(topic, body, partition=i % 2)
        assert producer.flush(10) == 0

    args = ("--model", "synthetic:base_ms=100", "--max-batch", "4", "--max-wait-ms", "1", "--group", group,
            "--metrics-format", "json")
    remaining = _kafka_remaining(kafka_url, topic, group)
    _GROUP_PROBE[:] = [_describe_group(kafka_url, group)]
    try:
        with worker(kafka_url, topic, *args, tmp_path=tmp_path) as a:
            produce(range(1, first + 1))
            assert await client.wait_for(first, timeout=30), a.log()
            with worker(kafka_url, topic, *args, tmp_path=tmp_path) as b:
                await _until(lambda: _owns(a) == 1 and _owns(b) == 1, "A and B to own one partition each",
                             60, a, b)
                produce(range(first + 1, total + 1))  # half of them on B's partition
                assert await client.wait_for(total, timeout=60), a.log() + b.log()
                [serving_b] = _events(b, "serving")
                assert any(r.worker == serving_b["worker"] for r in client.replies.values()), b.log()
                seen = len(_assigned(a))
                assert b.terminate() == 0, b.log()
            # A takes both partitions back (once its next heartbeat hears of the rebalance), serves what was left
            # uncommitted on them, and commits it while it runs (the trailing commit)...
            await _until(lambda: len(_assigned(a)) > seen and _owns(a) == 2, "A to own both partitions", 30, a)
            await _until(lambda: remaining() == 0, "A's commits to reach the end of both partitions", 30, a)
            log_a = a.log()
            # ... and its final commit must not write back what it had of B's partition before.
            assert a.terminate() == 0, a.log()
    finally:
        await client.transport.aclose()
    assert sorted(client.replies) == list(range(1, total + 1))
    assert await asyncio.get_running_loop().run_in_executor(None, remaining) == 0, log_a


async def test_created_topics_take_the_chosen_partitions_and_say_so(kafka_url: str, tmp_path) -> None:
    chosen, default = unique("qdeck-test-kparts"), unique("qdeck-test-kpart1")
    with worker(kafka_url, chosen, "--partitions", "3", "--replication-factor", "1", "--metrics-format", "json",
                tmp_path=tmp_path) as w:
        created = w.events("created topic")
    with worker(kafka_url, default, tmp_path=tmp_path) as w1:
        log1 = w1.log()
    assert {e["topic"] for e in created} == {chosen, f"{chosen}.dlq"}, created
    assert all(e["partitions"] == 3 and e["replication_factor"] == 1 for e in created), created
    assert _partitions(kafka_url, chosen) == 3 and _partitions(kafka_url, f"{chosen}.dlq") == 3
    assert _partitions(kafka_url, default) == 1
    assert f"created topic {default!r} with 1 partition, replication factor 1" in log1, log1
    assert "--partitions" in log1 and "--replication-factor" in log1, log1


def test_offset_tracker_commits_only_owned_partitions_of_the_current_generation() -> None:
    from loadgen.worker.kafka_source import OffsetTracker

    t = OffsetTracker()
    t.assigned({("q", 0), ("q", 1)})
    g0 = [t.taken("q", 0, o) for o in range(3)]
    g1 = [t.taken("q", 1, o) for o in range(3)]
    t.done("q", 0, 0, g0[0])
    t.done("q", 0, 2, g0[2])  # out of order: the commit point stops at 1
    t.done("q", 1, 0, g1[0])
    assert sorted(t.due()) == [("q", 0, 1), ("q", 1, 1)]
    t.committed(t.due())
    assert t.due() == []
    t.drop({("q", 1)})  # revoked: offsets 1 and 2 of partition 1 go to its next owner
    assert not t.done("q", 1, 1, g1[1]) and not t.done("q", 1, 2, g1[2])
    assert t.taken("q", 1, 3) == -1  # fetched after the revocation: not this worker's
    t.done("q", 0, 1, g0[1])
    assert t.due() == [("q", 0, 3)]
    t.assigned({("q", 1)})  # back again: a new generation, starting from what the group committed
    g = t.taken("q", 1, 1)
    assert g != g1[1] and t.done("q", 1, 1, g)
    assert sorted(t.due()) == [("q", 0, 3), ("q", 1, 2)]



class _SerialConsumer:
    """A consumer as confluent-kafka 2.x is (py-spy showed it in the rebalance test, stuck in
    ``Handle_serialize_enter``): one thread at a time inside the client's calls (the thread inside may call in again,
    as a rebalance callback's commit does), and the revocation callback runs inside ``consume``. This ``consume``
    revokes partition 0, once, after waiting (a while) for another thread to hold the worker's commit lock: the
    moment that hung the worker."""

    def __init__(self, source: Any) -> None:
        import threading

        self.source = source
        self.handle = threading.RLock()
        self.commits: list[tuple[bool, list[tuple[str, int, int]]]] = []
        self.revoke_pending = True

    def _enter(self) -> None:
        if not self.handle.acquire(timeout=20):  # the real one waits for ever; this lets a stuck test end
            raise RuntimeError("waited 20 s to enter the consumer")

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition

        self._enter()
        try:
            if self.revoke_pending:
                self.revoke_pending = False
                for _ in range(200):
                    if self.source._commit_lock.locked():
                        break
                    time.sleep(0.01)
                self.source._on_revoke(self, [TopicPartition("q", 0)])
            return []
        finally:
            self.handle.release()

    def commit(self, offsets: list[Any], asynchronous: bool = True) -> None:
        self._enter()
        try:
            self.commits.append((asynchronous, [(tp.topic, tp.partition, tp.offset) for tp in offsets]))
        finally:
            self.handle.release()


async def test_a_commit_during_a_revocation_does_not_hang_the_worker() -> None:
    """The interval commit (made on the reply thread, holding the commit lock) waited to enter the consumer while
    the poll inside it ran the revocation, which waited for the commit lock: the worker stopped consuming for good
    (test_a_rebalance_commits_only_partitions_the_worker_owns hung so about one run in ten). Both must finish, and
    the revoked partition is committed by the revocation only."""
    from loadgen.worker import kafka_source
    from loadgen.worker.kafka_source import KafkaSource
    from probes.urls import parse_broker_url

    source = KafkaSource(parse_broker_url("kafka://127.0.0.1:9"), "q", group="g")
    source._loop = asyncio.get_running_loop()
    fake = _SerialConsumer(source)
    source._consumer = fake  # type: ignore[assignment]
    source._tracker.assigned({("q", 0)})
    source._tracker.done("q", 0, 0, source._tracker.taken("q", 0, 0))
    source._last_commit = -kafka_source.COMMIT_INTERVAL_S * 2  # an interval commit is due
    fetch = asyncio.ensure_future(source.fetch(10, 0.1))
    settle = asyncio.ensure_future(source.settle([], [], []))
    try:
        _done, pending = await asyncio.wait({fetch, settle}, timeout=15)
        assert not pending, "the revocation and the interval commit waited for each other: the worker hung"
        for _ in range(100):  # the commit queued on the polling thread (if any) has run
            if source._trailing is None and not source._tracker.due():
                break
            await asyncio.sleep(0.02)
        assert fake.commits == [(False, [("q", 0, 1)])], fake.commits
    finally:
        source._stopped = True
        await asyncio.gather(fetch, settle, return_exceptions=True)
        source._thread.shutdown(wait=True)
        source._settler.shutdown(wait=True)
