"""Issue 17, items 2 and 9: a failed broker's figures are marked stale with their age (its rows, its queue detail),
and Kafka's and Redis's in/s and out/s come from successive snapshots, as ``qdeck lag`` derives its rates."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from console import embedded_redis
from console.tui.app import QdeckApp
from console.tui.detail import QueueDetailScreen
from console.tui.state import BrokerState
from console.tui.table import VirtualTable
from probes import parse_broker_url
from probes.models import BrokerOverview, BrokerSnapshot, GroupLag, QueueStats
from tests.console.test_tui_brokers import overview_rows, until
from tests.rabbit import RabbitVhost


def _stream(appended: int | None, *, kind: str = "stream") -> QueueStats:
    return QueueStats(broker="b", name="s", kind=kind, depth=10, in_flight=0, consumers=1, publish_rate=None,  # type: ignore[arg-type]
                      deliver_rate=None, dead_letter_target=None, is_dead_letter=False, appended=appended)


def _snap(taken_at: float, appended: int | None, groups: dict[str, int | None], kind: str = "redis") -> BrokerSnapshot:
    overview = BrokerOverview(broker="b", kind=kind, version=None, node=None, cluster=None, queues=1, messages=10,
                              ready=10, unacked=0, consumers=1, connections=None, publish_rate=None, deliver_rate=None)
    return BrokerSnapshot(broker="b", kind=kind, taken_at=taken_at, duration_s=0.01, overview=overview,
                          queues=(_stream(appended),),
                          groups=tuple(GroupLag(broker="b", group=g, source="s", lag=0, consumed=c)
                                       for g, c in groups.items()))


def test_snapshot_rates_from_two_snapshots_counters() -> None:
    from probes.lag import with_snapshot_rates

    before = _snap(100.0, 1_000, {"g1": 400, "g2": 900})
    after = _snap(102.0, 1_200, {"g1": 500, "g2": 1_000})
    [q] = with_snapshot_rates(after, before).queues
    assert (q.publish_rate, q.deliver_rate) == (100.0, 100.0)  # 200 appended in 2 s; 100 + 100 consumed
    assert q.rate_source == "snapshots of entries-added, entries-read"
    # A group new since the last snapshot: its rate is unknown, so out/s is not guessed; in/s still known.
    [q] = with_snapshot_rates(_snap(102.0, 1_200, {"g1": 500, "g3": 7}), before).queues
    assert (q.publish_rate, q.deliver_rate) == (100.0, None)
    # No group at all: nothing consumes. No counter (Redis before 7): in/s unknown.
    [q] = with_snapshot_rates(_snap(102.0, None, {}), _snap(100.0, None, {})).queues
    assert (q.publish_rate, q.deliver_rate) == (None, 0.0)
    # One snapshot, or no time between two: no rates at all.
    assert with_snapshot_rates(after, None) is after
    assert with_snapshot_rates(after, after) is after


def test_a_failed_brokers_cell_says_stale_with_the_age() -> None:
    state = BrokerState("redis://h:6379/0", "redis")
    assert state.shown_label() == "redis://h:6379/0" and state.stale_s() is None
    state.record(_snap(1_000.0, 5, {}))
    state.failed("connection refused")
    assert state.stale_s(now=1_032.0) == 32.0
    assert state.shown_label(now=1_032.0) == "stale 32s · redis://h:6379/0"
    state.short = "h:6379/0"  # the short label the app gives it (short_labels)
    assert state.shown_label(now=1_032.0) == "stale 32s · h:6379/0"
    state.record(_snap(1_040.0, 5, {}))
    assert state.stale_s(now=1_041.0) is None


@pytest.mark.slow
async def test_redis_and_kafka_rates_show_in_the_overview(redis_url: str, kafka_url: str) -> None:
    """A producer at ~40 msg/s on a Redis stream (Redis 7 reports entries-added) and on a Kafka topic: the overview's
    in/s is a figure, not "-", and the detail names where it came from."""
    from confluent_kafka import Producer

    stream, topic = f"qdeck-test-rates-{time.time_ns()}", f"qdeck-test-rates-{time.time_ns()}"
    r = redis.Redis.from_url(redis_url)
    r.xadd(stream, {"body": b"0"})
    r.xgroup_create(stream, "workers", id="0")
    producer = Producer({"bootstrap.servers": kafka_url.removeprefix("kafka://")})
    producer.produce(topic, b"0")
    producer.flush(15)
    app = QdeckApp([parse_broker_url(redis_url), parse_broker_url(kafka_url)], interval=0.5)
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            async def produce() -> None:
                while True:
                    r.xadd(stream, {"body": b"x"})
                    producer.produce(topic, b"x")
                    producer.poll(0)
                    await asyncio.sleep(0.025)

            task = asyncio.get_running_loop().create_task(produce())
            try:
                def rates_known() -> bool:
                    rows = overview_rows(app)
                    return all(name in rows and rows[name][6] not in ("-", "0.0") for name in (stream, topic))

                await until(pilot, rates_known, timeout=30, what="in/s of the stream and the topic")
                assert overview_rows(app)[topic][7] == "0.0"  # no consumer group at all: nothing consumes
                app.open_queue(next(iter(app.targets)), stream)
                await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen)
                            and bool(app.screen.query("#info")), what="the detail")
                info = str(app.screen.query_one("#info").render())
                assert "(rates from snapshots of entries-added, entries-read)" in info
                assert "stream · stream" not in info
            finally:
                task.cancel()
    finally:
        producer.flush(15)
        r.delete(stream)
        r.close()


@pytest.mark.slow
async def test_a_dead_brokers_rows_go_stale_and_come_back_live(vhost: RabbitVhost, kafka_url: str) -> None:
    """RabbitMQ, Kafka and a private Redis at once; the private Redis is killed by PID: its rows are drawn stale and
    say how old they are, its queue detail says so with the error, the other brokers' rows stay live; once it is
    back, its rows are live again."""
    ch = vhost.channel()
    ch.queue_declare("stale.rabbit")
    ch.close()
    port = embedded_redis.free_port()
    proc, url = embedded_redis.start(port)
    try:
        r = redis.Redis.from_url(url)
        r.xadd("stale:stream", {"body": b"x"})
        r.close()
        app = QdeckApp([parse_broker_url(vhost.url), parse_broker_url(kafka_url), parse_broker_url(url)],
                       interval=0.5, timeout=2.0)
        async with app.run_test(size=(160, 45)) as pilot:
            table = app.screen.query_one(VirtualTable)
            await until(pilot, lambda: {"stale:stream", "stale.rabbit"} <= set(overview_rows(app)), timeout=30,
                        what="both brokers' rows")
            embedded_redis.stop(proc)
            await until(pilot, lambda: app.states[url].health.up is False, timeout=10, what="the broker marked down")
            await pilot.pause(1.2)

            def redis_row() -> tuple[int, tuple[str, ...]]:
                return next((i, row) for i, row in enumerate(table.rows) if row[1] == "stale:stream")

            await until(pilot, lambda: redis_row()[1][0].startswith("stale "), what="the stale mark")
            index, row = redis_row()
            assert row[0] == f"stale {row[0].split()[1]} · 127.0.0.1:{port}/0" and index in table.stale
            rabbit = next(i for i, row in enumerate(table.rows) if row[1] == "stale.rabbit")
            assert rabbit not in table.stale and not table.rows[rabbit][0].startswith("stale")
            app.open_queue(url, "stale:stream")
            await until(pilot, lambda: isinstance(app.screen, QueueDetailScreen) and bool(app.screen.query("#info")),
                        what="the detail")
            info = str(app.screen.query_one("#info").render())
            assert "stale: the figures below are from the last good poll" in info
            await pilot.press("q")
            proc, _ = embedded_redis.start(port)
            await until(pilot, lambda: app.states[url].health.up is True, timeout=30, what="recovery")
            table = app.screen.query_one(VirtualTable)
            await until(pilot, lambda: not table.stale and not any(row[0].startswith("stale") for row in table.rows),
                        what="live rows again (the restarted Redis is empty: its stream is gone)")
    finally:
        embedded_redis.stop(proc)


def test_short_broker_labels_tell_brokers_apart() -> None:
    """Issue 17 item 5: two vhosts on one host no longer both read `amqp://guest:***@127.0.…` (the cell was cut at
    24 characters): the profile name, else host:port/vhost, with the scheme only when that is still ambiguous."""
    from console.tui.state import short_labels

    targets = [parse_broker_url("amqp://guest:secret@127.0.0.1:5672/orders-vhost-with-a-long-name"),
               parse_broker_url("amqp://guest:secret@127.0.0.1:5672/billing"),
               parse_broker_url("redis://127.0.0.1:6379/0"), parse_broker_url("rediss://127.0.0.1:6379/0"),
               parse_broker_url("kafka://127.0.0.1:9092", name="prod-kafka")]
    short = short_labels(targets)
    assert [short[t.label] for t in targets] == [
        "127.0.0.1:5672/orders-vhost-with-a-long-name", "127.0.0.1:5672/billing", "redis://127.0.0.1:6379/0",
        "rediss://127.0.0.1:6379/0", "prod-kafka"]
    assert not any("secret" in s for s in short.values())


@pytest.mark.slow
async def test_one_broker_hides_the_broker_column_several_show_short_labels(vhost: RabbitVhost,
                                                                             redis_url: str) -> None:
    ch = vhost.channel()
    ch.queue_declare("label.q")
    ch.close()
    app = QdeckApp([parse_broker_url(vhost.url)], interval=0.5)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "label.q" in overview_rows(app), timeout=30, what="the queue")
        table = app.screen.query_one(VirtualTable)
        assert "broker" in table.hidden and not str(table.render_line(0).text).lstrip().startswith("broker")
    app = QdeckApp([parse_broker_url(vhost.url), parse_broker_url(redis_url)], interval=0.5)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: "label.q" in overview_rows(app), timeout=30, what="the queue")
        table = app.screen.query_one(VirtualTable)
        assert not table.hidden and str(table.render_line(0).text).startswith("broker")
        assert overview_rows(app)["label.q"][0] == f"127.0.0.1:5672/{vhost.name}"
        line = str(table.render_line(1 + list(table.rows).index(overview_rows(app)["label.q"])).text)
        assert line.startswith("127.0.0.1:") and f"…{vhost.name[-14:]} " in line  # cut in the middle: both ends


@pytest.mark.slow
async def test_console_says_what_the_cli_says_types_notes_and_totals(vhost: RabbitVhost) -> None:
    """Issue 17 item 3: the type column says classic / quorum (the CLI's TYPE, not "queue"), the snapshot's notes
    (here a dead-letter exchange that does not exist) are shown under the overview as the CLI prints them under its
    table, and the header carries the broker's totals."""
    ch = vhost.channel()
    ch.queue_declare("typed.classic", durable=True)
    ch.queue_declare("typed.quorum", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare("typed.orphan", durable=True, arguments={"x-dead-letter-exchange": "no-such-dlx"})
    ch.close()
    app = QdeckApp([parse_broker_url(vhost.url)], interval=0.5)
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: {"typed.classic", "typed.quorum", "typed.orphan"} <= set(overview_rows(app)),
                    timeout=30, what="the three queues")
        rows = overview_rows(app)
        assert rows["typed.classic"][2] == "classic" and rows["typed.quorum"][2] == "quorum"
        notes = str(app.screen.query_one("#notes").render())
        assert "dead-letter exchange 'no-such-dlx' does not exist" in notes
        health = str(app.screen.query_one("#health").render())
        assert "depth 0  in flight 0  consumers 0" in health
