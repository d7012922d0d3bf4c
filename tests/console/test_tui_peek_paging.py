"""Issue 17 item 8 (console): the queue detail's messages page. ``]`` and ``[`` step through a DLQ of 61 (its
expired and delivery-limit messages were past the fixed first 20), the title says which of how many in which order,
``r`` turns it newest first, RabbitMQ asks before every page and says what it takes again, and ``i`` shows a Redis
group's pending entries with idle time, delivery count and consumer."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import redis

from console.tui.app import QdeckApp
from console.tui.confirm import ConfirmPeek
from console.tui.detail import QueueDetailScreen
from console.tui.table import VirtualTable
from probes import parse_broker_url
from probes.fake import FakeBroker
from probes.models import DeathRecord, PeekedMessage
from tests.console.test_tui_brokers import until
from tests.console.tui_fixtures import FROZEN, FrozenProbe, q, screen_text

N = 61
REASONS = ["rejected"] * 20 + ["expired"] * 30 + ["delivery_limit"] * 11


def dlq_app(name: str, kind: str = "memory") -> QdeckApp:
    broker = FakeBroker(queues=[dataclasses.replace(q("work.dlq", N, consumers=0, dlq=True), queue_type="classic")],
                        messages={"work.dlq": [PeekedMessage(i, f"m{i}".encode(), 3, False, message_id=f"id-{i}",
                                                             deaths=(DeathRecord("work", reason, 1),))
                                               for i, reason in enumerate(REASONS)]})
    target = parse_broker_url(f"memory://{name}")
    app = QdeckApp([target], interval=3600.0, clock=lambda: FROZEN + 3,
                   probes={target.label: FrozenProbe(target, broker=broker)})
    app.states[target.label].kind = kind
    return app


def title(app: QdeckApp) -> str:
    return " ".join(str(app.screen.query_one("#messages-title").render()).split())


def ids(detail: QueueDetailScreen) -> list[str]:
    return [r[0] for r in detail.query_one("#messages", VirtualTable).rows]


async def test_brackets_page_through_all_61_and_r_turns_it_newest_first() -> None:
    app = dlq_app("paging")
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause(0.2)
        app.open_queue("memory://paging", "work.dlq")
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the detail")
        detail = app.screen
        assert isinstance(detail, QueueDetailScreen)
        await pilot.press("p")
        await until(pilot, lambda: "messages 1–20 of 61" in title(app), what="the first page")
        assert "oldest first · page 1" in title(app) and "] next" in title(app)
        seen = ids(detail)
        for n, span in ((2, "21–40"), (3, "41–60"), (4, "61–61")):
            await pilot.press("right_square_bracket")
            await until(pilot, lambda span=span: f"messages {span} of 61" in title(app), what=f"page {n}")
            assert f"page {n}" in title(app)
            seen += ids(detail)
        assert seen == [f"id-{i}" for i in range(N)]  # every message once, in order
        assert [m.death_reason for m in detail.messages] == ["delivery_limit"]
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: "this is the last page" in title(app), what="the end said")
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "messages 41–60 of 61" in title(app), what="a page back")
        assert ids(detail)[0] == "id-40" and "page 3" in title(app)
        await pilot.press("r")
        await until(pilot, lambda: "messages 1–20 of 61 · newest first · page 1" in title(app), what="newest first")
        assert ids(detail)[:2] == ["id-60", "id-59"]
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: "this is the first page" in title(app), what="the start said")


async def test_rabbitmq_asks_before_each_page_and_says_what_it_takes_again() -> None:
    app = dlq_app("paging-rabbit", kind="rabbitmq")
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause(0.2)
        app.open_queue("memory://paging-rabbit", "work.dlq")
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the detail")
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPeek), what="the dialog")
        assert "takes up to 21 messages" in screen_text(app)  # one past the page: is there another?
        await pilot.press("y")
        await until(pilot, lambda: "messages 1–20 of 61" in title(app), what="the first page")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPeek), what="the dialog again")
        assert "takes up to 41 messages" in " ".join(screen_text(app).split())  # it cannot seek
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="cancelled")
        assert "messages 1–20 of 61" in title(app)  # nothing read, the page stays
        await pilot.press("right_square_bracket", "y")
        await until(pilot, lambda: "messages 21–40 of 61" in title(app), what="page 2")


@pytest.mark.redis
async def test_i_shows_a_groups_pending_entries_with_idle_time_and_deliveries(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    stream = f"qdeck-test-{uuid.uuid4().hex[:8]}:requests"
    entries = [r.xadd(stream, {"payload": f"r{i}"}).decode() for i in range(30)]
    r.xgroup_create(stream, "workers", id="0")
    r.xreadgroup("workers", "w1", {stream: ">"}, count=25)
    for consumer in ("w2", "w3"):
        r.xclaim(stream, "workers", consumer, min_idle_time=0, message_ids=[entries[3]])
    app = QdeckApp([parse_broker_url(redis_url)], interval=3600.0)
    label = next(iter(app.targets))
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: any(g.source == stream for g in (app.states[label].snapshot.groups
                                                                        if app.states[label].snapshot else ())),
                        what="the stream's group in a snapshot")
            app.open_queue(label, stream)
            await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the detail")
            await pilot.pause(0.1)
            detail = app.screen
            assert isinstance(detail, QueueDetailScreen)
            table = detail.query_one("#messages", VirtualTable)
            await pilot.press("i")
            await until(pilot, lambda: "pending entries of group 'workers'" in title(app), what="the pending view")
            assert "messages 1–20 of 25 · oldest first" in title(app)
            header = str(table.render_line(0).text)
            assert "idle" in header and "deliveries" in header and "consumer" in header
            rows = {row[0]: row for row in table.rows}
            assert rows[entries[3]][5:7] == ("3", "w3") and rows[entries[0]][5:7] == ("1", "w1")
            await pilot.press("r")
            await until(pilot, lambda: "oldest first only" in title(app), what="no reverse for pending")
            await pilot.press("right_square_bracket")
            await until(pilot, lambda: "messages 21–25 of 25" in title(app), what="page 2 of the pending list")
            await pilot.press("i")  # one group: back to the stream's messages
            await until(pilot, lambda: "messages 1–20 of 30" in title(app), what="the messages again")
            assert "idle" not in str(table.render_line(0).text)
        assert r.xpending(stream, "workers")["pending"] == 25  # nothing acknowledged, claimed or read
    finally:
        r.delete(stream)
        r.close()
