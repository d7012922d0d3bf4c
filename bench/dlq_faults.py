"""Kill -9 a redrive, again and again, and resume it: nothing lost, duplicates no more than were in flight.

    .venv/bin/python -m bench.dlq_faults [--brokers redis,rabbitmq,kafka] [--messages 10000] [--kills 5]
                                         [--rate 4000]

Per broker: a dead-letter queue is filled with ``--messages`` dead letters whose provenance names an origin queue
(the worker's own dead-letter shape on Redis and Kafka, real x-death dead letters on RabbitMQ). Then the real
command, ``qdeck dlq redrive DLQ --yes --force --rate N/s`` (a profile with ``allow_write = true``; its own state
directory for the journal), is started and SIGKILLed ``--kills`` times, each time once the origin has received
another 1/(kills+1) of the messages, and run a last time to the end. After each kill the journal says how many
messages were in flight (intended, not yet confirmed): only those may arrive twice.

Checked: every message at the origin at least once (0 lost), the dead-letter queue empty (Kafka: qdeck's group at
the end), duplicates <= in flight, and the last run's ledger adds up. The shared brokers are used with uniquely
named queues (only the qdeck process is killed, never a broker); Kafka gets a private noida-db. Exits 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from bench._targets import Targets


class Case(Protocol):
    url: str
    dlq: str

    def setup(self, n: int) -> None: ...
    def delivered(self) -> int: ...
    def ids_at_origin(self) -> Counter[str]: ...
    def left_in_dlq(self) -> int: ...
    def cleanup(self) -> None: ...


@dataclasses.dataclass
class Row:
    broker: str
    messages: int
    kills: int = 0
    in_flight: int = 0
    unique: int = 0
    duplicates: int = 0
    left: int = 0
    ledger: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return self.messages - self.unique


# ---- the brokers ----------------------------------------------------------------------------------------------------


class RedisCase:
    def __init__(self, url: str) -> None:
        import redis

        from probes.urls import parse_broker_url

        self.url = url
        t = parse_broker_url(url)
        self.client = redis.Redis(host=t.host, port=t.port, db=int(t.path or 0), password=t.password,
                                  username=t.username)
        prefix = f"qdeck-bench-faults-{uuid.uuid4().hex[:8]}"
        self.origin, self.dlq = f"{prefix}:requests", f"{prefix}:requests:dlq"

    def setup(self, n: int) -> None:
        from bench.dlq_redis import fill

        self.client.xgroup_create(self.origin, "workers", id="$", mkstream=True)
        fill(self.client, self.dlq, self.origin, n)

    def delivered(self) -> int:
        return int(self.client.xlen(self.origin))

    def ids_at_origin(self) -> Counter[str]:
        ids: Counter[str] = Counter()
        for _eid, fields in self.client.xrange(self.origin):
            ids[str(json.loads(fields[b"body"])["request"])] += 1
        return ids

    def left_in_dlq(self) -> int:
        return int(self.client.xlen(self.dlq))

    def cleanup(self) -> None:
        self.client.delete(self.origin, self.dlq)


class KafkaCase:
    PARTITIONS = 3

    def __init__(self, url: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.url = url
        self.bootstrap = url.removeprefix("kafka://").split("?")[0]
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        name = f"qdeck-bench-faults-{uuid.uuid4().hex[:8]}"
        self.origin, self.dlq = name, f"{name}.DLT"

    def setup(self, n: int) -> None:
        from confluent_kafka.admin import NewTopic

        from bench.dlq_kafka import fill

        for f in self.admin.create_topics([NewTopic(t, self.PARTITIONS, 1) for t in (self.origin, self.dlq)]).values():
            f.result(30)
        fill(self.bootstrap, self.dlq, self.origin, n, 200)

    def _highs(self, topic: str) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "qdeck-bench-peek", "log_level": 0})
        try:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in range(self.PARTITIONS)}
        finally:
            c.close()

    def delivered(self) -> int:
        return sum(self._highs(self.origin).values())

    def ids_at_origin(self) -> Counter[str]:
        from confluent_kafka import Consumer, TopicPartition

        highs = self._highs(self.origin)
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"qdeck-bench-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, "log_level": 0})
        ids: Counter[str] = Counter()
        try:
            c.assign([TopicPartition(self.origin, p, 0) for p in highs])
            seen = 0
            deadline = time.monotonic() + 120
            while seen < sum(highs.values()) and time.monotonic() < deadline:
                for m in c.consume(1000, 0.5):
                    if m.error() is None:
                        ids[m.key().decode()] += 1
                        seen += 1
        finally:
            c.close()
        return ids

    def left_in_dlq(self) -> int:
        from confluent_kafka import Consumer, TopicPartition

        from probes.dlq.kafka_store import GROUP

        highs = self._highs(self.dlq)
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": GROUP, "log_level": 0})
        try:
            done = c.committed([TopicPartition(self.dlq, p) for p in highs], 10)
        finally:
            c.close()
        return sum(highs[tp.partition] - max(tp.offset, 0) for tp in done)

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            for f in self.admin.delete_topics([self.origin, self.dlq]).values():
                f.result(30)


class RabbitCase:
    def __init__(self, url: str) -> None:
        from bench.dlq_rabbitmq import FaultsQueues  # the RabbitMQ bench's real x-death dead letters

        self.queues = FaultsQueues(url)
        self.url, self.dlq = self.queues.url, self.queues.dlq

    def setup(self, n: int) -> None:
        self.queues.setup(n)

    def delivered(self) -> int:
        return self.queues.delivered()

    def ids_at_origin(self) -> Counter[str]:
        return self.queues.ids_at_origin()

    def left_in_dlq(self) -> int:
        return self.queues.left_in_dlq()

    def cleanup(self) -> None:
        self.queues.cleanup()


# ---- the run --------------------------------------------------------------------------------------------------------


def in_flight(state: Path) -> int:
    """Messages intended and not confirmed in the journals under ``state``: what the last kill left in flight."""
    total = 0
    for path in (state / "dlq").glob("*.jsonl"):
        intent, published = Counter[str](), Counter[str]()
        for line in path.read_text(encoding="ascii", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            intent.update(entry.get("intent", ()))
            published.update(entry.get("published", ()))
        total += sum((intent - published).values())
    return total


def redrive_cmd(dlq: str, rate: float) -> list[str]:
    return [sys.executable, "-m", "console.cli", "dlq", "redrive", dlq, "-b", "bench", "--yes", "--force",
            "--rate", f"{rate:g}/s", "--json"]


def run_case(name: str, case: Case, n: int, kills: int, rate: float) -> Row:
    row = Row(name, n)
    case.setup(n)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "brokers.toml"
        config.write_text(f'[brokers.bench]\nurl = "{case.url}"\nallow_write = true\n')
        env = {**os.environ, "QDECK_CONFIG": str(config), "QDECK_STATE_DIR": str(Path(tmp) / "state")}
        t0 = time.perf_counter()
        seen_in_flight = 0
        for k in range(kills):
            goal = (k + 1) * n // (kills + 1)
            proc = subprocess.Popen(redrive_cmd(case.dlq, rate), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 120
            while proc.poll() is None and case.delivered() < goal and time.monotonic() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                row.kills += 1
            proc.wait()
            now_in_flight = in_flight(Path(tmp) / "state")
            row.in_flight += max(now_in_flight - seen_in_flight, 0)  # new intents left unconfirmed by this kill
            seen_in_flight = now_in_flight
        done = subprocess.run(redrive_cmd(case.dlq, rate), env=env, capture_output=True, text=True, timeout=600)
        row.seconds = time.perf_counter() - t0
        if done.returncode != 0:
            print(f"the last run exited {done.returncode}: {done.stderr.strip()[-500:]}", file=sys.stderr)
        with contextlib.suppress(ValueError):
            row.ledger = json.loads(done.stdout)
    ids = case.ids_at_origin()
    row.unique = sum(1 for i in range(n) if ids.get(str(i), 0) + ids.get(f"key-{i}", 0) > 0)
    row.duplicates = sum(ids.values()) - row.unique
    row.left = case.left_in_dlq()
    return row


Around = Callable[[], contextlib.AbstractContextManager[Any]]


def cases(brokers: list[str]) -> Iterator[tuple[str, Callable[[], Case], Around]]:
    for b in brokers:
        if b == "redis":
            yield b, lambda: RedisCase(os.environ.get("QDECK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")), \
                contextlib.nullcontext
        elif b == "rabbitmq":
            yield b, lambda: RabbitCase(os.environ.get("QDECK_TEST_RABBITMQ_URL",
                                                       "amqp://guest:guest@127.0.0.1:5672/%2F")), \
                contextlib.nullcontext
        elif b == "kafka":
            yield b, lambda: KafkaCase(os.environ["QDECK_BENCH_KAFKA_URL"]), _private_kafka
        else:
            raise SystemExit(f"unknown broker {b!r} (redis, rabbitmq, kafka)")


@contextlib.contextmanager
def _private_kafka() -> Iterator[None]:
    if os.environ.get("QDECK_BENCH_KAFKA_URL"):
        yield
        return
    from bench._private_brokers import PrivateKafka

    private = PrivateKafka()
    private.start()
    os.environ["QDECK_BENCH_KAFKA_URL"] = private.url
    try:
        yield
    finally:
        os.environ.pop("QDECK_BENCH_KAFKA_URL", None)
        private.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default="redis,rabbitmq,kafka")
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--rate", type=float, default=4000.0, help="the redrive's --rate, so the kills land mid-way")
    args = ap.parse_args()
    targets = Targets("dlq_faults")
    print(f"{'broker':<9} {'messages':>8} {'kills':>5} {'lost':>5} {'dups':>5} {'in flight':>9} {'left':>5} "
          f"{'seconds':>7}  last run's ledger")
    for name, make, around in cases([b.strip() for b in args.brokers.split(",") if b.strip()]):
        with around():
            case = make()
            try:
                row = run_case(name, case, args.messages, args.kills, args.rate)
            finally:
                case.cleanup()
        led = row.ledger
        ledger_text = (f"selected {led.get('selected')} = moved {led.get('moved')} + skipped {led.get('skipped')} + "
                       f"failed {led.get('failed')}; resumed {led.get('resumed')}, possible duplicates "
                       f"{led.get('possible_duplicates')}") if led else "no ledger"
        print(f"{name:<9} {row.messages:>8,} {row.kills:>5} {row.lost:>5} {row.duplicates:>5} {row.in_flight:>9} "
              f"{row.left:>5} {row.seconds:>7.1f}  {ledger_text}", flush=True)
        targets.at_most(f"{name}: messages lost", row.lost, 0, "d")
        targets.at_most(f"{name}: left in the dead-letter queue", row.left, 0, "d")
        targets.at_most(f"{name}: duplicates beyond those in flight at the kills", row.duplicates - row.in_flight,
                        0, "d")
        targets.at_least(f"{name}: kills that landed mid-redrive", row.kills, args.kills, "d")
        targets.at_least(f"{name}: the last run's ledger adds up (1 = yes)", 1 if led.get("adds_up") else 0, 1, "d")
    targets.done()


if __name__ == "__main__":
    main()
