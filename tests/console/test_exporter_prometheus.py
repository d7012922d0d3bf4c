"""Done when: a REAL Prometheus (Debian's package, tests/prometheus.py) scrapes ``qdeck exporter`` on loopback every
second, and a series comes back through Prometheus's HTTP API with the queue's depth."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.console.test_exporter_process import exporter_process, wait_for
from tests.prometheus import prometheus
from tests.workers import unique

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_prometheus_scrapes_the_exporter_and_reads_a_queue_depth_back(tmp_path: Path, redis_url: str) -> None:
    import redis

    listed = unique("prom-jobs") + '-"q"\x1b'  # a list ("*jobs*") whose name has a quote and an escape in it
    client = redis.Redis.from_url(redis_url)
    try:
        client.rpush(listed, *[b"x"] * 4)
        with exporter_process(tmp_path, "-b", redis_url) as (base, proc, err):
            wait_for("/healthz 200", lambda: httpx.get(f"{base}/healthz", timeout=5).status_code == 200, proc, err)
            scrape_at = base.removeprefix("http://")
            with prometheus(tmp_path, scrape_at, interval_s=1) as prom:
                shown = listed.replace("\x1b", "\\x1b")  # console.safe_text.safe's escape, then PromQL's quoting
                quoted = shown.replace("\\", "\\\\").replace('"', '\\"')
                promql = f'qdeck_queue_depth{{queue="{quoted}"}}'

                def series() -> list[dict[str, object]]:
                    return prom.query(promql)

                found = wait_for(f"{promql} in Prometheus", series, proc, err)
                assert len(found) == 1, found
                metric, (_, depth) = found[0]["metric"], found[0]["value"]  # type: ignore[misc]
                assert depth == "4"
                assert metric["queue"] == shown and metric["broker"] == redis_url  # type: ignore[index]
                assert metric["job"] == "qdeck" and metric["kind"] == "list"  # type: ignore[index]
                up = prom.query('up{job="qdeck"}')
                assert up and up[0]["value"][1] == "1"  # type: ignore[index]
                assert [t["health"] for t in prom.targets()] == ["up"]
                client.rpush(listed, b"y")  # the next poll (5 s) moves the series; Prometheus sees it
                wait_for("depth 5", lambda: [r for r in prom.query(promql) if r["value"][1] == "5"], proc, err)
    finally:
        client.delete(listed)
        client.close()
