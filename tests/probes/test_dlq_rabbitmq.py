"""Dead-letter actions on a real RabbitMQ (the shared 3.10 node, one throwaway vhost per test), classic and quorum
queues, driven through ``run_action`` as the CLI drives them: redrive of broker dead letters (x-death, rejected and
expired) and of qdeck's worker's own back to their origin with every property and header, move, purge, delete by
id, export → import byte for byte, the loop guard, an unroutable destination, read-only refusal, a resume after a
crash between publish and remove, a selective walk that never sees a message twice, the quorum delivery count and
delivery-limit refusal, and the pre-flight's lines."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pytest

from loadgen.worker.rabbitmq_source import RabbitMQSource
from loadgen.worker.source import DeadLetter, Delivery
from probes.dlq import codec
from probes.dlq.engine import Action, Report, run_action
from probes.dlq.journal import Journal
from probes.dlq.model import Place, Record
from probes.dlq.provenance import REDRIVE_COUNT, REDRIVE_ID
from probes.dlq.rabbitmq_store import RabbitMQStore
from probes.dlq.selection import Selection
from probes.dlq.store import open_store
from probes.dlq.writes import ReadOnly
from probes.errors import NotFound, UnsafeOperation
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from probes.rabbitmq.amqp_link import AmqpConnection, ConfirmChannel
from probes.urls import BrokerTarget, parse_broker_url
from tests.rabbit import RabbitVhost, wait_sync

pytestmark = pytest.mark.rabbitmq
TYPES = pytest.mark.parametrize("qtype", ["classic", "quorum"])
WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def target(vhost: RabbitVhost, *, writable: bool = True, read_only: bool = False) -> BrokerTarget:
    return dataclasses.replace(parse_broker_url(vhost.url), allow_write=writable, read_only=read_only, name="t")


def props(i: int, **extra: Any) -> pika.BasicProperties:
    """Every basic property set, and a headers table of every type pika writes (a nested table, an array)."""
    headers = {"tenant": "acme", "attempt": i, "ok": True, "price": Decimal("9.95"), "raw": b"\x00\xff",
               "meta": {"a": 1, "b": ["x", 2]}, "seen": WHEN, "none": None}
    return pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", delivery_mode=2, priority=3,
        correlation_id=f"corr-{i}", reply_to="replies", message_id=f"m-{i}" if i % 2 == 0 else None,
        timestamp=1_714_557_600 + i, type="infer", app_id="qdeck-test", headers=headers, **extra)


def declare(vhost: RabbitVhost, qtype: str, name: str, dead_letter_to: str | None = None, **arguments: Any) -> None:
    args: dict[str, Any] = {"x-queue-type": qtype, **arguments}
    if dead_letter_to is not None:
        args.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter_to})
    ch = vhost.channel()
    ch.queue_declare(name, durable=True, arguments=args)
    ch.close()


def broker_dead_letters(vhost: RabbitVhost, qtype: str, n: int, *, work: str = "work", dlq: str = "work.dlq",
                        headers: dict[str, Any] | None = None) -> None:
    """``n`` messages rejected by a consumer of ``work`` and dead-lettered by the broker into ``dlq``."""
    declare(vhost, qtype, dlq)
    declare(vhost, qtype, work, dead_letter_to=dlq)
    before = vhost.exact_depth(dlq)
    ch = vhost.channel()
    for i in range(n):
        p = props(i)
        if headers:
            p.headers.update(headers)
        ch.basic_publish("", work, f'{{"n": {i}}}'.encode(), p)
    wait_sync(lambda: vhost.exact_depth(work) == n, what=f"{n} messages in {work}")
    for _ in range(n):
        method, _p, _b = ch.basic_get(work)
        ch.basic_reject(method.delivery_tag, requeue=False)
    ch.close()
    wait_sync(lambda: vhost.exact_depth(dlq) >= before + n, what=f"{n} dead letters in {dlq}")


def drain(vhost: RabbitVhost, queue: str) -> list[tuple[Any, Any, bytes]]:
    """Every message of ``queue`` (taken and acked)."""
    ch = vhost.channel()
    out = []
    while True:
        method, p, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((method, p, body))
    ch.close()
    return out


def peek_all(vhost: RabbitVhost, queue: str, expect: int) -> list[tuple[Any, Any, bytes]]:
    """The ``expect`` messages of ``queue``, left in it (requeued when the channel closes). A quorum queue applies
    requeues through its log, a moment after they are sent: wait for them before and after."""
    wait_sync(lambda: vhost.exact_depth(queue) == expect, what=f"{expect} messages in {queue}")
    ch = vhost.channel()
    out = []
    while True:
        method, p, body = ch.basic_get(queue)
        if method is None:
            break
        out.append((method, p, body))
    ch.close()
    wait_sync(lambda: vhost.exact_depth(queue) == expect, what=f"{expect} messages back in {queue}")
    assert len(out) == expect
    return out


def run(t: BrokerTarget, source: str, action: Action, selection: Selection | None = None, *,
        journal: Journal | None = None, store_class: type[RabbitMQStore] = RabbitMQStore,
        on_export: Any = None, **options: Any) -> Report:
    async def go() -> Report:
        async with store_class(t, source, **options) as store:
            act = action
            if act.to is not None:
                act = dataclasses.replace(act, to=await store.resolve(act.to.name))
            return await run_action(store, act, selection or Selection(), journal=journal, on_export=on_export)

    return asyncio.run(go())


def mine(headers: dict[str, Any]) -> dict[str, Any]:
    """A message's headers without what the broker or qdeck adds."""
    return {k: v for k, v in headers.items() if not k.startswith(("x-", "qdeck-"))}


