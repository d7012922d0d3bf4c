"""The console against real brokers, headless (App.run_test + Pilot): depths, filter, x-death reasons, a broker
going down and coming back, and hostile payloads rendered as visible escapes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis

from console import embedded_redis
from console.tui.app import QdeckApp
from console.tui.body import BodyScreen
from console.tui.confirm import ConfirmPeek
from console.tui.detail import QueueDetailScreen
from console.tui.health import HealthBar
from console.tui.overview import OverviewScreen
from console.tui.table import VirtualTable
from probes import parse_broker_url
from tests.console.tui_fixtures import screen_text
from tests.probes.test_rabbitmq_probe import _dead_letter_topology
from tests.rabbit import RabbitVhost

pytestmark = pytest.mark.slow


async def until(pilot, check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def peek_stream(pilot, app: QdeckApp, url: str, stream: str, count: int) -> QueueDetailScreen:
    """Wait for ``stream`` (or topic) in the overview, open its detail, press ``p`` and wait for ``count``
    messages."""
    await until(pilot, lambda: stream in overview_rows(app), what="the stream in the overview")
    app.open_queue(url, stream)
    await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the detail")
    await pilot.press("p")
    detail = app.screen
    assert isinstance(detail, QueueDetailScreen)
    await until(pilot, lambda: len(detail.messages) == count, what="the peek")
    return detail


def overview_rows(app: QdeckApp) -> dict[str, tuple[str, ...]]:
    table = app.screen.query_one(VirtualTable)
    return {row[1]: row for row in table.rows}


async def test_rabbitmq_depths_filter_and_dead_letter_reason(vhost: RabbitVhost) -> None:
    _dead_letter_topology(vhost)
    ch = vhost.channel()
    ch.queue_declare("embed.requests")
    for i in range(7):
        ch.basic_publish("", "embed.requests", f"r{i}".encode())
    ch.close()
    app = QdeckApp([parse_broker_url(vhost.url)], interval=0.5)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: overview_rows(app).get("embed.requests", ("",) * 4)[3] == "7"
                    and overview_rows(app).get("work.dlq", ("",) * 4)[3] == "2",
                    timeout=30, what="depths 7 and 2 in the overview (management stats refresh every 5 s)")
        rows = overview_rows(app)
        assert set(rows) == {"embed.requests", "work", "work.dlq"}
        assert rows["work.dlq"][9] == "DLQ" and rows["work"][9] == "→ dlx"

        await pilot.press("slash", "e", "m", "b")
        await until(pilot, lambda: set(overview_rows(app)) == {"embed.requests"}, what="the filter")
        await pilot.press("escape")
        await until(pilot, lambda: len(overview_rows(app)) == 3, what="the filter cleared")

        await pilot.press("d")
        await until(pilot, lambda: app.screen.name == "deadletters", what="dead letters view")
        assert [r[1] for r in app.screen.query_one(VirtualTable).rows] == ["work.dlq"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the DLQ's detail")
        await pilot.press("p")  # RabbitMQ: asks first, because its peek requeues
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmPeek", what="the peek confirmation")
        await pilot.press("y")
        detail = app.screen
        assert isinstance(detail, QueueDetailScreen)
        await until(pilot, lambda: len(detail.messages) == 2, what="the peeked messages")
        table = detail.query_one("#messages", VirtualTable)
        reasons = {row[1]: row for row in table.rows}
        assert set(reasons) == {"rejected", "expired"}
        assert reasons["rejected"][2] == "work" and reasons["rejected"][3] == "1"
        assert "redelivered" in str(detail.query_one("#messages-title").render())
    assert vhost.exact_depth("work.dlq") == 2  # the peek put them back


async def test_broker_down_turns_red_and_recovers_while_keys_work(tmp_path) -> None:
    port = embedded_redis.free_port()
    proc, url = embedded_redis.start(port)
    try:
        r = redis.Redis.from_url(url)
        r.xadd("jobs:stream", {"body": b"x"})
        r.close()
        app = QdeckApp([parse_broker_url(url)], interval=0.5, timeout=2.0)
        async with app.run_test(size=(140, 30)) as pilot:
            health = app.screen.query_one(HealthBar)
            await until(pilot, lambda: app.states[url].health.up is True, what="the first good poll")
            embedded_redis.stop(proc)
            went_down = time.monotonic()
            await until(pilot, lambda: app.states[url].health.up is False, timeout=10, what="the broker marked down")
            assert time.monotonic() - went_down <= 2 * 0.5 + 2.0  # two poll intervals (+ the poll's own timeout)
            health = app.screen.query_one(HealthBar)
            text = health.render()
            assert "DOWN" in str(text)
            assert any(span.style and "red" in str(span.style) for span in text.spans)
            # The app keeps answering keys while the broker is down.
            await pilot.press("l")
            await until(pilot, lambda: app.screen.name == "lag", what="the lag view")
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, OverviewScreen), what="back to the overview")
            proc, url2 = embedded_redis.start(port)
            assert url2 == url
            await until(pilot, lambda: app.states[url].health.up is True, timeout=30, what="recovery")
            assert "DOWN" not in str(app.screen.query_one(HealthBar).render())
    finally:
        embedded_redis.stop(proc)


async def test_hostile_payload_renders_as_visible_escapes(redis_url: str) -> None:
    stream = f"qdeck-test-tui-{time.time_ns()}:dlq"
    r = redis.Redis.from_url(redis_url)
    r.xadd(stream, {"body": b"title \x1b]0;pwned\x07 clear \x1b[2J bad \xff end", "reason": "bad \x1b[31mred",
                    "source": "embed"})
    r.close()
    app = QdeckApp([parse_broker_url(redis_url)], interval=1.0)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            detail = await peek_stream(pilot, app, redis_url, stream, 1)
            row = detail.query_one("#messages", VirtualTable).rows[0]
            assert row[1] == "bad \\x1b[31mred"
            assert "\x1b" not in "".join(row)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, BodyScreen), what="the body viewer")
            shown = str(app.screen.query_one("#body-text").render())
            assert "\\x1b]0;pwned\\x07" in shown and "\\x1b[2J" in shown and "\\xff" in shown
            assert "\x1b" not in shown and "\x07" not in shown
            assert "\x1b]0;pwned" not in app.export_screenshot()
    finally:
        r = redis.Redis.from_url(redis_url)
        r.delete(stream)
        r.close()
        await asyncio.sleep(0)


async def test_rabbitmq_peek_dialogs_say_the_truth_first(vhost: RabbitVhost) -> None:
    """A stream: no dialog, it cannot be peeked. A quorum queue with a delivery limit: the dialog says each peek is
    a delivery and offers only P, which peeks (forced); never a y that the probe then refuses (issue 17 item 7)."""
    ch = vhost.channel()
    ch.queue_declare("work.quorum", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
    ch.queue_declare("events.stream", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(2):
        ch.basic_publish("", "work.quorum", f"q{i}".encode())
    ch.close()
    app = QdeckApp([parse_broker_url(vhost.url)], interval=0.5)
    label = next(iter(app.targets))
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: {"work.quorum", "events.stream"} <= set(overview_rows(app)), timeout=30,
                    what="both queues in the overview")
        snap = app.states[label].snapshot
        assert snap is not None
        await until(pilot, lambda: (app.states[label].snapshot.queue("work.quorum") or snap.queues[0]).delivery_limit
                    == 5, what="the delivery limit in the snapshot")
        app.open_queue(label, "events.stream")
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen), what="the stream's detail")
        await pilot.press("p")
        await pilot.pause(0.2)
        assert isinstance(app.screen, QueueDetailScreen)  # no dialog
        assert "cannot be peeked" in str(app.screen.query_one("#messages-title").render())
        await pilot.press("escape")
        app.open_queue(label, "work.quorum")
        await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen) and app.screen.queue == "work.quorum",
                    what="the quorum queue's detail")
        detail = app.screen
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmPeek), what="the peek dialog")
        shown = " ".join(screen_text(app).split())
        assert "P: peek anyway" in shown and "counts as a delivery" in shown and "y: peek" not in shown
        await pilot.press("y")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ConfirmPeek)
        await pilot.press("P")
        assert isinstance(detail, QueueDetailScreen)
        await until(pilot, lambda: len(detail.messages) == 2, what="the forced peek")
        assert "refused" not in str(detail.query_one("#messages-title").render())


async def test_redis_stream_peek_shows_whole_entry_ids(redis_url: str) -> None:
    stream = f"qdeck-test-tui-ids-{time.time_ns()}"
    r = redis.Redis.from_url(redis_url)
    ids = [r.xadd(stream, {"body": f"job {i}".encode()}).decode() for i in range(3)]
    r.close()
    app = QdeckApp([parse_broker_url(redis_url)], interval=1.0)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            detail = await peek_stream(pilot, app, redis_url, stream, 3)
            table = detail.query_one("#messages", VirtualTable)
            shown = ["".join(seg.text for seg in table.render_line(y)).split()[0] for y in (1, 2, 3)]
            assert shown == ids
    finally:
        r = redis.Redis.from_url(redis_url)
        r.delete(stream)
        r.close()
        await asyncio.sleep(0)


@pytest.mark.kafka
async def test_kafka_peek_rows_show_partition_and_offset(kafka_url: str) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bs = kafka_url.removeprefix("kafka://")
    topic = f"qdeck-test-tui-{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": bs})  # kept alive until the topic exists
    for fut in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        fut.result(15)
    producer = Producer({"bootstrap.servers": bs})
    for partition in (0, 1):
        producer.produce(topic, value=f"p{partition}".encode(), partition=partition)
    assert producer.flush(15) == 0
    app = QdeckApp([parse_broker_url(kafka_url)], interval=1.0)
    label = next(iter(app.targets))
    async with app.run_test(size=(160, 40)) as pilot:
        detail = await peek_stream(pilot, app, label, topic, 2)
        table = detail.query_one("#messages", VirtualTable)
        assert sorted(row[0] for row in table.rows) == ["0:0", "1:0"]
