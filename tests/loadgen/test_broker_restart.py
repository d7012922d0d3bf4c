"""A load run through a broker restart (issue 15, item 2, the generator's side): the run keeps its schedule, what
fell due while the broker was away is unsent, the outage is a gap in the summary, and sending resumes once the
broker is back. Each test restarts a private broker of its own, by PID; the shared test brokers are never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console import embedded_redis

pytestmark = pytest.mark.slow


def _start_run(url: str, out: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")}
    env["QDECK_CONFIG"] = "/nonexistent/qdeck-brokers.toml"
    return subprocess.Popen([sys.executable, "-m", "console.cli", "load", "run", "-b", url, "-q", "restart-q",
                             "--out", str(out), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL)


def test_load_run_survives_a_redis_restart(tmp_path: Path) -> None:
    port = embedded_redis.free_port()
    redis_proc, url = embedded_redis.start(port)
    out = tmp_path / "run"
    run = _start_run(url, out, "--rate", "100", "--duration", "5s", "--timeout", "0.5s")
    try:
        time.sleep(1.5)
        redis_proc.kill()  # kill -9 by PID: the broker is gone, connections drop
        redis_proc.wait()
        time.sleep(1.0)
        redis_proc, _ = embedded_redis.start(port)  # back, on the same port, empty
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        embedded_redis.stop(redis_proc)
    assert run.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr
    s = json.loads((out / "summary.json").read_text())
    c = s["counts"]
    assert c["sent"] == c["replied"] + c["errors"] + c["timeouts"]
    assert c["sent"] + c["unsent"] == c["intended"] == 500
    assert s["generator"]["reconnects"] == 1
    [gap] = s["gaps"]
    assert gap["to_s"] is not None and gap["to_s"] > gap["from_s"]
    assert gap["unsent"] == c["unsent"] > 0
    assert c["sent"] > 250  # sending resumed after the restart (about 150 went out before it)
    assert any(note.startswith("broker outage from") for note in s["notes"])


@pytest.mark.rabbitmq
def test_load_run_survives_its_rabbitmq_connection_being_closed(vhost, tmp_path: Path) -> None:
    """An admin closes the load generator's connections (as a node shutdown does: 320 CONNECTION_FORCED): the run
    reconnects, re-declares its queues and goes on; the outage is a gap. Only this test's vhost is touched."""
    from tests.rabbit import wait_sync

    out = tmp_path / "run"
    run = _start_run(vhost.url, out, "--rate", "100", "--duration", "10s", "--timeout", "0.5s")
    try:
        def ours() -> list[str]:
            conns = vhost.api.get("/connections").json()
            return [c["name"] for c in conns if c.get("vhost") == vhost.name]

        wait_sync(lambda: bool(ours()), 8, "the load generator's connection")  # the API lists it within ~5 s
        for name in ours():
            vhost.api.delete(f"/connections/{name}", headers={"X-Reason": "closed by the qdeck test"})
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stdout + stderr
    s = json.loads((out / "summary.json").read_text())
    c = s["counts"]
    assert c["sent"] == c["replied"] + c["errors"] + c["timeouts"]
    assert c["sent"] + c["unsent"] == c["intended"] == 1000
    assert s["generator"]["reconnects"] == 1
    for gap in s["gaps"]:  # sends that fell due while it reconnected (none if it was back before the next one)
        assert gap["to_s"] is not None and "the broker closed the connection (320 CONNECTION_FORCED" in gap["reason"]
    assert sum(g["unsent"] for g in s["gaps"]) == c["unsent"] < 100
    # What was sent after the reconnect reached the queue; a request or two written as the connection closed is lost
    # with it (a timeout, as counted).
    assert c["sent"] - 5 <= vhost.exact_depth("restart-q") <= c["sent"]


async def test_requests_redis_never_confirmed_when_it_dropped_end_as_errors_at_once() -> None:
    """XADDs written just before the connection died and never answered may never have reached Redis: the run
    ends the newest that many at once as `not_confirmed` errors instead of waiting for their timeout (a fault
    bench counted them as lost)."""
    from loadgen.run.engine import Engine, _Pending
    from loadgen.run.schedules import Constant
    from loadgen.run.spec import RunSpec

    class Transport:
        reply_to = "r"

        def take_unconfirmed(self) -> int:
            n, self.n = getattr(self, "n", 2), 0
            return n

    engine = Engine(Transport(), RunSpec(queue="q", schedule=Constant(10), duration_s=1))  # type: ignore[arg-type]
    for seq in (1, 2, 3, 4):
        engine.pending[seq] = _Pending(0, 0, warmup=False)
    engine._unconfirmed()
    assert sorted(engine.pending) == [1, 2] and engine.recorder.errors == {"not_confirmed": 2}
    assert 3 in engine.timed_out and 4 in engine.timed_out  # a reply for one all the same is late, not a duplicate
    engine._unconfirmed()
    assert sorted(engine.pending) == [1, 2]