# ---- redrive back to the origin --------------------------------------------------------------------------------
@TYPES
def test_redrive_sends_broker_and_worker_dead_letters_back_to_their_origin(vhost: RabbitVhost, qtype: str) -> None:
    broker_dead_letters(vhost, qtype, 4)
    worker_dead_letters(vhost, "work", 2, qtype)  # qdeck's worker: reason/source/attempts/failed_at, no x-death
    ch = vhost.channel()
    ch.basic_publish("", "work.dlq", b"orphan", pika.BasicProperties(message_id="orphan"))  # no provenance at all
    ch.close()
    wait_sync(lambda: vhost.exact_depth("work.dlq") == 7)
    t = target(vhost)

    dry = run(t, "work.dlq", Action("redrive", force=True))
    assert (dry.ledger.selected, dry.ledger.moved, dry.ledger.skipped) == (7, 6, 1) and dry.ledger.adds_up()
    assert dry.ledger.reasons == {"rejected": 4, "boom: model crashed": 2, "unknown": 1}
    assert vhost.exact_depth("work.dlq") == 7 and vhost.exact_depth("work") == 0  # the dry run changed nothing

    consumer = vhost.channel()  # a consumer on the origin (prefetch 1) so the pre-flight passes without --force
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume("work", lambda *_a: None)
    report = run(t, "work.dlq", Action("redrive", dry_run=False))
    consumer.close()
    ledger = report.ledger
    assert (ledger.selected, ledger.moved, ledger.skipped, ledger.failed) == (7, 6, 1, 0) and ledger.adds_up()
    assert ledger.destinations == {"work": 6} and not report.problems
    assert "origin unknown" in next(iter(ledger.skip_reasons))
    left = drain(vhost, "work.dlq")
    assert [p.message_id for _m, p, _b in left] == ["orphan"]
    arrived = drain(vhost, "work")
    assert len(arrived) == 6
    broker = [(m, p, b) for m, p, b in arrived if "x-death" in (p.headers or {})]
    assert sorted(b for _m, _p, b in broker) == [f'{{"n": {i}}}'.encode() for i in range(4)]
    for m, p, body in broker:
        i = int(json.loads(body)["n"])
        want = props(i)
        for name in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                     "message_id", "timestamp", "type", "app_id"):
            assert getattr(p, name) == getattr(want, name), name
        assert mine(p.headers) == want.headers  # every application header, types and all
        assert p.headers["x-first-death-queue"] == "work" and p.headers["x-death"][0]["reason"] == "rejected"
        assert p.headers[REDRIVE_COUNT] == 1
        # the old queue's delivery count is not carried over (the test's consumer requeued one: that one counts 1)
        if qtype == "quorum":  # the DLQ's count was 1 after the dry run; here the queue counts afresh
            assert p.headers["x-delivery-count"] == (1 if m.redelivered else 0)
        else:
            assert "x-delivery-count" not in p.headers
        # the original id: the message_id, else the digest id qdeck showed for it (stable across reads)
        assert p.headers[REDRIVE_ID] == want.message_id if want.message_id else p.headers[REDRIVE_ID].startswith("h-")
    worker = [p for _m, p, _b in arrived if "x-death" not in (p.headers or {})]
    assert [p.headers["source"] for p in worker] == ["work", "work"] and all(p.headers[REDRIVE_COUNT] == 1
                                                                            for p in worker)


