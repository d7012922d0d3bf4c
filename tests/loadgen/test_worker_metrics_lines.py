"""The worker's report lines stay whole when two threads report at once (the settler and the fetch loop): each line
is one write. ``print`` wrote the text and its newline apart, and a thread switch between them glued two JSON events
onto one line, which a reader of the log then dropped (seen in the Kafka rebalance test's worker logs)."""

from __future__ import annotations

import json
import threading
import time

from loadgen.worker.metrics import MetricsReporter


class SlowStream:
    """A stream that yields the GIL inside every write, as a pipe under load does."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        time.sleep(0)
        self.parts.append(text)
        time.sleep(0)
        return len(text)

    def flush(self) -> None:
        time.sleep(0)


def test_two_threads_never_glue_events_onto_one_line() -> None:
    out = SlowStream()
    reporter = MetricsReporter("w1", "cpu", "echo", fmt="json", out=out)  # type: ignore[arg-type]

    def report(name: str) -> None:
        for i in range(300):
            reporter.event(name, n=i)

    threads = [threading.Thread(target=report, args=(f"t{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = "".join(out.parts).splitlines()
    assert len(lines) == 600
    assert all(json.loads(line)["event"] in ("t0", "t1") for line in lines)
