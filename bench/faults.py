"""Faults under load: a worker killed, a worker stopped, the broker restarted, replies the broker refuses.

    .venv/bin/python -m bench.faults [--brokers redis,rabbitmq,kafka] [--rate 200] [--duration 12] [--timeout 10]
                                     [--model echo] [--fault-at 0.33] [--outage 1.0] [--bad 20]

Every broker here is PRIVATE to the run (DESIGN rule 16): a redis-server with an append-only file, a second
RabbitMQ node (``qdeckfaults@localhost``, its own ports, mnesia and log dirs, no plugins) and a noida-db (Kafka
protocol), each on its own port and tmp dir, stopped and killed by PID at the end (and on Ctrl-C). The shared
brokers on 5672/6379 are never touched.

For each broker, four scenarios, each on a fresh queue: ``qdeck load run --confirm --persistent`` (both RabbitMQ's:
publisher confirms counted, and requests that survive its restart) at RATE requests/s for DURATION s with a
TIMEOUT s reply timeout against a ``qdeck worker`` (``--model echo --max-wait-ms 2`` by default), and at
FAULT-AT × DURATION into the run:

1. ``sigkill``  — the worker is killed with SIGKILL; a replacement worker is started at once;
2. ``sigterm``  — the worker gets SIGTERM (it finishes its batches and acks); a replacement is started at once;
3. ``restart``  — the broker restarts: Redis is killed -9 and restarted on the same port and data dir after OUTAGE s;
   RabbitMQ's node runs ``rabbitmqctl stop_app`` then, OUTAGE s later, ``start_app``; noida-db gets SIGTERM and is
   started again on the same port and data dir after OUTAGE s;
4. ``bad-reply`` — a side client sends BAD requests whose reply destination the broker refuses (Redis: a key holding
   a string, so XADD fails with WRONGTYPE; RabbitMQ: a 300-character reply_to, over the 255-byte routing-key limit;
   Kafka: the topic name ``bad/topic!``); they must end up in the dead-letter destination.

One row per scenario: the load run's counts (sent, replied, errors, timeouts, late, duplicates, unsent), ``queued``
and ``dlq`` (see below), ``lost``, the exit codes (the load run's, then each worker's: the first one's, then the
replacement's; -9 is a SIGKILL) and the time to recover.

Definitions:

- ``queued``: the load run's requests still waiting at the end, counted once the load run has exited and the
  workers are stopped (so what a worker held unacknowledged is counted too; the count when the load run exited is
  printed as a note where it differs): Redis — the worker group's pending entries plus the entries
  after its last-delivered id; RabbitMQ — the request queue's message count (a passive declare); Kafka — the
  group ``qdeck-workers.<topic>``'s backlog (high watermark − committed offset, summed over partitions).
- ``dlq``: the load run's requests in the dead-letter destination (``<queue>:dlq`` on Redis, ``<queue>.dlq`` on
  RabbitMQ and Kafka), told apart from the side client's by the run id in each dead letter's body; the side
  client's are shown as ``bad→dlq`` (it must be BAD of BAD).
- ``lost = (timeouts − late) − queued − dlq``, at least 0: requests that got no reply in time and are neither still
  queued nor dead-lettered, i.e. requests the system dropped. It must be 0; so must BAD − bad→dlq.
- Redis rows also note the request stream's length (the worker never trims it: every request that reached Redis)
  and any entry still pending, with its consumer, to tell a request that never reached the broker from one left
  pending. A failing scenario's run files and worker logs are kept under ``--keep``.
- ``recover``: from the fault to the start of the first 1 s interval of the run's ``latency.hlog`` that starts after
  the fault and holds replies (faster than the timeout) for at least 80 % of RATE; "-" when none does. Its
  resolution is the 1 s interval. A broker restart's row also shows the generator's outage (its ``gaps``).

Exits 1 (``bench/_targets.py``) when any lost figure is not 0, except where a known limitation of a test broker
applies (printed with the row, not hidden): noida-db never expires a dead group member, so after the Kafka SIGKILL
the dead worker keeps its partitions and the requests time out; real Kafka reassigns them after
``session.timeout.ms`` (45 s by default), which is beyond this run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench._private_brokers import PrivateKafka, PrivateRabbit, PrivateRedis
from bench._targets import Targets
from console.worker_process import spawn_worker, stop_worker
from loadgen.envelope import Malformed, decode_request

SCENARIOS = ("sigkill", "sigterm", "restart", "bad-reply")
BAD_REPLY_TO = {"redis": "qdeck-faults-not-a-stream", "rabbitmq": "r" * 300, "kafka": "bad/topic!"}
KAFKA_SIGKILL_NOTE = ("known test-broker limitation: noida-db never expires the dead member, its partitions stay "
                      "assigned; real Kafka reassigns after session.timeout.ms (45 s), beyond this run")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_")} | {
    "QDECK_CONFIG": "/nonexistent/qdeck-brokers.toml"}


class Broker(Protocol):
    url: str

    def close(self) -> None: ...


@dataclass
class Row:
    broker: str
    scenario: str
    counts: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    dlq: int = 0
    bad_dlq: int | None = None
    lost: int = 0
    codes: list[int | None] = field(default_factory=list)
    recover_s: float | None = None
    gap_s: float | None = None
    notes: list[str] = field(default_factory=list)
    known_limitation: bool = False


# ---- processes -------------------------------------------------------------------------------------------------
class Procs:
    """Every child this bench starts (workers, load runs), killed on the way out, whatever the way out."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[Any]] = []

    def add(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.children.append(proc)
        return proc

    def kill_all(self) -> None:
        for p in self.children:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)