def worker_dead_letters(vhost: RabbitVhost, queue: str, n: int, qtype: str) -> None:
    """Dead letters written by qdeck's worker (``RabbitMQSource.settle``) into ``<queue>.dlq`` (the worker declares
    a classic one: for a quorum one, what its ``DeadLetter.fields`` writes, published here)."""
    if qtype == "quorum":
        ch = vhost.channel()
        for i in range(n):
            fields = DeadLetter(Delivery(b"", None), "boom: model crashed", 3).fields(queue)
            ch.basic_publish("", f"{queue}.dlq", f"request {i}".encode(), pika.BasicProperties(
                content_type="text/plain", delivery_mode=2, headers={"tenant": "acme", **fields}))
        ch.close()
        return

    async def go() -> None:
        source = RabbitMQSource(parse_broker_url(vhost.url), queue, prefetch=n)
        await source.start()
        try:
            ch = vhost.channel()
            for i in range(n):
                ch.basic_publish("", queue, f"request {i}".encode(),
                                 pika.BasicProperties(content_type="text/plain", headers={"tenant": "acme"}))
            ch.close()
            got: list[Any] = []
            while len(got) < n:
                got += await source.fetch(n - len(got), 5.0)
            settled = await source.settle([], [DeadLetter(d, "boom: model crashed", 3) for d in got], got)
            assert settled.dead_lettered == n
        finally:
            await source.stop_fetching()
            assert source.link is not None
            await source.link.aclose()

    asyncio.run(go())


