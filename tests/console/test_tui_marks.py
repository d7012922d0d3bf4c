"""Issue 18, the console: in a queue's peeked messages ``space`` marks, ``/`` filters and ``*`` marks what it shows,
and R M X E act on exactly the marked messages (by the id the broker's store reads them under), or on the whole
queue; R M X are disabled on a read-only broker; after an action the page is read again."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from console.tui.app import QdeckApp
from console.tui.detail import QueueDetailScreen
from console.tui.dlq_action import ActionDialog
from console.tui.table import VirtualTable
from probes.dlq.memory_store import CONSUMERS, MEMORY
from probes.dlq.model import Place, Record
from probes.dlq.peek_ids import store_id
from probes.errors import Unsupported
from probes.fake import FakeBroker
from probes.models import PeekedMessage, PeekFrom, PeekResult
from probes.urls import parse_broker_url
from tests.console.test_tui_brokers import until
from tests.console.tui_fixtures import FROZEN, FrozenProbe, q, screen_text

SIZE = (150, 40)


# ---- the one mapping: a peeked message -> its store's Record.id, per broker kind -------------------------------------
class KafkaMsg:
    """What confluent-kafka hands both the peek and the store."""

    def __init__(self, partition: int, offset: int, value: bytes, key: bytes | None) -> None:
        self._p, self._o, self._v, self._k = partition, offset, value, key

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes | None:
        return self._k

    def headers(self) -> list[tuple[str, bytes]]:
        return [("reason", b"boom")]

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_795_000_000_000)


def test_a_peeked_message_names_the_record_its_store_reads() -> None:
    from pika import spec

    from probes.dlq import kafka_records, redis_records
    from probes.dlq.rq_store import RqStore
    from probes.kafka_peek import record as kafka_peeked
    from probes.rabbitmq.dlq_records import to_record as rabbit_record
    from probes.rabbitmq.probe import _peeked as rabbit_peeked
    from probes.redis_peek import body_message, stream_message
    from probes.redis_rq import RqLayout, _job_message

    msg = KafkaMsg(3, 41, b"v", b"k")
    assert store_id("kafka", kafka_peeked(0, msg, None)) == kafka_records.to_record(msg, {}).id == "3:41"

    entry = stream_message(0, b"1795000000000-7", {b"body": b"x", b"reason": b"boom"}, None)
    assert store_id("redis", entry) == redis_records.parse_entry(b"1795000000000-7", [b"body", b"x"]).id

    value = b'{"source": "work", "n": 1}'
    assert store_id("redis", body_message(0, value, None)) == redis_records.parse_value(value).id
    with pytest.raises(Unsupported, match="digest of its whole body"):
        store_id("redis", body_message(0, value, 4))  # the peek cut it: the digest cannot be told

    job = {b"origin": b"work", b"status": b"failed", b"description": b"f()"}
    rq = RqStore(parse_broker_url("redis://127.0.0.1:6379/0"), "rq:failed:work", RqLayout("rq"))
    assert store_id("redis", _job_message(0, "job-9", job, [], True, None)) == rq._record("job-9", job, []).id

    shown = rabbit_peeked(0, {"payload": "x", "payload_encoding": "string", "properties": {"message_id": "m-7"}})
    assert store_id("rabbitmq", shown) == rabbit_record(1, spec.BasicProperties(message_id="m-7"), b"x").id
    with pytest.raises(Unsupported, match="no message_id"):  # its store id is a digest of pika's types
        store_id("rabbitmq", rabbit_peeked(0, {"payload": "x", "payload_encoding": "string", "properties": {}}))

    assert store_id("memory", PeekedMessage(0, b"", 0, False, message_id="m-1")) == "m-1"
    with pytest.raises(Unsupported):
        store_id("sqs", entry)


# ---- the console, on the memory store ------------------------------------------------------------------------------
class StoreProbe(FrozenProbe):
    """The fake probe peeking what the memory store holds now (so a peek after an action shows its result);
    an id not starting m- stands for a message the peek cannot name (a RabbitMQ one without a message_id)."""

    async def peek(self, queue: str, limit: int, *, force: bool = False, body_bytes: int | None = None,
                   start: PeekFrom | None = None) -> PeekResult:
        held = MEMORY[self.target.host].get(queue, [])
        self.state.messages[queue] = [
            PeekedMessage(position=i, body=r.body, size=len(r.body), body_truncated=False,
                          message_id=r.id if r.id.startswith("m-") else None, first_death_reason=r.reason,
                          first_death_queue=r.origin.name if r.origin else None) for i, r in enumerate(held)]
        return await super().peek(queue, limit, force=force, start=start)


def store_app(name: str, writable: bool, records: Sequence[Record] | None = None) -> QdeckApp:
    MEMORY[name] = {"work": [], "work.dlq": list(records if records is not None else [
        Record(id=f"m-{i}", body=b'{"n": %d}' % i, reason="expired" if i % 2 else "rejected",
               origin=Place("queue", "work")) for i in range(5)])}
    CONSUMERS[name] = {"work"}
    broker = FakeBroker(queues=[q("work", 0, target="dlx"), q("work.dlq", 5, consumers=0, dlq=True)])
    target = dataclasses.replace(parse_broker_url(f"memory://{name}"), name=name, allow_write=writable)
    return QdeckApp([target], interval=3600, clock=lambda: FROZEN + 3,
                    probes={target.label: StoreProbe(target, broker=broker)})


def rows(app: QdeckApp) -> list[str]:
    return [r[0] for r in app.screen.query_one("#messages", VirtualTable).rows]


def held(name: str, queue: str) -> list[str]:
    return [r.id for r in MEMORY[name][queue]]


async def open_dlq(pilot: Any, app: QdeckApp, count: int) -> None:
    await pilot.press("d", "enter")  # not RabbitMQ: the detail peeks straight away
    await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen) and len(rows(app)) == count,
                what=f"{count} peeked messages")


async def says(pilot: Any, app: QdeckApp, text: str) -> None:
    await until(pilot, lambda: text in screen_text(app), what=repr(text))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr("console.tui.peek_marks.screenshot_dir", lambda: tmp_path)
    return tmp_path


async def test_space_marks_two_and_r_redrives_exactly_those_then_the_page_is_read_again(state: Path) -> None:
    app = store_app("marks-r", writable=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await open_dlq(pilot, app, 5)
            await pilot.press("down", "space", "down", "space")  # space moves on: m-1, then m-3
            await says(pilot, app, "2 marked")
            assert rows(app) == ["  m-0", "✓ m-1", "  m-2", "✓ m-3", "  m-4"]
            await pilot.press("up", "space")  # again: unmarked
            await says(pilot, app, "1 marked")
            assert rows(app)[3] == "  m-3"
            await pilot.press("up", "space")
            await says(pilot, app, "2 marked")
            assert [r for r in rows(app) if r.startswith("✓")] == ["✓ m-1", "✓ m-3"]
            await pilot.press("R")
            await says(pilot, app, "2 of 5 messages in work.dlq would be redriven")
            assert held("marks-r", "work") == []
            await pilot.press("y")
            await says(pilot, app, "selected 2 = moved 2")
            await pilot.press("escape")
            await until(pilot, lambda: rows(app) == ["m-0", "m-2", "m-4"], what="the page read again, no marks")
            assert held("marks-r", "work") == ["m-1", "m-3"]
            assert held("marks-r", "work.dlq") == ["m-0", "m-2", "m-4"]
            assert "marked" not in screen_text(app).split("—")[0]
    finally:
        MEMORY.pop("marks-r", None)


async def test_a_filter_and_star_mark_what_it_shows_for_x_delete_and_e_export(state: Path) -> None:
    app = store_app("marks-x", writable=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await open_dlq(pilot, app, 5)
            await pilot.press("slash", *"expired", "enter")
            await until(pilot, lambda: rows(app) == ["m-1", "m-3"], what="the filter")
            await says(pilot, app, "2 of 5 shown")
            await pilot.press("asterisk")
            await says(pilot, app, "2 marked")
            await pilot.press("escape")  # clears the filter, keeps the marks
            await until(pilot, lambda: len(rows(app)) == 5, what="every row again")
            assert [r for r in rows(app) if r.startswith("✓")] == ["✓ m-1", "✓ m-3"]
            await pilot.press("E")
            await says(pilot, app, "y writes every message")
            await pilot.press("y")
            await says(pilot, app, "selected 2 = exported 2")
            await pilot.press("escape")
            exported = list(state.glob("qdeck-export-work.dlq-2-marked-*.jsonl"))
            assert len(exported) == 1 and len(exported[0].read_text().splitlines()) == 3  # header + 2
            assert "2 marked" in screen_text(app)  # an export changes nothing: the marks stay
            await pilot.press("X")
            await says(pilot, app, "Delete work.dlq")
            await says(pilot, app, "2 of 5 messages in work.dlq would be deleted")
            await pilot.press("y")
            await says(pilot, app, "selected 2 = deleted 2")
            await pilot.press("escape")
            await until(pilot, lambda: rows(app) == ["m-0", "m-2", "m-4"], what="the page after the delete")
            await pilot.press("X")  # nothing marked: the whole queue
            await says(pilot, app, "Purge work.dlq")
            await says(pilot, app, "3 of 3 messages in work.dlq would be purged")
            assert held("marks-x", "work.dlq") == ["m-0", "m-2", "m-4"]  # the dry run changed nothing
            await pilot.press("escape")
            assert not isinstance(app.screen, ActionDialog)
    finally:
        MEMORY.pop("marks-x", None)


async def test_read_only_disables_r_m_x_but_exports_the_marked_and_an_unnamed_message_cannot_be_marked(
        state: Path) -> None:
    records = [Record(id="m-0", body=b"a", reason="rejected"), Record(id="h-digest", body=b"b", reason="rejected")]
    app = store_app("marks-ro", writable=False, records=records)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await open_dlq(pilot, app, 2)
            assert "read-only: R M X need allow_write = true" in screen_text(app)
            await pilot.press("down", "space")  # the second has no message_id: the peek cannot name it
            await says(pilot, app, "cannot mark this message")
            await pilot.press("up", "space")
            await says(pilot, app, "1 marked")
            for key in ("R", "M", "X"):
                await pilot.press(key)
                await pilot.pause(0.1)
                assert not isinstance(app.screen, ActionDialog), key
            await pilot.press("E")
            await says(pilot, app, "y writes every message")
            await pilot.press("y")
            await says(pilot, app, "selected 1 = exported 1")
            assert held("marks-ro", "work.dlq") == ["m-0", "h-digest"]
    finally:
        MEMORY.pop("marks-ro", None)


# ---- a real Redis stream --------------------------------------------------------------------------------------------
@pytest.mark.redis
async def test_marking_two_of_five_redis_stream_entries_redrives_exactly_those(redis_url: str, state: Path) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    base = f"qdeck-test-{uuid.uuid4().hex[:8]}"
    origin, dlq = f"{base}:work", f"{base}:work.dlq"
    r.xgroup_create(origin, "workers", id="$", mkstream=True)
    r.xgroup_createconsumer(origin, "workers", "w1")
    ids = [r.xadd(dlq, {"body": f"job {i}", "reason": "boom", "source": origin}).decode() for i in range(5)]
    target = dataclasses.replace(parse_broker_url(redis_url), allow_write=True)
    app = QdeckApp([target], interval=3600.0)
    try:
        async with app.run_test(size=SIZE) as pilot:
            app.open_queue(target.label, dlq)
            await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the detail")
            await pilot.press("p")
            await until(pilot, lambda: rows(app) == ids, what="the five entries")
            await pilot.press("down", "space", "down", "space")
            await says(pilot, app, "2 marked")
            await pilot.press("R")
            await says(pilot, app, "2 of 5 messages in " + dlq + " would be redriven")
            await pilot.press("y")
            await says(pilot, app, "selected 2 = moved 2")
            await pilot.press("escape")
            await until(pilot, lambda: rows(app) == [ids[0], ids[2], ids[4]], what="the three left")
        moved = r.xrange(origin)
        assert [fields[b"body"] for _eid, fields in moved] == [b"job 1", b"job 3"]
        assert [fields[b"qdeck-redrive-id"].decode() for _eid, fields in moved] == [ids[1], ids[3]]
        assert [eid.decode() for eid, _f in r.xrange(dlq)] == [ids[0], ids[2], ids[4]]
    finally:
        r.delete(origin, dlq)
        r.close()