PROCS = Procs()


def start_worker(url: str, queue: str, model: str, log: Path) -> subprocess.Popen[bytes]:
    proc = spawn_worker(["-b", url, "-q", queue, "--model", model, "--max-wait-ms", "2", "--metrics-interval", "600"],
                        log, env=ENV, timeout=90)
    PROCS.add(proc)
    return proc


def start_load(url: str, queue: str, args: argparse.Namespace, out: Path) -> subprocess.Popen[str]:
    # --confirm: RabbitMQ's publisher confirms, so that requests lost in a dropped connection are told apart;
    # --persistent: RabbitMQ keeps only persistent messages across its restart (requests, and replies mirror them)
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "load", "run", "-b", url, "-q", queue, "--rate",
                             f"{args.rate:g}", "--duration", f"{args.duration:g}s", "--timeout", f"{args.timeout:g}s",
                             "--out", str(out), "--quiet", "--confirm", "--persistent"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, stdin=subprocess.DEVNULL)
    PROCS.add(proc)
    return proc


# ---- what is left on the broker ----------------------------------------------------------------------------------
def _runs_of(bodies: list[bytes]) -> dict[str, int]:
    runs: dict[str, int] = {}
    for body in bodies:
        req = decode_request(body)
        key = "?" if isinstance(req, Malformed) else req.run
        runs[key] = runs.get(key, 0) + 1
    return runs