def test_a_redrive_keeps_the_delivered_property_bytes_and_types_pika_cannot_write(vhost: RabbitVhost) -> None:
    """The headers table travels as the broker delivered it, entry by entry (a float, a double, a short integer and
    a long string that is not UTF-8 included, which pika would decode and encode into other types), qdeck's two
    headers taken out where they were and appended; every other property byte unchanged."""
    declare(vhost, "classic", "work.dlq")
    declare(vhost, "classic", "work")

    def entry(name: bytes, kind: bytes, value: bytes) -> bytes:
        return bytes([len(name)]) + name + kind + value

    def text(name: str, value: bytes) -> bytes:
        return entry(name.encode(), b"S", len(value).to_bytes(4, "big") + value)

    table = [text("source", b"work"), text("reason", b"boom"), entry(b"f", b"f", bytes.fromhex("3fc00000")),
             entry(REDRIVE_COUNT.encode(), b"I", (1).to_bytes(4, "big")), entry(b"d", b"d", bytes(8)),
             entry(b"short", b"s", b"\xff\xf9"), text("latin1", b"\xe9t\xe9")]
    others = b"".join(pika.BasicProperties(delivery_mode=2, message_id="m-raw", priority=4).encode())
    flags = int.from_bytes(others[:2], "big") | pika.BasicProperties.FLAG_HEADERS
    body = b"".join(table)
    sent = flags.to_bytes(2, "big") + len(body).to_bytes(4, "big") + body + others[2:]

    async def publish_and_read(t: BrokerTarget) -> tuple[list[str | None], bytes]:
        link = await AmqpConnection.open(t)
        try:
            confirm = await ConfirmChannel.open(link)
            assert confirm.frames.direct  # the batched write is the one in use
            out = await confirm.publish([("", "work.dlq", b"raw", sent)])
            report = await _redrive(t)
            assert report.ledger.moved == 1
            chan = await link.channel()
            got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            reader = DeliveryReader.of(link.connection)

            def arrived(_body: bytes, _tag: int, props: bytes) -> None:
                if not got.done():
                    got.set_result(props)

            reader.consume(chan.channel, "work", arrived, auto_ack=True, raw=True)
            return out, await asyncio.wait_for(got, 10)
        finally:
            await link.aclose()

    async def _redrive(t: BrokerTarget) -> Report:
        async with RabbitMQStore(t, "work.dlq") as store:
            return await run_action(store, Action("redrive", dry_run=False, force=True), Selection())

    confirmed, arrived = asyncio.run(publish_and_read(target(vhost)))
    assert confirmed == [None]
    kept = b"".join(e for e in table if REDRIVE_COUNT.encode() not in e)
    added = text(REDRIVE_ID, b"m-raw") + entry(REDRIVE_COUNT.encode(), b"I", (2).to_bytes(4, "big"))
    assert arrived == flags.to_bytes(2, "big") + len(kept + added).to_bytes(4, "big") + kept + added + others[2:]


# ---- move, purge, delete ---------------------------------------------------------------------------------------
def test_move_to_a_named_queue_keeps_the_message_and_its_count(vhost: RabbitVhost) -> None:
    broker_dead_letters(vhost, "classic", 3, headers={REDRIVE_COUNT: 2, REDRIVE_ID: "first"})
    declare(vhost, "quorum", "archive")  # another queue type: a move does not care
    report = run(target(vhost), "work.dlq", Action("move", to=Place("queue", "archive"), dry_run=False, force=True))
    assert report.ledger.moved == 3 and report.ledger.adds_up() and report.problems == {
        "archive": ["nobody consumes it (0 consumers)"]}
    assert vhost.exact_depth("work.dlq") == 0
    moved = drain(vhost, "archive")
    assert [p.headers[REDRIVE_COUNT] for _m, p, _b in moved] == [2, 2, 2]  # a move is not a redrive
    assert [p.headers[REDRIVE_ID] for _m, p, _b in moved] == ["first"] * 3


def test_purge_and_delete_by_id(vhost: RabbitVhost) -> None:
    broker_dead_letters(vhost, "classic", 6)
    t = target(vhost)
    report = run(t, "work.dlq", Action("delete", dry_run=False), Selection.parse(ids=["m-2"]))
    assert (report.ledger.selected, report.ledger.deleted, report.ledger.examined) == (1, 1, 6)
    assert sorted(str(p.message_id) for _m, p, _b in peek_all(vhost, "work.dlq", 5)) == [
        "None", "None", "None", "m-0", "m-4"]
    ids = [r.id for r in exported(t, "work.dlq")]  # a message without message_id has a digest id, stable
    assert ids == [r.id for r in exported(t, "work.dlq")] and len(set(ids)) == 5
    report = run(t, "work.dlq", Action("delete", dry_run=False), Selection.parse(ids=[ids[1]]))
    assert report.ledger.deleted == 1 and vhost.exact_depth("work.dlq") == 4
    report = run(t, "work.dlq", Action("purge", dry_run=False))
    assert report.ledger.deleted == 4 and vhost.exact_depth("work.dlq") == 0


def exported(t: BrokerTarget, queue: str) -> list[Record]:
    out: list[Record] = []
    report = run(t, queue, Action("export"), on_export=out.append)
    assert report.ledger.exported == len(out)
    return out


