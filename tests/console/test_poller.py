"""The one poll-and-backoff loop (console/poller.py): fakes for the loop's rules, one real broker at the end.

Tests wait on results (an asyncio.Queue fed by ``on_result``), never on a sleep; the one sleep here gives a paused
poller time in which it must NOT poll."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from console.poller import Poller, PollResult, check_probe_options, probe_options_for, resolve_targets
from console.runner import backoff
from probes import BrokerSnapshot, BrokerTarget, BrokerUnreachable, ConfigError, parse_broker_url
from probes.fake import FAKE_BROKERS, FakeBroker, FakeProbe
from probes.models import QueueStats
from tests.workers import unique

WAIT_S = 20.0  # a generous guard on every wait: a hang fails the test instead of stalling the suite


@pytest.fixture
def fake() -> Iterator[Callable[[], tuple[BrokerTarget, FakeBroker]]]:
    """Fresh ``memory://`` brokers for one test, removed afterwards."""
    names: list[str] = []

    def make() -> tuple[BrokerTarget, FakeBroker]:
        name = unique("poll")
        names.append(name)
        FAKE_BROKERS[name] = broker = FakeBroker(queues=[QueueStats(
            broker=f"memory://{name}", name="jobs", kind="queue", depth=3, in_flight=0, consumers=1,
            publish_rate=None, deliver_rate=None, dead_letter_target=None, is_dead_letter=False)])
        return parse_broker_url(f"memory://{name}"), broker

    yield make
    for name in names:
        FAKE_BROKERS.pop(name, None)


@dataclass
class Running:
    poller: Poller
    results: asyncio.Queue[PollResult]

    async def next(self, label: str | None = None) -> PollResult:
        """The next result (of ``label``, skipping others)."""
        while True:
            result = await asyncio.wait_for(self.results.get(), WAIT_S)
            if label is None or result.label == label:
                return result


