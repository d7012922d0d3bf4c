"""Dead-letter actions on real Redis streams and lists, driven through ``run_action`` as the CLI drives them: redrive
of the load generator's own dead letters back to their stream (every field, in order, exactly), move, purge,
delete by id, export → import byte for byte, the loop guard, a destination of the wrong type, read-only refusal,
a resume after a crash, a list walked while a producer pushes, and the pre-flight's lines."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from loadgen.worker.redis_source import RedisSource
from loadgen.worker.source import DeadLetter
from probes.dlq import codec
from probes.dlq.engine import Action, Report, run_action
from probes.dlq.journal import Journal
from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID
from probes.dlq.redis_store import RedisStore
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.dlq.writes import ReadOnly
from probes.errors import NotFound
from probes.urls import BrokerTarget, parse_broker_url

pytestmark = pytest.mark.redis


@pytest.fixture
def r(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    client.set_response_callback("XRANGE", lambda response, **_kw: response)  # see entries()
    prefix = f"qdeck-dlq-{uuid.uuid4().hex[:8]}"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def target(url: str, writable: bool = True) -> BrokerTarget:
    return dataclasses.replace(parse_broker_url(url), allow_write=writable, name="test")


def entries(client: redis.Redis, key: str) -> list[tuple[bytes, list[bytes]]]:
    """Every entry as Redis holds it: fields in order, repeats too (redis-py's parser would fold them)."""
    return [(eid, list(flat)) for eid, flat in client.xrange(key)]


async def act(url: str, source: str, action: Action, selection: Selection | None = None, *, to: str | None = None,
              writable: bool = True, journal: Journal | None = None, store: type[RedisStore] | None = None
              ) -> Report:
    s = store(target(url, writable), source) if store else open_store(target(url, writable), source)
    async with s:
        if to is not None:
            action = dataclasses.replace(action, to=await s.resolve(to))
        return await run_action(s, action, selection or Selection(), journal=journal)


async def worker_dead_letters(url: str, queue: str, bodies: Sequence[bytes]) -> None:
    """Dead letters as qdeck's own Redis worker writes them (``<queue>:dlq``: body, reason, source, attempts,
    failed_at), through its real source: read from the request stream, dead-lettered, acknowledged."""
    client = redis.Redis.from_url(url)
    for body in bodies:
        client.xadd(queue, {"body": body})
    client.close()
    source = RedisSource(parse_broker_url(url), queue, consumer="c-test")
    await source.start()
    try:
        got = await source.fetch(len(bodies), 1.0)
        assert len(got) == len(bodies)
        settled = await source.settle([], [DeadLetter(d, "model error: CUDA out of memory", 3) for d in got], got)
        assert settled.dead_lettered == len(bodies)
    finally:
        await source.aclose()


async def test_redrive_worker_dead_letters_back_to_their_stream_exactly(r: tuple[redis.Redis, str],
                                                                         redis_url: str) -> None:
    client, p = r
    queue = f"{p}:requests"
    bodies = [b'{"prompt": "hi", "n": %d}' % i for i in range(7)] + [b"\xff\xfe not utf-8"]
    await worker_dead_letters(redis_url, queue, bodies)
    dlq = f"{queue}:dlq"
    before = entries(client, dlq)
    assert before[0][1][0::2] == [b"body", b"reason", b"source", b"attempts", b"failed_at"]
    client.xgroup_createconsumer(queue, "qdeck-workers", "c-live")  # someone consumes the origin
    report = await act(redis_url, dlq, Action("redrive", dry_run=False))
    ledger = report.ledger
    assert (ledger.selected, ledger.moved, ledger.failed, ledger.skipped) == (8, 8, 0, 0) and ledger.adds_up()
    assert ledger.destinations == {queue: 8} and ledger.reasons == {"model error: CUDA out of memory": 8}
    assert client.xlen(dlq) == 0
    after = [e for e in entries(client, queue) if len(e[1]) > 2]  # the redriven ones (requests have a body only)
    assert len(after) == 8
    for (old_id, old), (new_id, new) in zip(before, after, strict=True):
        assert new == [*old, REDRIVE_ID.encode(), old_id, REDRIVE_COUNT.encode(), b"1"]  # every field, in order
        assert tuple(map(int, new_id.split(b"-"))) > tuple(map(int, old_id.split(b"-")))  # a new id: ids only grow
    # the worker's group reads them as new requests: the origin works again
    got = client.xreadgroup("qdeck-workers", "c-live", {queue: ">"}, count=20)
    assert [f[b"body"] for _e, f in got[0][1]] == bodies


async def test_a_long_stream_is_walked_batch_by_batch_whatever_the_action(r: tuple[redis.Redis, str],
                                                                          redis_url: str) -> None:
    """Several batches (the next one read while this one is written, parsed a slice at a time): a dry run and an
    export (no writes) walk them all, a redrive moves them all in order, field for field."""
    client, p = r
    dlq, origin = f"{p}:work:dlq", f"{p}:work"
    client.xgroup_create(origin, "g", id="$", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for i in range(620):
        pipe.xadd(dlq, {"body": b"%d" % i, "reason": "boom", "source": origin, "n": i % 3})
    pipe.execute()
    before = entries(client, dlq)
    dry = await act(redis_url, dlq, Action("redrive", batch=250, force=True))
    assert (dry.ledger.examined, dry.ledger.moved) == (620, 620) and client.xlen(dlq) == 620
    out: list[Record] = []
    async with open_store(target(redis_url), dlq) as s:
        exported = await run_action(s, Action("export", batch=250), Selection(), on_export=out.append)
    assert exported.ledger.exported == 620 and [rec.body for rec in out] == [b"%d" % i for i in range(620)]
    report = await act(redis_url, dlq, Action("redrive", dry_run=False, batch=250, force=True))
    assert (report.ledger.moved, report.ledger.failed) == (620, 0) and client.xlen(dlq) == 0
    assert [flat for _e, flat in entries(client, origin)] == [
        [*flat, REDRIVE_ID.encode(), eid, REDRIVE_COUNT.encode(), b"1"] for eid, flat in before]


async def test_move_to_a_named_stream_keeps_repeated_fields_and_the_count(r: tuple[redis.Redis, str],
                                                                           redis_url: str) -> None:
    client, p = r
    dlq, dst = f"{p}:dlq", f"{p}:elsewhere"
    client.execute_command("XADD", dlq, "*", "meta", "a", "payload", "x1", "meta", "b", REDRIVE_COUNT, "2",
                           REDRIVE_ID, "0-1")
    client.execute_command("XADD", dlq, "*", "user", "42", "error", "timeout")  # no body field: the fields are it
    client.xgroup_create(dst, "g", id="$", mkstream=True)
    client.xgroup_createconsumer(dst, "g", "c")
    report = await act(redis_url, dlq, Action("move", dry_run=False), to=dst)
    assert (report.ledger.moved, report.ledger.failed) == (2, 0) and client.xlen(dlq) == 0
    moved = [f for _e, f in entries(client, dst)]
    assert moved[0] == [b"meta", b"a", b"payload", b"x1", b"meta", b"b", REDRIVE_COUNT.encode(), b"2",
                        REDRIVE_ID.encode(), b"0-1"]  # a move keeps the count, replaces in place
    assert moved[1][:4] == [b"user", b"42", b"error", b"timeout"]


async def test_purge_and_delete_by_id(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    dlq, lst = f"{p}:dlq", f"{p}:list-dlq"
    ids = [client.xadd(dlq, {"body": f"m{i}", "reason": "expired" if i % 2 else "rejected"}).decode()
           for i in range(6)]
    report = await act(redis_url, dlq, Action("delete", dry_run=False), Selection.parse(ids=[ids[1], ids[4]]))
    assert report.ledger.deleted == 2 and [e.decode() for e, _f in entries(client, dlq)] == \
        [ids[0], ids[2], ids[3], ids[5]]
    report = await act(redis_url, dlq, Action("purge", dry_run=False), Selection.parse(reasons=["expired"]))
    assert report.ledger.deleted == 2 and [e.decode() for e, _f in entries(client, dlq)] == [ids[0], ids[2]]
    client.lpush(lst, b"a", b"b", b"a", b"c")
    report = await act(redis_url, lst, Action("purge", dry_run=False), Selection.parse(match="^a$"))
    assert report.ledger.deleted == 2 and client.lrange(lst, 0, -1) == [b"c", b"b"]


async def export(url: str, source: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    async with open_store(target(url, writable=False), source) as s:
        report = await run_action(s, Action("export"), Selection(),
                                  on_export=lambda rec: docs.append(json.loads(json.dumps(codec.record_to_json(rec)))))
    assert report.ledger.exported == len(docs)
    return docs


async def import_(url: str, to: str, docs: Sequence[dict[str, Any]]) -> list[str | None]:
    records = [codec.record_from_json(d, "test") for d in docs]
    async with open_store(target(url), to) as s:
        return await s.write(await s.resolve(to), records)


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """All but what the broker assigns: a stream entry's id, and its time (the time it was dead-lettered, unless a
    field says)."""
    return {k: v for k, v in doc.items() if k not in ("id", "timestamp", "died_at")}


async def test_export_import_round_trip_byte_for_byte(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    dlq, copy, lst, lst_copy = f"{p}:dlq", f"{p}:copy", f"{p}:list", f"{p}:list-copy"
    client.execute_command("XADD", dlq, "*", "h", "1", "body", b"\x00\xffbin", "h", "2", "reason", "rejected",
                           "source", f"{p}:orders", REDRIVE_COUNT, "1")
    client.execute_command("XADD", dlq, "*", "only", "fields")
    client.execute_command("XADD", dlq, "*", "payload", "")
    client.lpush(lst, b'{"source": "orders", "reason": "bad"}', b"\x01\x02", b"plain")  # oldest: the JSON one
    first = await export(redis_url, dlq)
    assert first[0]["reason"] == "rejected" and first[0]["origin"]["name"] == f"{p}:orders" and \
        first[0]["redrives"] == 1
    assert await import_(redis_url, copy, first) == [None] * 3
    assert [comparable(d) for d in await export(redis_url, copy)] == [comparable(d) for d in first]
    assert [f for _e, f in entries(client, copy)] == [f for _e, f in entries(client, dlq)]
    lst_first = await export(redis_url, lst)
    assert [d["reason"] for d in lst_first] == ["bad", None, None]
    assert await import_(redis_url, lst_copy, lst_first) == [None] * 3
    assert client.type(lst_copy) == b"list" and client.lrange(lst_copy, 0, -1) == client.lrange(lst, 0, -1)
    assert await export(redis_url, lst_copy) == lst_first  # a list value's id is its digest: all equal


async def test_loop_guard_parks_past_max_redrives(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    dlq, origin = f"{p}:dlq", f"{p}:work"
    client.xgroup_create(origin, "g", id="$", mkstream=True)
    client.xgroup_createconsumer(origin, "g", "c")
    looping = client.xadd(dlq, {"body": "again", "reason": "boom", "source": origin, REDRIVE_COUNT: "3",
                                REDRIVE_ID: "1-1"})
    client.xadd(dlq, {"body": "once more", "reason": "boom", "source": origin, REDRIVE_COUNT: "2"})
    report = await act(redis_url, dlq, Action("redrive", dry_run=False, max_redrives=3))
    assert (report.ledger.moved, report.ledger.parked) == (2, 1) and report.ledger.adds_up()
    parked = entries(client, f"{dlq}.parked")
    assert len(parked) == 1 and parked[0][1][:2] == [b"body", b"again"]
    assert parked[0][1][parked[0][1].index(REDRIVE_ID.encode()) + 1] == b"1-1"  # the first id, kept
    assert parked[0][1][parked[0][1].index(REDRIVE_COUNT.encode()) + 1] == b"4"
    assert looping not in {e for e, _f in entries(client, origin)} and client.xlen(origin) == 1


async def test_a_destination_of_the_wrong_type_fails_and_keeps_the_messages(r: tuple[redis.Redis, str],
                                                                             redis_url: str) -> None:
    client, p = r
    dlq, bad = f"{p}:dlq", f"{p}:a-string"
    client.set(bad, "not a stream")
    for i in range(3):
        client.xadd(dlq, {"body": f"m{i}", "reason": "x", "source": bad})
    before = entries(client, dlq)
    report = await act(redis_url, dlq, Action("redrive", dry_run=False))
    assert report.ledger.skipped == 3 and "is a Redis string" in next(iter(report.ledger.skip_reasons))
    forced = await act(redis_url, dlq, Action("redrive", dry_run=False, force=True))
    assert (forced.ledger.failed, forced.ledger.moved) == (3, 0) and forced.ledger.adds_up()
    assert "a-string is a Redis string" in next(iter(forced.ledger.fail_reasons))
    assert entries(client, dlq) == before and client.get(bad) == b"not a stream"


async def test_read_only_refuses_before_any_change(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    dlq, dst = f"{p}:dlq", f"{p}:dst"
    client.xadd(dlq, {"body": "m", "reason": "x", "source": dst})
    before = entries(client, dlq)
    for action in (Action("redrive", dry_run=False), Action("purge", dry_run=False)):
        with pytest.raises(ReadOnly, match="allow_write = true"):
            await act(redis_url, dlq, action, writable=False)
    async with RedisStore(target(redis_url, writable=False), dlq) as s:
        records = [rec async for batch in s.read(10) for rec in batch]
        with pytest.raises(ReadOnly):
            await s.publish([(records[0], Place("stream", dst), {})])
        with pytest.raises(ReadOnly):
            await s.delete(records)
        with pytest.raises(ReadOnly):
            await s.write(Place("stream", dst), records)
    dry = await act(redis_url, dlq, Action("redrive"), writable=False, to=dst)
    assert dry.ledger.skipped == 1 and dry.problems == {dst: ["it does not exist (--force creates it)"]}
    assert entries(client, dlq) == before and not client.exists(dst)


class CrashOnce(RedisStore):
    """Killed once right after a batch's script ran, before the engine journaled it as published."""

    crashed = False

    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        out = await super().publish(pairs)
        if not CrashOnce.crashed:
            CrashOnce.crashed = True
            raise RuntimeError("killed")
        return out


async def test_resume_after_a_crash_sends_nothing_twice(r: tuple[redis.Redis, str], redis_url: str,
                                                        tmp_path: Path) -> None:
    client, p = r
    dlq, dst = f"{p}:dlq", f"{p}:dst"
    pipe = client.pipeline()
    for i in range(25):
        pipe.xadd(dlq, {"body": f"m{i}", "reason": "x"})
    pipe.execute()
    path = tmp_path / "journal.jsonl"

    def journal() -> Journal:
        return Journal(path, lambda doc: json.dumps(doc, ensure_ascii=True), {"action": "move"})

    first = journal()
    with pytest.raises(RuntimeError, match="killed"):
        await act(redis_url, dlq, Action("move", dry_run=False, batch=10, force=True), to=dst, journal=first,
                  store=CrashOnce)
    first.close()
    assert client.xlen(dst) == 10 and client.xlen(dlq) == 15  # the batch moved atomically, none of it twice
    again = journal()
    # nothing in doubt: the script moved the batch whole, so nothing is journaled as in flight (or pending)
    assert again.resuming and not again.in_flight and not again.pending
    report = await act(redis_url, dlq, Action("move", dry_run=False, batch=10, force=True), to=dst, journal=again)
    again.close()
    assert (report.ledger.moved, report.ledger.possible_duplicates, report.ledger.failed) == (15, 0, 0)
    bodies = [f[1] for _e, f in entries(client, dst)]
    assert sorted(bodies) == sorted(f"m{i}".encode() for i in range(25)) and client.xlen(dlq) == 0


async def test_list_redrive_oldest_first_ends_while_a_producer_pushes(r: tuple[redis.Redis, str],
                                                                       redis_url: str) -> None:
    client, p = r
    dlq, origin = f"{p}:celery-dlq", f"{p}:jobs"
    values = [json.dumps({"task": f"t{i}", "source": origin, "reason": "boom"}).encode() for i in range(12)]
    client.lpush(dlq, *values)  # LPUSH producers: the oldest value is the tail
    client.lpush(dlq, b"not json")
    client.lpush(origin, b"waiting")
    pushed = 0

    def producer(_report: Report) -> None:  # after each batch, a new dead letter arrives at the head
        nonlocal pushed
        client.lpush(dlq, b"late %d" % pushed)
        pushed += 1

    async with open_store(target(redis_url), dlq) as s:
        report = await run_action(s, Action("redrive", dry_run=False, batch=5, force=True), Selection(),
                                  progress=producer)
    ledger = report.ledger
    assert (ledger.examined, ledger.moved, ledger.skipped) == (13, 12, 1) and ledger.adds_up()
    assert client.lrange(origin, 0, -1) == [*reversed(values), b"waiting"]  # queued behind, oldest first
    assert client.lrange(dlq, 0, -1) == [*(b"late %d" % i for i in reversed(range(pushed))), b"not json"]


async def test_a_message_taken_meanwhile_is_not_written(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    dlq, dst = f"{p}:dlq", f"{p}:dst"
    client.xadd(dlq, {"body": "a"})
    async with RedisStore(target(redis_url), dlq) as s:
        records = [rec async for batch in s.read(10) for rec in batch]
        client.xdel(dlq, records[0].id)  # another qdeck, or a person, got there first
        out = await s.publish([(records[0], Place("stream", dst), {})])
    assert out[0] is not None and "no longer in" in out[0] and client.xlen(dst) == 0


async def test_preflight_says_what_is_wrong_in_one_line_each(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    dlq = f"{p}:dlq"
    client.xadd(dlq, {"body": "m"})
    client.xadd(f"{p}:no-group", {"x": "1"})
    client.xgroup_create(f"{p}:idle", "workers", id="$", mkstream=True)
    client.hset(f"{p}:hash", "a", "b")
    client.rpush(f"{p}:list", "v")
    async with RedisStore(target(redis_url), dlq) as s:
        async def problems(name: str) -> list[str]:
            found = await s.preflight(await s.resolve(name))
            assert all("\n" not in line for line in found)
            return found

        assert await problems(f"{p}:missing") == ["it does not exist (--force creates it)"]
        assert await problems(f"{p}:no-group") == ["nobody consumes it: the stream has no consumer group"]
        assert await problems(f"{p}:idle") == ["nobody consumes it: its consumer groups (workers) have no consumers"]
        assert await problems(f"{p}:hash") == ["it is a Redis hash, not a stream or a list"]
        assert await problems(f"{p}:list") == []
        assert "source itself" in (await problems(dlq))[0]
        assert (await s.resolve(f"{p}:list")).kind == "list" and s.parked() == Place("stream", f"{dlq}.parked")



async def test_a_missing_or_foreign_source_is_one_line(r: tuple[redis.Redis, str], redis_url: str) -> None:
    client, p = r
    client.hset(f"{p}:hash", "a", "b")
    with pytest.raises(NotFound, match="no stream or list named") as missing:
        await act(redis_url, f"{p}:nothing", Action("purge"))
    with pytest.raises(NotFound, match="is a Redis hash") as foreign:
        await act(redis_url, f"{p}:hash", Action("purge"))
    assert "\n" not in str(missing.value) + str(foreign.value)
    async with open_store(target(redis_url), f"{p}:new") as s:  # an import's new destination: no error
        assert await s.write(await s.resolve(f"{p}:new"), [Record(id="x", body=b"b")]) == [None]
    assert client.lrange(f"{p}:new", 0, -1) == [b"b"]  # a bare body, like a list's: a list