# ---- export → import ---------------------------------------------------------------------------------------------
@TYPES
def test_export_import_round_trip_is_exact(vhost: RabbitVhost, qtype: str) -> None:
    broker_dead_letters(vhost, qtype, 4)
    t = target(vhost)
    first = [json.loads(json.dumps(codec.record_to_json(r))) for r in exported(t, "work.dlq")]
    declare(vhost, qtype, "copy")

    async def load() -> list[str | None]:
        async with open_store(t, "copy") as store:
            place = await store.resolve("copy")
            return await store.write(place, [codec.record_from_json(d, "line") for d in first])

    assert asyncio.run(load()) == [None] * 4
    second = [json.loads(json.dumps(codec.record_to_json(r))) for r in exported(t, "copy")]
    assert second == first  # every property, header (order, types) and body byte; ids are content digests
    originals, copies = peek_all(vhost, "work.dlq", 4), peek_all(vhost, "copy", 4)
    for (_m1, p1, b1), (_m2, p2, b2) in zip(originals, copies, strict=True):
        assert b1 == b2 and p1.headers == p2.headers
        assert {k: v for k, v in vars(p1).items() if k != "headers"} == {k: v for k, v in vars(p2).items()
                                                                         if k != "headers"}


# ---- the loop guard ------------------------------------------------------------------------------------------------
def test_loop_guard_parks_in_a_queue_of_the_source_type(vhost: RabbitVhost) -> None:
    broker_dead_letters(vhost, "quorum", 2, headers={REDRIVE_COUNT: 3, REDRIVE_ID: "m-first"})
    ch = vhost.channel()
    ch.basic_publish("", "work.dlq", b"young", pika.BasicProperties(headers={"source": "work", "reason": "boom",
                                                                            REDRIVE_COUNT: 2}))
    ch.close()
    report = run(target(vhost), "work.dlq", Action("redrive", dry_run=False, force=True, max_redrives=3))
    assert (report.ledger.moved, report.ledger.parked) == (3, 2) and report.ledger.adds_up()
    assert vhost.api.get(f"/queues/{vhost.path}/work.dlq.parked").json()["type"] == "quorum"
    parked = drain(vhost, "work.dlq.parked")
    assert [p.headers[REDRIVE_ID] for _m, p, _b in parked] == ["m-first"] * 2
    assert [p.headers[REDRIVE_COUNT] for _m, p, _b in parked] == [4, 4]
    assert [b for _m, _p, b in drain(vhost, "work")] == [b"young"]


# ---- a destination that fails --------------------------------------------------------------------------------------
def test_unroutable_messages_fail_and_stay_while_the_rest_move(vhost: RabbitVhost) -> None:
    broker_dead_letters(vhost, "classic", 3)
    broker_dead_letters(vhost, "classic", 2, work="gone")  # dead-lettered from "gone" into work.dlq too
    ch = vhost.channel()
    ch.queue_delete("gone")
    ch.close()
    t = target(vhost)
    skipped = run(t, "work.dlq", Action("redrive", dry_run=False))
    assert skipped.ledger.skipped == 5 and vhost.exact_depth("work.dlq") == 5
    assert skipped.problems["gone"][0].startswith("it does not exist")
    assert skipped.problems["work"] == ["nobody consumes it (0 consumers)"]
    report = run(t, "work.dlq", Action("redrive", dry_run=False, force=True))
    ledger = report.ledger
    assert (ledger.moved, ledger.failed) == (3, 2) and ledger.adds_up()
    assert all("unroutable" in why and "'gone'" in why for why in ledger.fail_reasons)
    assert vhost.exact_depth("work") == 3 and vhost.exact_depth("work.dlq") == 2
    assert {p.headers["x-first-death-queue"] for _m, p, _b in peek_all(vhost, "work.dlq", 2)} == {"gone"}


