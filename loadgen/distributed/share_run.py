"""One agent's share of a distributed run, in a process of its own (the agent's process runs gevent, this one asyncio).

    python -m loadgen.distributed.share_run OUT_DIR  < {"spec": {...}, "broker": "URL or profile", "llm": {...}}

The spec, the broker and an LLM-shaped run's lengths and objectives (``llm_to_wire``, or null) come on stdin, so
a broker password never shows in a process list. Each interval's figures are printed to stdout as one JSON line (the
agent forwards them to the master's live view); at the end the run's files (``summary.json``, ``latency.hlog``,
``hlog/``, ``end_to_end.hgrm``) are in OUT_DIR. Errors: one line on stderr, exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from loadgen import aio
from loadgen.distributed.shares import spec_from_dict
from loadgen.errors import ShareError
from loadgen.results.summary import build_summary, write_outputs
from loadgen.run.engine import Engine, RunResult
from loadgen.run.llm_load import llm_from_wire
from loadgen.run.recorder import IntervalStats
from loadgen.transports import open_transport
from probes import ProbeError, redact_text, resolve_broker


def _emit(stats: IntervalStats, result: RunResult) -> None:
    line = dict(dataclasses.asdict(stats), in_flight=result.in_flight)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m loadgen.distributed.share_run OUT_DIR < share.json", file=sys.stderr)
        return 2
    out = Path(argv[0])
    secrets: tuple[str, ...] = ()
    try:
        doc = json.loads(sys.stdin.read())
        spec = spec_from_dict(doc["spec"])
        target = resolve_broker(doc.get("broker"))
        secrets = target.secrets
        out.mkdir(parents=True, exist_ok=True)
        llm = llm_from_wire(doc.get("llm"), spec.seed)  # LLM-shaped: the share's own seed draws its lengths
        transport = open_transport(target, spec.queue, spec.run_id, confirm=spec.confirm,
                                   persistent=spec.persistent)
        result = aio.run(Engine(transport, spec, progress=_emit, llm=llm).run(str(out)))
    except (ProbeError, ShareError, ValueError, KeyError) as exc:
        print(f"qdeck: {redact_text(str(exc), secrets)}", file=sys.stderr)
        return 2
    summary = build_summary(result.record(broker=target.display, broker_kind=target.kind))
    write_outputs(summary, result.recorder.total["end_to_end"], out)
    if result.aborted:
        print(f"qdeck: run aborted: {redact_text(result.aborted, secrets)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
