"""House rule 11: every byte qdeck writes goes through one sanitiser. Hostile names, headers, keys and bodies on
all three brokers; every read command, as a table and as ``--json``; the RAW stdout+stderr bytes are scanned.

The tests run without a terminal, so rich emits no colour sequences: any ESC in the output is a leak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

# One of each: CSI clear screen, an OSC title (BEL-terminated), 8-bit CSI and OSC, backspace, DEL, CR, NUL and the
# bidi controls that reorder what a reader sees.
CSI = "\x1b[2J"
OSC = "\x1b]0;pwned\x07"
HOSTILE = f"{CSI}{OSC}\x9b1m\x9d0;t\x08\x7f\r\u202e\u2066\u2067\u2068\u2069\u200e\u200f"
BODY = ("body \x7f \u202e \x9b \x00 ".encode() + HOSTILE.encode() + b" end")

RAW_BYTES = {b"\x1b": "ESC", b"\x07": "BEL", b"\x00": "NUL", b"\x08": "BS", b"\x7f": "DEL", b"\r": "CR"}
RAW_CHARS = {"\x9b": "8-bit CSI", "\x9d": "8-bit OSC", chr(0xDC9B): "raw byte 0x9b", chr(0xDC9D): "raw byte 0x9d",
             "\u202e": "RLO", "\u2066": "LRI", "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI",
             "\u200e": "LRM", "\u200f": "RLM"}


def _run(*args: str, config: Path | None = None) -> tuple[int, bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDECK_") or k.startswith("QDECK_TEST_")}
    env["QDECK_CONFIG"] = str(config) if config else "/nonexistent/qdeck-brokers.toml"
    env["COLUMNS"] = "200"
    done = subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, timeout=90, env=env,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def _leaks(raw: bytes) -> list[str]:
    found = [name for b, name in RAW_BYTES.items() if b in raw]
    text = raw.decode("utf-8", errors="surrogateescape")
    found += [name for ch, name in RAW_CHARS.items() if ch in text]
    return found


def _scan_every_command(url: str, dlq: str, queue: str, tmp_path: Path) -> None:
    config = tmp_path / "brokers.toml"
    config.write_text(f'[brokers.hostile]\nurl = "{url}"\ndescription = {json.dumps(HOSTILE)}\n')
    commands: list[tuple[str, ...]] = [
        ("queues",), ("lag", "--interval", "0"), ("consumers",), ("consumers", queue), ("dlq", "list"),
        ("dlq", "peek", dlq, "-n", "5", "--force"), ("dlq", "peek", queue, "-n", "5", "--force"),
        ("dlq", "peek", f"missing{HOSTILE}"),
        # the dead-letter actions' dry runs (the default: they change nothing), their ledger, and an export
        ("dlq", "redrive", dlq, "--force"), ("dlq", "move", dlq, queue, "--force"), ("dlq", "purge", dlq, "--force"),
        ("dlq", "delete", dlq, "--id", f"x{HOSTILE}", "--force"), ("dlq", "export", dlq, "-o", "-", "--force"),
        # the health rules: every finding, names and summaries included (exit 0-3 as Nagios reads them)
        ("check", "--all"),
    ]
    problems: dict[str, list[str]] = {}
    outputs: dict[str, bytes] = {}
    for cmd in commands:
        for extra in ((), ("--json",)):
            code, raw = _run(*cmd, "-b", url, *extra)
            label = " ".join(cmd + extra).encode("unicode_escape").decode()
            outputs[label] = raw
            assert code in ((0, 1, 2, 3) if cmd[0] == "check" else (0, 2)), (label, code, raw[-2000:])
            if leaks := _leaks(raw):
                problems[label] = leaks
    for extra in ((), ("--json",)):
        code, raw = _run("brokers", *extra, config=config)
        assert code == 0, raw
        if leaks := _leaks(raw):
            problems[f"brokers {' '.join(extra)}"] = leaks
    assert not problems, problems
    # The hostile content is there, escaped (the scan did not pass on empty pages).
    tables = b"".join(raw for label, raw in outputs.items() if not label.endswith("--json"))
    documents = b"".join(raw for label, raw in outputs.items() if label.endswith("--json"))
    assert b"\\x1b[2J" in tables and b"\\u202e" in tables, tables[-3000:]
    assert b"\\u001b[2J" in documents and b"\\u007f" in documents and b"\\u202e" in documents, documents[-3000:]


@pytest.mark.rabbitmq
def test_hostile_rabbitmq(vhost: object, tmp_path: Path) -> None:
    import pika

    from tests.rabbit import RabbitVhost, wait_sync

    assert isinstance(vhost, RabbitVhost)
    queue = f"work{CSI}{OSC}\u202e"
    dlq = f"dead{OSC}\x9b.dlq"
    ch = vhost.channel()
    ch.queue_declare(dlq)
    ch.queue_declare(queue, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    headers = {f"h{CSI}": f"v{OSC}\x7f\u202e", "tenant\u2066": "x\x9b\x00y"}
    ch.basic_publish("", queue, BODY, pika.BasicProperties(headers=headers, message_id=f"id{CSI}",
                                                           content_type=f"text/{OSC}"))
    method, _props, _body = ch.basic_get(queue)
    ch.basic_reject(method.delivery_tag, requeue=False)
    ch.basic_publish("", queue, BODY, pika.BasicProperties(headers=headers))
    wait_sync(lambda: vhost.exact_depth(dlq) == 1 and vhost.exact_depth(queue) == 1, what="dead-lettered")
    listener = vhost.channel()
    listener.queue_declare(f"idle{CSI}")
    listener.basic_consume(f"idle{CSI}", lambda *a: None, consumer_tag=f"tag{CSI}{OSC}\u202e")
    _scan_every_command(vhost.url, dlq, queue, tmp_path)
    ch.close()


@pytest.mark.redis
def test_hostile_redis(redis_url: str, tmp_path: Path) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    prefix = f"qdeck-hostile-{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}{CSI}{OSC}\u202e:jobs"
    dlq = f"{prefix}{OSC}\x9b:dlq"
    listq = f"{prefix}{CSI}:list"
    try:
        r.xadd(stream, {f"f{CSI}": BODY, "payload": BODY})
        r.xgroup_create(stream, f"g{CSI}{OSC}", id="0")
        r.xreadgroup(f"g{CSI}{OSC}", f"c{CSI}\u202e", {stream: ">"}, count=1)
        r.xadd(stream, {"payload": BODY})
        r.xadd(dlq, {f"reason{CSI}": f"x{OSC}".encode(), "payload": BODY, "body": BODY})
        r.rpush(listq, BODY, BODY)
        _scan_every_command(redis_url, dlq, stream, tmp_path)
    finally:
        for key in r.scan_iter(match=f"{prefix}*"):
            r.delete(key)
        r.close()


@pytest.mark.kafka
def test_hostile_kafka(kafka_url: str, tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = kafka_url.removeprefix("kafka://")
    topic = f"qdeck-hostile-{uuid.uuid4().hex[:8]}.dlq"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        for _ in range(2):
            producer.produce(topic, key=f"k{CSI}{OSC}\u202e".encode() + b"\x9b\x00", value=BODY,
                             headers=[(f"h{CSI}", f"v{OSC}\x7f".encode()), ("x-reason\u202e", b"\x9b\x00\x1b]0;")])
        producer.flush(30)
        group = f"g-{uuid.uuid4().hex[:6]}"
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe([topic])
        msg = None
        for _ in range(30):
            msg = consumer.poll(1)
            if msg is not None and not msg.error():
                break
        assert msg is not None
        consumer.commit(msg, asynchronous=False)
        consumer.close()
        _scan_every_command(kafka_url, topic, topic, tmp_path)
    finally:
        admin.delete_topics([topic])


def test_hostile_output_paths_leave_as_escapes(tmp_path: Path) -> None:
    """The paths a run names when it ends (`results in DIR/`, `report in FILE`) are the user's, and may hold control
    characters: they pass the one sanitiser too."""
    from tests.cli import qdeck

    hostile = "r\x1b]0;pwned\x07\x1b[2J"
    out, html = tmp_path / f"out{hostile}", tmp_path / f"report{hostile}.html"
    run = qdeck("load", "run", "-b", "memory://hostile-paths", "-q", "q", "--rate", "20", "--duration", "0.5s",
                "--quiet", "--out", str(out), "--html", str(html), timeout=60)
    assert run.code == 0, run.all
    assert "\x1b" not in run.all and "\x07" not in run.all
    assert "results in " in run.out and "/outr\\x1b]0;pwned\\x07\\x1b[2J/ (summary.json" in run.out
    assert "/reportr\\x1b]0;pwned\\x07\\x1b[2J.html" in run.err and html.exists()


def test_a_hostile_dataset_name_leaves_as_escapes(tmp_path: Path) -> None:
    """An LLM-shaped run names its dataset file under the LLM table (and in a refusal when it cannot be read): the
    user's file name, which may hold control characters, passes the one sanitiser like every other name."""
    name = f"rows{CSI}{OSC}\u202e.jsonl"
    dataset = tmp_path / name
    dataset.write_text("".join(json.dumps({"input_tokens": 8, "output_tokens": 4}) + "\n" for _ in range(20)))
    code, raw = _run("load", "run", "-b", "memory://hostile-dataset", "-q", "q", "--rate", "20", "--duration",
                     "0.5s", "--dataset", str(dataset))
    assert code == 0, raw[-2000:]
    assert not _leaks(raw), (_leaks(raw), raw[-2000:])
    assert b"lengths: dataset " in raw and b"rows\\x1b[2J\\x1b]0;pwned\\x07\\u202e.jsonl" in raw, raw[-2000:]
    code, raw = _run("load", "run", "-b", "memory://hostile-dataset", "-q", "q", "--rate", "20", "--duration",
                     "0.5s", "--dataset", str(tmp_path / f"missing{HOSTILE}.jsonl"))
    assert code == 2 and raw.count(b"\n") == 1, raw
    assert not _leaks(raw) and b"missing\\x1b[2J" in raw, raw