# ---- read-only ------------------------------------------------------------------------------------------------------
def test_read_only_refuses_every_write_and_a_strict_one_refuses_reading(vhost: RabbitVhost) -> None:
    broker_dead_letters(vhost, "classic", 3)
    declare(vhost, "classic", "archive")
    t = target(vhost, writable=False)
    for action in (Action("redrive", dry_run=False), Action("purge", dry_run=False),
                   Action("delete", dry_run=False), Action("move", to=Place("queue", "archive"), dry_run=False)):
        with pytest.raises(ReadOnly, match="allow_write = true") as info:
            run(t, "work.dlq", action)
        assert "\n" not in str(info.value)

    async def import_() -> None:
        async with RabbitMQStore(t, "archive") as store:
            await store.write(Place("queue", "archive"), [Record(id="x", body=b"x")])

    with pytest.raises(ReadOnly):
        asyncio.run(import_())
    strict = target(vhost, read_only=True)
    with pytest.raises(ReadOnly, match="requeues") as info:
        run(strict, "work.dlq", Action("redrive"))  # a dry run reads, and a RabbitMQ read requeues
    assert "\n" not in str(info.value)
    assert vhost.exact_depth("work.dlq") == 3 and vhost.exact_depth("archive") == 0
    assert [m.redelivered for m, _p, _b in peek_all(vhost, "work.dlq", 3)] == [False] * 3  # never even delivered


# ---- resume --------------------------------------------------------------------------------------------------------
class CrashingStore(RabbitMQStore):
    """Killed once between a confirmed publish and the ack: the second ``remove`` raises."""

    removes = 0

    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        CrashingStore.removes += 1
        if CrashingStore.removes == 2:
            raise RuntimeError("killed")
        return await super().remove(records)


def test_a_journal_resumes_a_crashed_redrive_without_duplicates(vhost: RabbitVhost, tmp_path: Path) -> None:
    broker_dead_letters(vhost, "classic", 10)
    t = target(vhost)
    path = tmp_path / "journal.jsonl"

    def journal() -> Journal:
        return Journal(path, lambda doc: json.dumps(doc, ensure_ascii=True), {"action": "redrive"})

    j = journal()
    with pytest.raises(RuntimeError, match="killed"):
        run(t, "work.dlq", Action("redrive", dry_run=False, force=True, batch=4), journal=j,
            store_class=CrashingStore)
    j.close()
    assert vhost.exact_depth("work") == 8 and vhost.exact_depth("work.dlq") == 6  # 4 confirmed, not acked: back
    j = journal()
    assert j.resuming
    report = run(t, "work.dlq", Action("redrive", dry_run=False, force=True, batch=4), journal=j)
    j.close()
    ledger = report.ledger
    assert (ledger.resumed, ledger.moved, ledger.possible_duplicates, ledger.failed) == (4, 6, 0, 0)
    assert ledger.adds_up() and vhost.exact_depth("work.dlq") == 0
    bodies = sorted(b for _m, _p, b in drain(vhost, "work"))
    assert bodies == sorted(f'{{"n": {i}}}'.encode() for i in range(10))  # each once: no duplicate


# ---- the walk ------------------------------------------------------------------------------------------------------
@TYPES
def test_a_selective_walk_reads_each_message_once_and_ends_by_count(vhost: RabbitVhost, qtype: str) -> None:
    declare(vhost, qtype, "big.dlq")
    ch = vhost.channel()
    for i in range(120):
        ch.basic_publish("", "big.dlq", str(i).encode(),
                         pika.BasicProperties(message_id=f"m-{i}", headers={"source": "big", "reason": "boom",
                                                                       "pick": str(i % 4 == 0)}))
    ch.close()
    declare(vhost, qtype, "big")
    t0 = time.monotonic()
    # batches of 4 and 90 released messages: the held ones outgrow the first consumer's prefetch (100) many times
    report = run(target(vhost), "big.dlq", Action("redrive", dry_run=False, force=True, batch=4),
                 Selection.parse(headers=["pick=True"]), idle_s=5.0)
    assert time.monotonic() - t0 < 5.0  # ended by the count, not by waiting for more
    assert (report.ledger.examined, report.ledger.selected, report.ledger.moved) == (120, 30, 30)
    assert sorted(int(b) for _m, _p, b in drain(vhost, "big")) == list(range(0, 120, 4))
    left = peek_all(vhost, "big.dlq", 90)
    order = [int(b) for _m, _p, b in left]
    if qtype == "classic":
        assert order == [i for i in range(120) if i % 4]  # requeued in order
    else:  # one delivery per message per walk; the order is the queue's best effort (see _requeue_in_order)
        assert sorted(order) == [i for i in range(120) if i % 4]
        assert {p.headers.get("x-delivery-count") for _m, p, _b in left} == {1}


