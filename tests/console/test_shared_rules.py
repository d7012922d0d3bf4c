"""One rule, one place: the lag model (net rate, time to drain, trend) against arithmetic, and the CLI and the
console giving the same answer for filtering and sorting, poll backoff, durations and dead-letter feeders."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from console.cli import app as cli
from console.tui.lag import LagScreen
from console.tui.overview import OverviewScreen
from console.tui.table import VirtualTable
from probes.fake import FAKE_BROKERS, FakeBroker
from probes.lag import lag_rows
from probes.models import BrokerOverview, BrokerSnapshot, GroupLag, QueueStats
from tests.console.tui_fixtures import FrozenProbe, demo_app, q

runner = CliRunner()
SIZE = (160, 32)


def _snap(taken_at: float, *, queues: tuple[QueueStats, ...] = (), groups: tuple[GroupLag, ...] = (),
          kind: str = "rabbitmq") -> BrokerSnapshot:
    overview = BrokerOverview("b", kind, None, None, None, 0, 0, 0, 0, None, None, None, None)
    return BrokerSnapshot("b", kind, taken_at, 0.1, overview, queues, groups=groups)


# ---- item 4: time to drain uses the net rate -------------------------------------------------------------------
def test_time_to_drain_uses_the_net_rate_and_says_when_it_grows() -> None:
    # the broker's own rates (RabbitMQ), read once an interval has passed: one snapshot gives no rate at all
    rows = {r.source: r for r in lag_rows(_snap(102.0, queues=(
        q("growing", 100, consumers=1, rates=(5.0, 2.0)),  # 5/s in, 2/s out
        q("catching-up", 913, consumers=3, rates=(20.0, 29.8)),  # 20/s in, 29.8/s out: ~93 s, not 31 s
        q("nobody", 10, consumers=0, rates=(0.0, 0.0)),
        q("empty", 0, consumers=1, rates=(3.0, 3.0)),
    )), _snap(100.0))}
    assert rows["growing"].trend == "growing" and rows["growing"].seconds_to_drain is None
    assert rows["growing"].net_rate == pytest.approx(-3.0)
    assert rows["catching-up"].trend == "draining"
    assert rows["catching-up"].seconds_to_drain == pytest.approx(913 / 9.8)
    assert rows["nobody"].trend == "stalled" and rows["nobody"].seconds_to_drain is None
    assert rows["empty"].trend == "idle" and rows["empty"].seconds_to_drain == 0.0
    once = {r.source: r for r in lag_rows(_snap(100.0, queues=(q("growing", 100, consumers=1, rates=(5.0, 2.0)),)))}
    assert once["growing"].net_rate is None and once["growing"].trend is None  # lag -i 0: no rate estimate


def test_group_lag_counts_arrivals_from_two_snapshots() -> None:
    before = GroupLag("b", "g", "t", lag=1011, members=1, consumed=1000)
    after = GroupLag("b", "g", "t", lag=913, members=1, consumed=1298)  # 10 s later: 29.8/s out, 20/s in
    (row,) = lag_rows(_snap(110.0, groups=(after,), kind="kafka"), _snap(100.0, groups=(before,), kind="kafka"))
    assert row.consume_rate == pytest.approx(29.8) and row.produce_rate == pytest.approx(20.0)
    assert row.seconds_to_drain == pytest.approx(913 / 9.8) and row.trend == "draining"
    growing = GroupLag("b", "g", "t", lag=1111, members=1, consumed=1100)  # 10/s out, 20/s in
    (row,) = lag_rows(_snap(110.0, groups=(growing,), kind="kafka"), _snap(100.0, groups=(before,), kind="kafka"))
    assert row.trend == "growing" and row.seconds_to_drain is None


# ---- the CLI and the console, side by side ---------------------------------------------------------------------
QUEUES = [q("embed.requests", 913, in_flight=0, consumers=3, rates=(20.0, 29.8)),
          q("embed.backlog", 100, consumers=1, rates=(5.0, 2.0)),
          q("rerank.requests", 40, consumers=2, rates=(None, None)),
          q("embed.other", 7, consumers=1, rates=(1.0, None)),
          q("orders", 0, consumers=1, rates=(0.0, 0.0), target="orders.dead"),  # dead letters → orders.dlq
          q("orders.dlq", 3, consumers=0, dlq=True),
          q("orders.dead", 1, consumers=0, dlq=True)]  # named like the exchange "orders" dead-letters to


@pytest.fixture
def side_by_side() -> Iterator[tuple[object, FakeBroker]]:
    broker = FakeBroker(queues=list(QUEUES))
    FAKE_BROKERS["shared"] = broker
    tui, _demo = demo_app("shared")
    label = next(iter(tui.probes))
    tui.probes[label] = FrozenProbe(tui.targets[label], broker=broker)
    yield tui, broker
    FAKE_BROKERS.pop("shared", None)


def _cli(*args: str) -> str:
    r = runner.invoke(cli, [*args, "-b", "memory://shared"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize(("pattern", "sort", "reverse"), [
    ("embed", "depth", False), ("EMB*", "publish_rate", False), ("*.requests", "deliver_rate", True),
    ("", "name", False), ("req", "consumers", True)])
async def test_filter_and_sort_agree(side_by_side: tuple[object, FakeBroker], pattern: str, sort: str,
                                     reverse: bool) -> None:
    tui, _broker = side_by_side
    args = ["queues", "--json", "--sort", sort, *(["--filter", pattern] if pattern else []),
            *(["--reverse"] if reverse else [])]
    from_cli = [row["name"] for row in json.loads(await asyncio.to_thread(_cli, *args))["queues"]]
    async with tui.run_test(size=SIZE) as pilot:  # type: ignore[attr-defined]
        await pilot.pause(0.2)
        screen = tui.screen  # type: ignore[attr-defined]
        assert isinstance(screen, OverviewScreen)
        screen.pattern, screen.sort_column, screen.sort_reverse = pattern, sort, reverse
        from_console = [entry[1].name for entry in screen.entries()]
    assert from_console == from_cli
    if sort in ("publish_rate", "deliver_rate"):  # a broker that gives no rate sorts last, either way
        assert from_cli[-1] == "rerank.requests" or "rerank.requests" not in from_cli


async def test_drain_trend_and_feeders_agree(side_by_side: tuple[object, FakeBroker]) -> None:
    tui, _broker = side_by_side
    first_json = {r["source"]: r for r in json.loads(await asyncio.to_thread(_cli, "lag", "--json", "-i", "0"))["lag"]}
    lag_json = {r["source"]: r for r in json.loads(await asyncio.to_thread(_cli, "lag", "--json", "-i", "0.01"))["lag"]}
    lag_text = await asyncio.to_thread(_cli, "lag", "-i", "0.01")
    lag_table = {line.split()[0]: line for line in lag_text.splitlines()[1:] if line.strip()}
    dlq_doc = json.loads(await asyncio.to_thread(_cli, "dlq", "list", "--json"))
    dlq_json = {d["queue"]["name"]: d["fed_by"] for d in dlq_doc["dead_letter_queues"]}
    async with tui.run_test(size=SIZE) as pilot:  # type: ignore[attr-defined]
        await pilot.pause(0.2)
        await pilot.press("l")
        await pilot.pause(0.1)
        assert isinstance(tui.screen, LagScreen)  # type: ignore[attr-defined]
        table = tui.screen.query_one(VirtualTable)  # type: ignore[attr-defined]
        titles = [c.key for c in table.columns]
        first_poll = {row[1]: dict(zip(titles, row, strict=True)) for row in table.rows}
        tui.poll(next(iter(tui.probes)))  # type: ignore[attr-defined]  # a second poll: rates are known now
        await pilot.pause(0.2)
        tui.screen.refresh_data()  # type: ignore[attr-defined]
        table = tui.screen.query_one(VirtualTable)  # type: ignore[attr-defined]
        console_lag = {row[1]: dict(zip(titles, row, strict=True)) for row in table.rows}
        await pilot.press("d")
        await pilot.pause(0.1)
        table = tui.screen.query_one(VirtualTable)  # type: ignore[attr-defined]
        console_dlq = {row[1]: [] if row[4] == "-" else row[4].split(", ") for row in table.rows}
    for source, row in first_json.items():  # lag -i 0 and the console's first poll: no rate estimate
        assert row["net_rate"] is None and first_poll[source]["trend"] == (row["trend"] or "?"), source
        assert first_poll[source]["eta"] in ("?", "0s", "never (stalled)"), first_poll[source]
    for source, row in lag_json.items():
        if row["rate_basis"] == "net drain":
            continue  # the console's fake has a frozen clock: no interval to see a backlog change over
        shown = console_lag[source]
        assert shown["trend"] == (row["trend"] or "?"), source
        assert f" {shown['eta']} " in f" {re.sub(r' +', ' ', lag_table[source])} ", (source, lag_table[source])
    assert lag_json["embed.requests"]["trend"] == "draining" and console_lag["embed.requests"]["eta"] == "93s"
    assert console_lag["embed.backlog"]["eta"] == "never (growing)"
    assert console_dlq == dlq_json
    assert dlq_json["orders.dead"] == [] and dlq_json["orders.dlq"] == ["orders"]


def test_one_poll_loop_and_backoff_for_watch_exporter_and_console() -> None:
    from console import cmd_exporter, cmd_queues, poller, runner
    from console.tui import app as tui_app

    assert cmd_queues.Poller is tui_app.Poller is cmd_exporter.Poller is poller.Poller
    assert poller.backoff is runner.backoff
    assert [runner.backoff(2.0, n) for n in range(7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert runner.backoff(90.0, 3) == 90.0  # never shorter than the interval itself