def redis_left(url: str, queue: str) -> int:
    import redis

    with redis.Redis.from_url(url) as r:
        if not r.exists(queue):
            return 0
        groups = [g for g in r.xinfo_groups(queue) if g["name"] in (b"qdeck-workers", "qdeck-workers")]
        if not groups:
            return int(r.xlen(queue))
        g = groups[0]
        last = g["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        after = len(r.xrange(queue, min=f"({last}", max="+"))
        return int(g["pending"]) + after


def redis_dlq(url: str, queue: str) -> dict[str, int]:
    import redis

    with redis.Redis.from_url(url) as r:
        return _runs_of([fields.get(b"body", b"") for _id, fields in r.xrange(f"{queue}:dlq", "-", "+")])


def rabbit_left(url: str, queue: str) -> int:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        try:
            return int(ch.queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:  # the queue is gone
            return 0
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def rabbit_dlq(url: str, queue: str) -> dict[str, int]:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(url))
    bodies: list[bytes] = []
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(f"{queue}.dlq", passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return {}
        while True:  # private broker, throwaway queue: take them (no requeue, no redelivery marks)
            method, _props, body = ch.basic_get(f"{queue}.dlq", auto_ack=True)
            if method is None:
                break
            bodies.append(body)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return _runs_of(bodies)


def _kafka_partitions(bootstrap: str, topic: str) -> list[int]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    return [] if t is None or t.error is not None else sorted(t.partitions)


def kafka_left(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    parts = _kafka_partitions(bootstrap, topic)
    if not parts:
        return 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"qdeck-workers.{topic}", "enable.auto.commit": False,
                  "log_level": 0})
    try:
        left = 0
        committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        for tp in committed:
            low, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            done = tp.offset if tp.offset >= 0 else low
            left += max(0, high - done)
        return left
    finally:
        c.close()


def kafka_dlq(bootstrap: str, topic: str) -> dict[str, int]:
    from confluent_kafka import Consumer, TopicPartition

    dlq = f"{topic}.dlq"
    parts = _kafka_partitions(bootstrap, dlq)
    if not parts:
        return {}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"qdeck-faults-count-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "log_level": 0, "receive.message.max.bytes": 200_000_000})
    bodies: list[bytes] = []
    try:
        ends = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(dlq, p), timeout=10)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(dlq, p, 0) for p in ends])
        done: dict[int, int] = {p: 0 for p in ends}
        deadline = time.monotonic() + 30
        while any(done[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            bodies.append(msg.value() or b"")
            part, offset = msg.partition(), msg.offset()
            if part is not None and offset is not None:
                done[part] = offset + 1
    finally:
        c.close()
    return _runs_of(bodies)


# ---- one scenario --------------------------------------------------------------------------------------------------
def recovery(out: Path, fault_wall: float, rate: float, timeout_s: float) -> float | None:
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    from loadgen.results.stages import HIGHEST_US, LOWEST_US, SIGFIGS

    path = out / "latency.hlog"
    if not path.exists():
        return None
    reader = HistogramLogReader(str(path), HdrHistogram(LOWEST_US, HIGHEST_US, SIGFIGS))
    limit_us = int(timeout_s * 1e6)
    while (hist := reader.get_next_interval_histogram()) is not None:
        start = float(hist.get_start_time_stamp()) / 1000
        if start < fault_wall:
            continue
        top = hist.get_counts_array_index(limit_us)
        fast = sum(hist.get_count_at_index(i) for i in range(min(top, hist.counts_len)))
        if fast >= 0.8 * rate:
            return float(start - fault_wall)
    return None


def log_lines(path: Path, *needles: str) -> list[str]:
    if not path.exists():
        return []
    return [line.strip()[:200] for line in path.read_text(errors="replace").splitlines()
            if any(n in line for n in needles)]


async def _send_bad(url: str, queue: str, reply_to: str, n: int) -> str:
    from tests.workers import open_client

    client = await open_client(url, queue)
    try:
        await client.send_to(reply_to, [f"bad {i}" for i in range(n)], start_seq=0)
    finally:
        await client.transport.aclose()
    return client.run


def run_scenario(kind: str, broker: Any, scenario: str, args: argparse.Namespace, tmp: Path) -> Row:
    row = Row(kind, scenario)
    queue = f"qdeck-faults-{scenario}-{uuid.uuid4().hex[:6]}"
    out = tmp / f"{kind}-{scenario}"
    logs = [tmp / f"{kind}-{scenario}-worker1.log", tmp / f"{kind}-{scenario}-worker2.log"]
    w1 = start_worker(broker.url, queue, args.model, logs[0])
    workers = [w1]
    bad_run: str | None = None
    if scenario == "bad-reply" and kind == "redis":
        import redis

        with redis.Redis.from_url(broker.url) as r:
            r.set(BAD_REPLY_TO["redis"], "a string, not a stream")
    load = start_load(broker.url, queue, args, out)
    time.sleep(args.fault_at * args.duration)
    fault = time.time()
    if scenario == "sigkill":
        w1.kill()
        workers.append(start_worker(broker.url, queue, args.model, logs[1]))
    elif scenario == "sigterm":
        w1.send_signal(signal.SIGTERM)
        workers.append(start_worker(broker.url, queue, args.model, logs[1]))
    elif scenario == "restart":
        restart_broker(kind, broker, args.outage, row)
    elif scenario == "bad-reply":
        bad_run = asyncio.run(_send_bad(broker.url, queue, BAD_REPLY_TO[kind], args.bad))
    try:
        stdout, stderr = load.communicate(timeout=args.duration + args.timeout + 180)
    except subprocess.TimeoutExpired:
        load.kill()
        stdout, stderr = load.communicate()
        row.notes.append("the load run did not finish; killed")
    left = [count_left(kind, broker, queue)]
    row.codes = [load.returncode]
    for w in workers:
        row.codes.append(stop_worker(w, grace=30))
    left.append(count_left(kind, broker, queue))
    row.queued = left[1]  # with the workers stopped: what they held unacknowledged is back in the queue/backlog
    if left[0] != left[1]:
        row.notes.append(f"queued {left[0]} when the load run ended, {left[1]} once the workers stopped")
    dlq = count_dlq(kind, broker, queue)
    summary_path = out / "summary.json"
    if not summary_path.exists():
        row.notes.append(f"no summary.json: {(stderr or stdout).strip()[-300:]}")
        row.lost = -1
        return row
    s = json.loads(summary_path.read_text())
    row.counts = s["counts"]
    run_id = s["run_id"]
    row.dlq = dlq.get(run_id, 0)
    if bad_run is not None:
        row.bad_dlq = dlq.get(bad_run, 0)
    others = sum(v for k, v in dlq.items() if k not in (run_id, bad_run))
    if others:
        row.notes.append(f"{others} dead letters of no known run")
    c = row.counts
    row.lost = max(0, (c["timeouts"] - c["late"]) - row.queued - row.dlq)
    row.recover_s = recovery(out, fault, args.rate, args.timeout)
    gaps = s.get("gaps") or []
    if gaps:
        row.gap_s = sum((g["to_s"] if g["to_s"] is not None else args.duration) - g["from_s"] for g in gaps)
        row.notes.append(f"generator outage {row.gap_s:.1f} s, {sum(g['unsent'] for g in gaps)} unsent, "
                         f"reconnects {s['generator'].get('reconnects')}")
    if kind == "kafka" and scenario == "sigkill":
        row.known_limitation = True
        row.notes.append(KAFKA_SIGKILL_NOTE)
    if kind == "redis":  # the worker never trims the request stream: its length is what reached Redis
        import redis

        with redis.Redis.from_url(broker.url) as r:
            row.notes.append(f"the request stream holds {r.xlen(queue)} entries: the requests that reached Redis")
            for g in r.xinfo_groups(queue) if r.exists(queue) else []:
                if g["pending"]:
                    summary = r.xpending(queue, g["name"])
                    row.notes.append(f"group {g['name']!r}: {g['pending']} pending, last delivered "
                                     f"{g['last-delivered-id']!r}, by consumer {summary.get('consumers')}")
    took = [int(m.group(1)) for path in logs[:len(workers)] for line in log_lines(path, "stopped (")
            if (m := re.search(r"\bitems (\d+)", line))]
    row.notes.append(f"requests the workers took (stopped ones' counts, redeliveries included): {sum(took)}"
                     + (" + the killed worker's, unknown" if scenario == "sigkill" else ""))
    for i, path in enumerate(logs[:len(workers)], start=1):
        for line in log_lines(path, "lost the broker", "the broker is back", "Traceback", "dead-letter",
                              "neither replied", "could not", "rror"):
            if "items/s" not in line or scenario == "bad-reply":  # metric lines only where dead letters matter
                row.notes.append(f"worker{i}: {line}")
    if row.lost or (bad_run is not None and row.bad_dlq != args.bad):
        keep = Path(args.keep) / f"{kind}-{scenario}"
        shutil.copytree(out, keep, dirs_exist_ok=True)
        for path in logs[:len(workers)]:
            shutil.copy(path, keep)
        row.notes.append(f"run files and worker logs kept in {keep}")
    return row


def count_left(kind: str, broker: Any, queue: str) -> int:
    try:
        if kind == "redis":
            return redis_left(broker.url, queue)
        if kind == "rabbitmq":
            return rabbit_left(broker.url, queue)
        return kafka_left(broker.bootstrap, queue)
    except Exception as exc:  # a count that failed is reported, not guessed
        print(f"  ({kind}: counting {queue!r} failed: {exc})", flush=True)
        return 0


def count_dlq(kind: str, broker: Any, queue: str) -> dict[str, int]:
    if kind == "redis":
        return redis_dlq(broker.url, queue)
    if kind == "rabbitmq":
        return rabbit_dlq(broker.url, queue)
    return kafka_dlq(broker.bootstrap, queue)


def restart_broker(kind: str, broker: Any, outage: float, row: Row) -> None:
    t0 = time.monotonic()
    if kind == "redis":
        broker.kill()  # kill -9 by PID
        time.sleep(outage)
        broker.start()  # same port, same data dir: the AOF brings the stream and its group back
        how = "kill -9, restart on the same port and AOF"
    elif kind == "rabbitmq":
        problem = broker.stop_app()
        time.sleep(outage)
        problem = problem or broker.start_app()
        broker.wait_ready()
        how = "rabbitmqctl stop_app / start_app"
        if problem:
            row.notes.append(f"rabbitmqctl: {problem}")
    else:
        broker.stop()
        time.sleep(outage)
        broker.start()
        how = "SIGTERM, restart on the same port and data dir"
    row.notes.append(f"broker {how}: back after {time.monotonic() - t0:.1f} s")


# ---- brokers ---------------------------------------------------------------------------------------------------
class KafkaBroker(PrivateKafka):
    def stop(self) -> None:
        from bench._private_brokers import _kill_group

        _kill_group(self.proc, signal.SIGTERM)


@contextlib.contextmanager
def background_rabbit(needed: bool) -> Iterator[Callable[[], PrivateRabbit]]:
    """Start the private RabbitMQ node at once, in a thread (it boots while the other brokers' scenarios run)."""
    if not needed:
        def none() -> PrivateRabbit:
            raise RuntimeError("not started")
        yield none
        return
    node = PrivateRabbit()
    failure: list[BaseException] = []

    def boot() -> None:
        try:
            node.start()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=boot, name="qdeck-faults-rabbit", daemon=True)
    thread.start()

    def ready() -> PrivateRabbit:
        thread.join()
        if failure:
            raise RuntimeError(f"the private RabbitMQ node did not start: {failure[0]} (log: {node.log})")
        return node

    try:
        yield ready
    finally:
        node.close()


# ---- report ------------------------------------------------------------------------------------------------------
HEAD = (f"{'broker':<9}{'scenario':<10}{'sent':>6}{'replied':>8}{'errors':>7}{'timeouts':>9}{'late':>5}{'dups':>5}"
        f"{'unsent':>7}{'queued':>7}{'dlq':>5}{'bad→dlq':>8}{'lost':>5}  {'exit codes':<14}{'recover':>8}")


def fmt_row(r: Row) -> str:
    c = r.counts
    codes = "/".join("-" if x is None else str(x) for x in r.codes)
    rec = "-" if r.recover_s is None else f"{r.recover_s:.1f} s"
    bad = "" if r.bad_dlq is None else str(r.bad_dlq)
    return (f"{r.broker:<9}{r.scenario:<10}{c.get('sent', 0):>6}{c.get('replied', 0):>8}{c.get('errors', 0):>7}"
            f"{c.get('timeouts', 0):>9}{c.get('late', 0):>5}{c.get('duplicates', 0):>5}{c.get('unsent', 0):>7}"
            f"{r.queued:>7}{r.dlq:>5}{bad:>8}{r.lost:>5}  {codes:<14}{rec:>8}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="redis,kafka,rabbitmq")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=12.0, help="seconds per run")
    ap.add_argument("--timeout", type=float, default=10.0, help="reply timeout, seconds")
    ap.add_argument("--model", default="echo", help="the worker's --model (echo, synthetic:base_ms=2, ...)")
    ap.add_argument("--fault-at", type=float, default=1 / 3, help="when the fault comes, as a share of the run")
    ap.add_argument("--outage", type=float, default=1.0, help="seconds a restarted broker stays down")
    ap.add_argument("--bad", type=int, default=20, help="requests with a refused reply destination")
    ap.add_argument("--keep", default="/tmp/qdeck-faults-kept", help="where a failing scenario's files are kept")
    args = ap.parse_args()
    kinds = [k for k in args.brokers.split(",") if k]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [k for k in kinds if k not in BAD_REPLY_TO] + [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown broker or scenario: {', '.join(unknown)}")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    targets = Targets("bench.faults")
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="qdeck-faults-run-"))
    print(f"faults: {args.rate:g} requests/s for {args.duration:g} s, timeout {args.timeout:g} s, worker "
          f"--model {args.model}, fault at {args.fault_at * args.duration:.1f} s; private brokers", flush=True)
    try:
        with background_rabbit("rabbitmq" in kinds) as rabbit:
            for kind in sorted(kinds, key=lambda k: k == "rabbitmq"):  # RabbitMQ last: its node boots meanwhile
                broker: Any
                if kind == "redis":
                    broker = PrivateRedis()
                elif kind == "kafka":
                    broker = KafkaBroker()
                else:
                    broker = rabbit()
                try:
                    if kind != "rabbitmq":
                        broker.start()
                    print(f"\n{kind}: private broker at {broker.url}", flush=True)
                    print(HEAD, flush=True)
                    for scenario in scenarios:
                        row = run_scenario(kind, broker, scenario, args, tmp)
                        rows.append(row)
                        print(fmt_row(row), flush=True)
                        for note in row.notes:
                            print(f"{'':19}· {note}", flush=True)
                finally:
                    if kind != "rabbitmq":
                        broker.close()
    finally:
        PROCS.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{HEAD}")
    for row in rows:
        print(fmt_row(row) + ("  (known limitation)" if row.known_limitation else ""))
    for row in rows:
        what = f"{row.broker} {row.scenario}: lost"
        if row.known_limitation:
            print(f"not a target: {what} = {row.lost} — {KAFKA_SIGKILL_NOTE}")
            continue
        targets.at_most(what, row.lost, 0, "d")
        if row.bad_dlq is not None:
            targets.at_least(f"{row.broker} {row.scenario}: refused replies dead-lettered", row.bad_dlq, args.bad, "d")
    targets.done()


if __name__ == "__main__":
    main()