def test_quorum_delivery_limit_is_refused_unless_forced(vhost: RabbitVhost) -> None:
    declare(vhost, "quorum", "limited.dlq", **{"x-delivery-limit": 5})
    vhost.fill("limited.dlq", [b"a", b"b"], durable=True, arguments={"x-queue-type": "quorum",
                                                                      "x-delivery-limit": 5})
    t = target(vhost)
    with pytest.raises(UnsafeOperation, match="delivery limit of 5") as info:
        run(t, "limited.dlq", Action("redrive"))
    assert "\n" not in str(info.value)
    assert [m.redelivered for m, _p, _b in peek_all(vhost, "limited.dlq", 2)] == [False, False]
    async def export_forced() -> list[str]:
        async with RabbitMQStore(t, "limited.dlq", force=True) as store:
            report = await run_action(store, Action("export"), Selection())
            assert report.ledger.exported == 2
            return store.side_effects

    notes = asyncio.run(export_forced())
    assert any("x-delivery-count" in line and "delivery limit 5" in line for line in notes)
    # one delivery for the test's own look above, one for the export: the walk counted one each
    assert [p.headers["x-delivery-count"] for _m, p, _b in peek_all(vhost, "limited.dlq", 2)] == [2, 2]


# ---- pre-flight and places -----------------------------------------------------------------------------------------
def test_preflight_names_each_problem_in_one_line(vhost: RabbitVhost) -> None:
    declare(vhost, "classic", "work.dlq")
    declare(vhost, "classic", "bounce", dead_letter_to="work.dlq", **{"x-message-ttl": 0})
    t = target(vhost)

    async def go() -> dict[str, list[str]]:
        async with RabbitMQStore(t, "work.dlq") as store:
            assert store.parked() == Place("queue", "work.dlq.parked")
            return {name: await store.preflight(await store.resolve(name))
                    for name in ("missing", "work.dlq", "bounce")}

    found = asyncio.run(go())
    assert found["missing"][0].startswith("it does not exist")
    assert found["work.dlq"][0].startswith("it is the source itself")
    assert found["bounce"] == ["nobody consumes it (0 consumers)",
                               "it dead-letters straight back into work.dlq (a message TTL of 0 ms; dead-letter "
                               "exchange '(default)', arguments)"]
    assert all("\n" not in line for lines in found.values() for line in lines)
    with pytest.raises(NotFound, match="'nothing-here' not found"):
        run(t, "nothing-here", Action("redrive"))


def test_without_the_management_api_the_amqp_side_still_works(vhost: RabbitVhost) -> None:
    broker_dead_letters(vhost, "classic", 3)
    t = dataclasses.replace(parse_broker_url(vhost.url + "?management_url=http://127.0.0.1:9"), allow_write=True,
                            name="t")

    async def go() -> tuple[Report, list[str], list[str]]:
        async with RabbitMQStore(t, "work.dlq") as store:
            report = await run_action(store, Action("redrive", dry_run=False, force=True), Selection())
            return report, store.side_effects, await store.preflight(Place("queue", "work"))

    report, notes, problems = asyncio.run(go())
    assert report.ledger.moved == 3 and vhost.exact_depth("work") == 3 and vhost.exact_depth("work.dlq") == 0
    assert any("management API did not answer" in line for line in notes)
    assert problems == ["nobody consumes it (0 consumers)"]  # the AMQP-side checks need no management API
