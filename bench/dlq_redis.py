"""Redis dead-letter redrive: qdeck's store through the engine vs a bare redis-py loop, same run, same data.

    .venv/bin/python -m bench.dlq_redis [--messages 10000] [--rounds 3] [--batch 500] [--broker redis://HOST:PORT/DB]

Each round fills a uniquely named dead-letter stream with MESSAGES entries of ~200 bytes as qdeck's worker writes
them (body, reason, source, attempts, failed_at), then redrives them all back to their origin stream (which has a
consumer group with a consumer, so the pre-flight passes) two ways, each from a fresh copy:

- bare: redis-py asyncio as directly as it goes: XRANGE a batch (raw replies), one MULTI/EXEC pipeline of
  XADD origin * + XDEL per entry, repeat (the loop the issue names; it is not safe: a failed XADD does not stop
  the XDEL after it);
- qdeck: ``run_action(RedisStore, redrive)`` with a journal, as the CLI runs it: records parsed exactly (every
  field, in order), provenance read, the loop guard, qdeck's headers set, one Lua script per batch that writes each
  message and only then deletes it, with a result per message.

Prints msg/s per round and the medians (and, for information, messages per second of the client's own CPU, with
the load average: on a shared 2-core machine the wall rates move with everything else running); targets: qdeck
>= 20,000 msg/s and qdeck / bare >= 0.5. Exits 1 when one is missed. Without --broker it uses the shared Redis on
127.0.0.1:6379 (db 0); every key it makes starts with ``qdeck-bench-dlq-`` and is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis

from bench._targets import Targets
from probes.dlq.engine import Action, run_action
from probes.dlq.journal import Journal
from probes.dlq.redis_store import RedisStore
from probes.dlq.selection import Selection
from probes.redis_client import redis_client
from probes.urls import BrokerTarget, parse_broker_url


def fill(client: redis.Redis, dlq: str, origin: str, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        body = json.dumps({"request": i, "prompt": "summarise the incident report " * 3}).encode()[:150]
        pipe.xadd(dlq, {"body": body, "reason": "model error: CUDA out of memory", "source": origin,
                        "attempts": "3", "failed_at": "2024-05-01T10:00:00.000+00:00"})
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


async def bare(target: BrokerTarget, dlq: str, origin: str, batch: int) -> int:
    client = redis_client(target)
    client.set_response_callback("XRANGE", lambda response, **_kw: response)
    moved = 0
    try:
        low: bytes | str = "-"
        while True:
            entries = await client.xrange(dlq, min=low, max="+", count=batch)
            if not entries:
                return moved
            pipe = client.pipeline(transaction=True)
            for eid, flat in entries:
                pipe.execute_command("XADD", origin, "*", *flat)
                pipe.xdel(dlq, eid)
            await pipe.execute()
            moved += len(entries)
            low = b"(" + entries[-1][0]
    finally:
        await client.aclose()


async def qdeck(target: BrokerTarget, dlq: str, batch: int, journal_dir: Path) -> int:
    path = journal_dir / f"{uuid.uuid4().hex}.jsonl"
    journal = Journal(path, lambda doc: json.dumps(doc, ensure_ascii=True), {"action": "redrive"})
    try:
        async with RedisStore(target, dlq) as store:
            report = await run_action(store, Action("redrive", dry_run=False, batch=batch), Selection(),
                                      journal=journal)
    finally:
        journal.close()
    ledger = report.ledger
    assert ledger.adds_up() and ledger.failed == 0 and ledger.skipped == 0, ledger
    return ledger.moved


def timed(run: object) -> tuple[int, float, float]:
    """(messages moved, wall seconds, this process's CPU seconds)."""
    t, cpu = time.perf_counter(), time.process_time()
    moved = asyncio.run(run)  # type: ignore[arg-type]
    return moved, time.perf_counter() - t, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    target = dataclasses.replace(parse_broker_url(args.broker), allow_write=True, name="bench")
    client = redis.Redis(host=target.host, port=target.port, db=int(target.path or 0), password=target.password,
                         username=target.username)
    prefix = f"qdeck-bench-dlq-{uuid.uuid4().hex[:8]}"
    origin, dlq = f"{prefix}:requests", f"{prefix}:requests:dlq"
    rates: dict[str, list[float]] = {"bare": [], "qdeck": []}
    per_cpu: dict[str, list[float]] = {"bare": [], "qdeck": []}  # messages per second of client CPU
    try:
        client.xgroup_create(origin, "workers", id="$", mkstream=True)
        client.xgroup_createconsumer(origin, "workers", "w-1")
        with tempfile.TemporaryDirectory() as journals:
            for r in range(args.rounds):
                for name in ("bare", "qdeck") if r % 2 == 0 else ("qdeck", "bare"):
                    client.delete(dlq)
                    client.xtrim(origin, maxlen=0)
                    fill(client, dlq, origin, args.messages)
                    run = bare(target, dlq, origin, args.batch) if name == "bare" else \
                        qdeck(target, dlq, args.batch, Path(journals))
                    moved, seconds, cpu = timed(run)
                    assert moved == args.messages and client.xlen(dlq) == 0, (name, moved, client.xlen(dlq))
                    assert client.xlen(origin) == args.messages
                    rates[name].append(moved / seconds)
                    per_cpu[name].append(moved / cpu)
                print(f"round {r + 1}: bare {rates['bare'][-1]:,.0f} msg/s  qdeck {rates['qdeck'][-1]:,.0f} msg/s  "
                      f"(per client CPU second: bare {per_cpu['bare'][-1]:,.0f}, qdeck {per_cpu['qdeck'][-1]:,.0f})")
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    bare_rate, qdeck_rate = statistics.median(rates["bare"]), statistics.median(rates["qdeck"])
    print(f"\nredrive of {args.messages:,} stream entries (~200 B), batches of {args.batch} "
          f"(median of {args.rounds}):")
    print(f"  bare redis-py XRANGE + MULTI XADD/XDEL : {bare_rate:,.0f} msg/s")
    print(f"  qdeck dlq redrive (store + engine)     : {qdeck_rate:,.0f} msg/s  (with its journal)")
    print(f"  per second of the client's own CPU     : bare {statistics.median(per_cpu['bare']):,.0f}, qdeck "
          f"{statistics.median(per_cpu['qdeck']):,.0f} (what an idle core would give; the wall rates depend on "
          f"what else this machine runs: load average {os.getloadavg()[0]:.1f} now)")
    targets = Targets("bench.dlq_redis")
    targets.at_least("qdeck redrive, msg/s", qdeck_rate, 20_000, ",.0f")
    targets.at_least("qdeck / bare redis-py loop", qdeck_rate / bare_rate, 0.5)
    targets.done()


if __name__ == "__main__":
    main()
