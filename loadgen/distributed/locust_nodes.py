"""Locust's distributed mode for qdeck: a master deals a run's shares to agents on other machines and merges them.

    python -m loadgen.distributed.locust_nodes master --agents N --bind HOST:PORT --out DIR [--wait S] [--quiet]
        reads {"spec": {...}, "broker": "URL or profile", "display": "redacted broker"} on stdin
    python -m loadgen.distributed.locust_nodes agent --master HOST:PORT          ($QDECK_BROKER: the agent's own broker)

Locust's master and worker runners carry the messages (ZeroMQ, heartbeats, lost-worker detection); qdeck's engine
does the sending. Each agent runs its share in a child process
(``loadgen.distributed.share_run``: asyncio there, gevent here),
forwards that child's per-interval figures to the master for the live view, and sends its summary and interval logs
when done. The master writes the merged files (``loadgen.results.merge``) and each agent's own summary under
``agents/<i>/``. ``qdeck load run --agents`` and ``qdeck load agent`` start these; they are not meant to be run by
hand. Exit codes: 0 done, 2 usage, connection or agent errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment  # Locust patches the standard library for gevent when it is first imported
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from loadgen.distributed.child import run_child
from loadgen.distributed.shares import run_deadline_s, share, spec_from_dict, spec_to_dict
from loadgen.errors import NodeError, PlanError, ShareError
from loadgen.results.merge import log_texts, merge_logs, merge_summaries
from loadgen.results.summary import stage_histogram, write_hgrm, write_summary
from loadgen.run.llm_load import llm_from_wire
from loadgen.stop_process import stop_process
from probes.redact import redact_text

DEFAULT_PORT = 5557




def say(text: str) -> None:
    print(f"qdeck load: {text}", file=sys.stderr, flush=True)


def host_port(text: str, default_host: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(DEFAULT_PORT)
    try:
        number = int(port)
    except ValueError:
        raise NodeError(f"{text!r} is not HOST:PORT") from None
    if not 0 < number < 65536:
        raise NodeError(f"port {number} is out of range")
    return host.strip("[]") or default_host, number


def _agents(n: int) -> str:
    return f"{n} agent" if n == 1 else f"{n} agents"


# -- master --------------------------------------------------------------------------------------------------------


class Master:
    def __init__(self, runner: MasterRunner, count: int, quiet: bool) -> None:
        self.runner, self.count, self.quiet = runner, count, quiet
        self.done: dict[int, dict[str, Any]] = {}
        self.failed: dict[int, str] = {}
        self._intervals: dict[int, list[dict[str, Any]]] = {}
        for kind, handler in (("qdeck_interval", self._on_interval), ("qdeck_done", self._on_done),
                              ("qdeck_failed", self._on_failed)):
            runner.register_message(kind, handler)

    def _on_interval(self, environment: Environment, msg: Any) -> None:
        stats = msg.data["stats"]
        key = round(stats["end_s"])
        got = self._intervals.setdefault(key, [])
        got.append(stats)
        if len(got) == self.count - len(self.failed):
            del self._intervals[key]
            span = max(s["end_s"] - s["start_s"] for s in got)
            if self.quiet or span < 0.5:  # the short last interval, while replies drain: the summary has it
                return
            sent, replied = sum(s["sent"] for s in got), sum(s["replied"] for s in got)
            say(f"{key:5d} s  {_agents(len(got))}  sent {sent / span:,.0f}/s  replied {replied:,}"
                f"  errors {sum(s['errors'] for s in got)}  timeouts {sum(s['timeouts'] for s in got)}  "
                f"p99 {max(s['p99_us'] for s in got) / 1000:.1f} ms and schedule-lag p99 "
                f"{max(s['schedule_lag_p99_us'] for s in got) / 1000:.1f} ms (worst agent)")

    def _on_done(self, environment: Environment, msg: Any) -> None:
        self.done[msg.data["index"]] = msg.data
        if not self.quiet:
            say(f"agent {msg.data['index']} ({msg.data['host']}) done")

    def _on_failed(self, environment: Environment, msg: Any) -> None:
        self.failed[msg.data["index"]] = f"agent {msg.data['index']} ({msg.data['host']}): {msg.data['error']}"

    def wait_for_agents(self, wait_s: float) -> list[str]:
        deadline = time.monotonic() + wait_s
        while (ready := len(self.runner.clients.ready)) < self.count:
            if time.monotonic() > deadline:
                raise NodeError(f"only {ready} of {self.count} agents connected within {wait_s:g} s "
                                "(start them with 'qdeck load agent --master HOST:PORT')")
            gevent.sleep(0.1)
        return sorted(node.id for node in self.runner.clients.ready)[:self.count]

    def wait_for_results(self, ids: list[str], deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while len(self.done) + len(self.failed) < self.count:
            if time.monotonic() > deadline:
                late = [str(i) for i in range(self.count) if i not in self.done and i not in self.failed]
                raise NodeError(f"agents {', '.join(late)} did not finish within {deadline_s:g} s of the start (the "
                                "plan's length, its timeout and a margin)")
            for index, node_id in enumerate(ids):
                node = self.runner.clients.get(node_id)
                if index not in self.done and index not in self.failed and (node is None
                                                                             or node.state == STATE_MISSING):
                    self.failed[index] = f"agent {index} ({node_id}) was lost: no heartbeat from it"
            gevent.sleep(0.2)


def run_master(args: argparse.Namespace) -> int:
    doc = json.loads(sys.stdin.read())
    spec = spec_from_dict(doc["spec"])
    shares = [share(spec, i, args.agents) for i in range(args.agents)]
    host, port = host_port(args.bind, "*")
    out = Path(args.out)
    env = Environment()
    try:
        runner = env.create_master_runner(master_bind_host=host, master_bind_port=port)
    except Exception as exc:  # ZeroMQ's bind errors (address in use, no such interface)
        raise NodeError(f"cannot listen on {args.bind}: {exc}") from None
    master = Master(runner, args.agents, args.quiet)
    try:
        if not args.quiet:
            say(f"waiting for {_agents(args.agents)} on {host}:{port}")
        ids = master.wait_for_agents(args.wait)
        for index, node_id in enumerate(ids):
            runner.send_message("qdeck_share", {"index": index, "count": args.agents, "broker": doc.get("broker"),
                                                "spec": spec_to_dict(shares[index]), "llm": doc.get("llm")},
                                client_id=node_id)
        if not args.quiet:
            say(f"{spec.schedule.describe()} dealt to {_agents(args.agents)}, 1/{args.agents} each")
        master.wait_for_results(ids, run_deadline_s(spec))
    finally:
        runner.quit()
    if master.failed:
        raise NodeError(redact_text("; ".join(master.failed[i] for i in sorted(master.failed))))
    results = [master.done[i] for i in range(args.agents)]
    summaries = [r["summary"] for r in results]
    llm = llm_from_wire(doc.get("llm"), spec.seed)
    merged = merge_summaries(spec.facts(), doc.get("display", ""), doc.get("kind", ""), summaries,
                            [r["host"] for r in results], [r["logs"] for r in results],
                            llm_facts=llm.facts() if llm is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    write_summary(merged, out / "summary.json")
    write_hgrm(stage_histogram(merged, "end_to_end"), out / "end_to_end.hgrm")
    merge_logs([r["logs"] for r in results], out, min(r["started_epoch_s"] for r in results))
    for index, result in enumerate(results):
        agent_dir = out / "agents" / str(index)
        agent_dir.mkdir(parents=True, exist_ok=True)
        write_summary(result["summary"], agent_dir / "summary.json")
    return 0


# -- agent ---------------------------------------------------------------------------------------------------------


class Agent:
    def __init__(self, runner: WorkerRunner) -> None:
        self.runner = runner
        self.host = socket.gethostname()
        self.child: subprocess.Popen[str] | None = None
        runner.register_message("qdeck_share", self._on_share, concurrent=True)

    def _on_share(self, environment: Environment, msg: Any) -> None:
        index = msg.data["index"]
        try:
            self.send("qdeck_done", self._run_share(msg.data))
        except NodeError as exc:
            say(f"share {index + 1} of {msg.data['count']} failed: {exc}")
            self.send("qdeck_failed", {"index": index, "host": self.host, "error": str(exc)})

    def send(self, kind: str, data: dict[str, Any]) -> None:
        self.runner.send_message(kind, data)

    def _run_share(self, data: dict[str, Any]) -> dict[str, Any]:
        index = data["index"]
        spec = spec_from_dict(data["spec"])
        broker = os.environ.get("QDECK_BROKER") or data.get("broker")
        say(f"share {index + 1} of {data['count']}: {spec.schedule.describe()} → {spec.queue}, run {spec.run_id}")
        with tempfile.TemporaryDirectory(prefix="qdeck-agent-") as tmp:
            out = Path(tmp)
            started = time.time()

            def on_line(line: str) -> None:
                if line.startswith("{"):  # an interval's figures (anything else a library printed is not)
                    self.send("qdeck_interval", {"index": index, "stats": json.loads(line)})

            done = run_child([sys.executable, "-m", "loadgen.distributed.share_run", str(out)],
                             json.dumps({"spec": data["spec"], "broker": broker, "llm": data.get("llm")}), on_line,
                             self._started)
            if done.code != 0:
                raise NodeError(done.last_error().removeprefix("qdeck: "))
            summary = json.loads((out / "summary.json").read_text())
            say(f"share {index + 1} done: sent {summary['counts']['sent']:,}, replied "
                f"{summary['counts']['replied']:,}")
            return {"index": index, "host": self.host, "summary": summary, "logs": log_texts(out),
                    "started_epoch_s": started}

    def _started(self, child: subprocess.Popen[str]) -> None:
        self.child = child

    def stop_child(self) -> None:
        stop_process(self.child, 10)


def run_agent(args: argparse.Namespace) -> int:
    host, port = host_port(args.master, "127.0.0.1")
    env = Environment()
    say(f"connecting to the master at {host}:{port}")
    try:
        runner = env.create_worker_runner(master_host=host, master_port=port)
    except ConnectionError:
        raise NodeError(f"no qdeck master answered at {host}:{port}") from None
    agent = Agent(runner)
    say("connected; waiting for a run")
    try:
        runner.greenlet.join()
    finally:
        agent.stop_child()
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadgen.distributed.locust_nodes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="role", required=True)
    m = sub.add_parser("master")
    m.add_argument("--agents", type=int, required=True)
    m.add_argument("--bind", default=f"*:{DEFAULT_PORT}")
    m.add_argument("--out", required=True)
    m.add_argument("--wait", type=float, default=60.0)
    m.add_argument("--quiet", action="store_true")
    a = sub.add_parser("agent")
    a.add_argument("--master", required=True)
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR, format="locust: %(message)s")  # Locust's own chatter stays quiet
    try:
        return run_master(args) if args.role == "master" else run_agent(args)
    except (NodeError, ShareError, PlanError) as exc:
        print(f"qdeck: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
