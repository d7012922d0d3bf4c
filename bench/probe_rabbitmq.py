"""Snapshot time for 10,000 RabbitMQ queues: qdeck's probe vs a bare httpx paging loop, same run.

    .venv/bin/python -m bench.probe_rabbitmq [--queues 10000] [--rounds 3] [--broker amqp://guest:guest@127.0.0.1/]

Creates a throwaway vhost with the queues (definitions import), times each side ``--rounds`` times alternately,
prints the medians and probe/bare, and deletes the vhost. The reference pages the way the probe does, as fast as
httpx goes for the same load on the node: the same columns and page size, page 1 first (it gives the page count),
then the other pages with as many in flight as the probe keeps (``PAGE_CONCURRENCY``) on one pooled client. The
probe does more on top (the overview, dead-letter resolution, building the snapshot).

Target: probe/bare ≤ 1.2. Exits 1 when it is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from bench._targets import Targets
from probes import open_probe, parse_broker_url
from probes.rabbitmq.http import PAGE_CONCURRENCY, PAGE_SIZE, management_base_url
from probes.rabbitmq.probe import QUEUE_COLUMNS
from tests.rabbit import rabbit_vhost


async def bare_loop(base: str, auth: tuple[str, str], vhost_path: str) -> int:
    """The reference: the same queue listing with httpx alone, paged the way the probe pages it."""
    url = f"{base}/api/queues/{vhost_path}"
    params: dict[str, str | int] = {"page_size": PAGE_SIZE, "pagination": "true", "columns": QUEUE_COLUMNS}
    async with httpx.AsyncClient(auth=auth, timeout=60) as client:

        async def page(number: int) -> dict[str, Any]:
            r = await client.get(url, params={**params, "page": number})
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return data

        first = await page(1)
        gate = asyncio.Semaphore(PAGE_CONCURRENCY)

        async def rest(number: int) -> int:
            async with gate:
                return len((await page(number))["items"])

        counts = await asyncio.gather(*(rest(n) for n in range(2, int(first["page_count"]) + 1)))
        return len(first["items"]) + sum(counts)


async def probe_once(url: str) -> int:
    probe = open_probe(parse_broker_url(url))
    try:
        return len((await probe.snapshot()).queues)
    finally:
        await probe.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--queues", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    target = parse_broker_url(args.broker)
    with rabbit_vhost(args.broker) as vhost:
        t0 = time.perf_counter()
        for start in range(0, args.queues, 2000):
            vhost.import_queues([f"bench-{i:06d}" for i in range(start, min(args.queues, start + 2000))])
        print(f"created {args.queues:,} queues in vhost {vhost.name} in {time.perf_counter() - t0:.1f} s")
        auth = (target.username or "guest", target.password or "guest")
        probe_times, bare_times = [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            n_bare = asyncio.run(bare_loop(management_base_url(target), auth, vhost.path))
            bare_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            n_probe = asyncio.run(probe_once(vhost.url))
            probe_times.append(time.perf_counter() - t)
            assert n_bare == n_probe == args.queues, (n_bare, n_probe)
            print(f"round {r + 1}: bare {bare_times[-1]:.2f} s  probe {probe_times[-1]:.2f} s")
        bare, probe = statistics.median(bare_times), statistics.median(probe_times)
        print(f"\nsnapshot of {args.queues:,} queues (median of {args.rounds}):")
        print(f"  bare httpx paging ({PAGE_CONCURRENCY} pages in flight) : {bare:.2f} s")
        print(f"  qdeck probe.snapshot()               : {probe:.2f} s  (overview + paged queues + dead letters)")
    targets = Targets("bench.probe_rabbitmq")
    targets.at_most(f"snapshot of {args.queues:,} queues, probe / bare httpx", probe / bare, 1.2)
    targets.done()


if __name__ == "__main__":
    main()