@contextlib.asynccontextmanager
async def running(targets: list[BrokerTarget], *, interval: float, timeout: float = 5.0,
                  **kwargs: object) -> AsyncIterator[Running]:
    results: asyncio.Queue[PollResult] = asyncio.Queue()
    poller = Poller(targets, interval=interval, timeout=timeout, on_result=results.put_nowait, **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(poller.run())
    try:
        yield Running(poller, results)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class ScriptedProbe:
    """A probe whose polls follow a script: an exception to raise, ``"hang"``, or ``None`` for a snapshot."""

    target: BrokerTarget
    script: list[BaseException | str | None] = field(default_factory=list)
    closed: bool = False
    polls: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def snapshot(self) -> BrokerSnapshot:
        self.polls += 1
        self.started.set()
        step = self.script.pop(0) if self.script else None
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        return await FakeProbe(self.target, broker=FakeBroker()).snapshot()

    async def aclose(self) -> None:
        self.closed = True


async def test_polls_every_broker_and_delivers_snapshots(fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    (one, _), (two, _) = fake(), fake()
    async with running([one, two], interval=3600) as r:
        got = {(await r.next()).label for _ in range(2)}
    assert got == {one.label, two.label}


async def test_a_failing_broker_backs_off_per_runner_backoff(
        fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    target, broker = fake()
    broker.fail_with = BrokerUnreachable("cannot connect to 127.0.0.1:1")
    interval = 0.01
    async with running([target], interval=interval) as r:
        waits = []
        for _ in range(4):
            result = await r.next()
            assert result.snapshot is None and result.error == "cannot connect to 127.0.0.1:1"
            waits.append(result.next_poll_s)
        assert waits == [backoff(interval, n) for n in (1, 2, 3, 4)]
        assert waits == [0.02, 0.04, 0.08, 0.16]
        broker.fail_with = None
        ok = await r.next()
    assert ok.snapshot is not None and ok.error is None
    assert ok.next_poll_s == interval  # a good poll resets the backoff


async def test_probe_bug_and_timeout_are_results_and_the_loop_goes_on() -> None:
    target = BrokerTarget(url="memory://u:hunter2@scripted", kind="memory", scheme="memory",
                          hosts=(("scripted", 0),), username="u", password="hunter2", path="")
    probe = ScriptedProbe(target, [RuntimeError("bad state, password hunter2"), "hang", None])
    async with running([target], interval=0.01, timeout=0.2, probes={target.label: probe}) as r:
        bug, hung, ok = await r.next(), await r.next(), await r.next()
    assert bug.error is not None and bug.error.startswith("internal error: RuntimeError: bad state")
    assert "hunter2" not in bug.error and bug.snapshot is None
    assert hung.error == "no answer in 0.2 s"
    assert ok.snapshot is not None and ok.error is None
    assert probe.closed


async def test_on_result_raising_ends_run_with_that_error(fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    target, _ = fake()

    def boom(result: PollResult) -> None:
        raise LookupError("consumer bug")

    probe = ScriptedProbe(target)
    poller = Poller([target], interval=0.01, timeout=5, on_result=boom, probes={target.label: probe})
    with pytest.raises(LookupError, match="consumer bug"):
        await asyncio.wait_for(poller.run(), WAIT_S)
    assert probe.closed and not poller.running


async def test_pause_stops_polls_and_resume_polls_at_once(
        fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    target, broker = fake()
    async with running([target], interval=0.01) as r:
        await r.next()
        r.poller.paused = True
        await r.poller.poll_once(target.label)  # waits out a poll in flight when paused (it still lands)
        while not r.results.empty():
            r.results.get_nowait()
        polls = broker.polls
        r.poller.refresh_now()  # ignored while paused
        await asyncio.sleep(0.3)  # thirty intervals in which a paused poller must not poll
        assert broker.polls == polls and r.results.empty()
        r.poller.interval = 3600  # resuming must not wait for the interval
        r.poller.paused = False
        result = await r.next()
    assert result.snapshot is not None and broker.polls == polls + 1


async def test_refresh_now_polls_every_broker(fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    (one, b1), (two, b2) = fake(), fake()
    async with running([one, two], interval=3600) as r:
        await r.next()
        await r.next()
        r.poller.refresh_now()
        again = {(await r.next()).label for _ in range(2)}
    assert again == {one.label, two.label} and b1.polls == b2.polls == 2


async def test_a_shorter_interval_wakes_sleeping_loops(fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    target, broker = fake()
    async with running([target], interval=3600) as r:
        first = await r.next()
        assert first.next_poll_s == 3600
        r.poller.interval = 0.01  # an hour's sleep is cut short
        second = await r.next()
    assert second.next_poll_s == 0.01 and broker.polls >= 2


async def test_add_while_running(fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    (one, _), (two, _) = fake(), fake()
    async with running([one], interval=3600) as r:
        await r.next(one.label)
        assert r.poller.add(two) == two.label
        assert r.poller.add(two) == two.label  # twice: still one loop
        joined = await r.next(two.label)
        assert r.poller.labels == [one.label, two.label]
    assert joined.snapshot is not None and joined.snapshot.broker == two.label


async def test_cancelling_run_closes_probes_even_mid_poll() -> None:
    target = parse_broker_url("memory://hung")
    probe = ScriptedProbe(target, ["hang"])
    poller = Poller([target], interval=1, timeout=3600, on_result=lambda r: None, probes={target.label: probe})
    task = asyncio.create_task(poller.run())
    await asyncio.wait_for(probe.started.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert probe.closed and not poller.running


async def test_polls_of_one_broker_never_overlap() -> None:
    target = parse_broker_url("memory://overlap")
    in_flight = 0
    most = 0

    class Slow(ScriptedProbe):
        async def snapshot(self) -> BrokerSnapshot:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return await super().snapshot()

    probe = Slow(target)
    async with running([target], interval=0.01, probes={target.label: probe}) as r:
        await asyncio.gather(*(r.poller.poll_once(target.label) for _ in range(5)))
        r.poller.refresh_now()
        await r.next()
    assert most == 1


def test_probe_options_are_checked_and_given_to_the_probes_that_take_them() -> None:
    check_probe_options({"scan_calls": 10, "timeout": 3.0})
    with pytest.raises(ConfigError, match="scan_cals"):
        check_probe_options({"scan_cals": 10})
    assert probe_options_for("redis", {"scan_calls": 10, "timeout": 3.0}) == {"scan_calls": 10, "timeout": 3.0}
    assert probe_options_for("kafka", {"scan_calls": 10, "timeout": 3.0}) == {"timeout": 3.0}
    assert probe_options_for("memory", {"scan_calls": 10}) == {}


def test_resolve_targets_refuses_the_same_broker_twice() -> None:
    assert [t.label for t in resolve_targets(["memory://a", "memory://b"])] == ["memory://a", "memory://b"]
    with pytest.raises(ConfigError, match="twice"):
        resolve_targets(["memory://a", "memory://a"])


@pytest.mark.redis
async def test_real_redis_stream_is_seen_and_its_scan_budget_applies(redis_url: str) -> None:
    import redis.asyncio as aioredis

    stream = unique("poller")
    client = aioredis.from_url(redis_url)
    try:
        await client.xadd(stream, {"n": "1"})
        await client.xgroup_create(stream, "workers", id="0")
        target = parse_broker_url(redis_url)
        async with running([target], interval=3600, timeout=30,
                           probe_options={"scan_calls": 50, "scan_count": 500}) as r:
            result = await r.next()
            probe = r.poller._probes[target.label]
            assert getattr(probe, "scan", None) == (50, 500, 2.0)
        assert result.error is None and result.snapshot is not None
        row = result.snapshot.queue(stream)
        assert row is not None and row.kind == "stream"
        assert any(g.source == stream and g.group == "workers" and g.lag == 1 for g in result.snapshot.groups)
        assert result.duration_s is not None and result.duration_s >= 0 and result.arrived <= time.perf_counter()
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_a_probe_that_cannot_be_built_stops_run_before_any_poll(
        fake: Callable[[], tuple[BrokerTarget, FakeBroker]]) -> None:
    good, broker = fake()
    bad = dataclasses.replace(parse_broker_url("memory://nowhere"), kind="nope")  # type: ignore[arg-type]
    poller = Poller([good, bad], interval=1, timeout=1, on_result=lambda r: None)
    with pytest.raises(ConfigError, match="no probe for nope"):
        await asyncio.wait_for(poller.run(), WAIT_S)
    assert broker.polls == 0
    async with running([good], interval=3600) as r:
        await r.next()
        with pytest.raises(ConfigError, match="no probe for nope"):
            r.poller.add(bad)
        assert r.poller.labels == [good.label]


def test_queues_watch_json_reports_each_brokers_polls_through_the_poller() -> None:
    """``qdeck queues --watch --json`` on the poller: a broker that fails says so on its own line (with its backoff)
    while the other's snapshots keep coming."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "queues", "--watch", "0.5", "--json",
                             "-b", "memory://watched", "-b", "redis://:sekret@127.0.0.1:1/0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    docs: list[dict[str, object]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            docs.append(json.loads(line))
            errors = [d for d in docs if "error" in d]
            if len(errors) >= 2 and any("snapshots" in d for d in docs):
                break
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    errors = [d for d in docs if "error" in d]
    assert [d["retry_in_s"] for d in errors[:2]] == [backoff(0.5, 1), backoff(0.5, 2)]
    assert all(d["broker"] == "redis://:***@127.0.0.1:1/0" for d in errors)
    assert not any("sekret" in json.dumps(d) for d in docs) and "sekret" not in err
    snap = next(d for d in docs if "snapshots" in d)
    assert [s["broker"] for s in snap["snapshots"]] == ["memory://watched"]  # type: ignore[index, union-attr]
