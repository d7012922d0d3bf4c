"""Streamed replies (LLM-shaped load): the load generator's cost per chunk, and chunks/s through Redis.

    .venv/bin/python -m bench.llm_chunks [--chunks 204800] [--rate 320] [--seconds 5] [--rounds 3] [--redis URL]

1. Recording, in process: what the generator does with each chunk once decoded (``streams.on_chunk``: the match to
   its request, ``Stream.add``, ``Recorder.record_chunk``, and ``record_stream`` per completed stream, amortised
   over its chunks), timed with ``perf_counter_ns`` over --chunks chunks: 64-token streams at one token a chunk,
   64 streams at a time interleaved as a continuous batch delivers them. Five passes, each on a fresh engine; the
   fastest counts (as ``timeit`` takes it: on this shared machine a slower pass is one that waited for a CPU; all
   passes are printed). Reference, the same passes alternated: a bare ``HdrHistogram.record_value`` per chunk,
   the least a recorder can do with a chunk (the same loop over the same count). The chunk's decode
   (``decode_reply``) is printed beside them, not counted: it is the envelope's cost, the same for every reply.
   Target: ≤ 2 µs per chunk.
2. Through Redis: a ``qdeck worker`` with ``llm-synthetic`` (``step_ms=5,per_seq_ms=0,prefill_ms=0,chunk=1``, 64
   tokens out) answers qdeck's engine, run in process at a constant --rate requests/s: 320/s × 64 chunks = 20,480
   chunks/s, ~100 sequences in each 5 ms step. The constant rate spaces requests 3.1 ms apart, beyond the 1 ms
   coalescing window (``COALESCE_S``), so each goes out alone and its schedule lag is the generator's own
   lateness, not a deliberate wait. Measured: the chunks that arrived inside the measured window ÷ its seconds (on
   the generator's clock: chunks held up anywhere arrive after it and are not counted), schedule-lag p99, every
   stream complete, the CPU per chunk of the worker and of the generator, and how long the generator waited for a
   CPU (``/proc/self/schedstat``: on this shared 2-core machine, lateness no code of the generator's can avoid).
   References in the same run, alternated with qdeck's runs over --rounds:
   - a bare loop with the same client (redis-py asyncio: hand-packed XADDs written without waiting on their
     replies and raw XREADs, as the transport does; the least a reader must do with each entry, parse its JSON)
     that XADDs chunk-sized bodies at the same rate, one step's chunks to a write every 5 ms, and XREADs them back
     (ratio qdeck/bare printed); and the same loop flat out, at most 2,000 chunks unread: the pipe's ceiling here;
   - qdeck's engine at the same request rate against an echo worker (one reply a request, no streams): the
     schedule lag this machine gives the generator without chunks to handle.
   Targets (medians over the rounds): ≥ 20,000 chunks/s received, schedule-lag p99 ≤ 1 ms.
Exits 1 when any target is missed. Without --redis it uses an embedded Redis of its own (not the shared one).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
import uuid

import psutil

from bench._targets import Targets
from bench._workers import redis_url, worker
from bench.loadgen_ceiling import p99_ms
from console.demo import remove_queues
from loadgen import aio
from loadgen.envelope import Chunk, Stamps, decode_reply, encode_chunk
from loadgen.results.stages import new_histogram
from loadgen.run.engine import Engine, RunResult, RunSpec, _Pending
from loadgen.run.llm_load import llm_load
from loadgen.run.schedules import Constant
from loadgen.run.streams import on_chunk
from loadgen.transports import open_transport
from probes.urls import parse_broker_url

MS = 1_000_000  # ns
TOKENS = 64  # output tokens a stream, one a chunk
BATCH = 64  # streams interleaved in the recording pass, as one decode batch delivers them
INPUT_TOKENS = 16
STEP_MS = 5.0
PASSES = 5
RECORD_US = 2.0  # per chunk
CHUNKS_S = 20_000.0
LAG_P99_MS = 1.0
STAMPS = Stamps(1_000, 2_000, 3_000, 4_000, 5_000)
MODEL = f"llm-synthetic:step_ms={STEP_MS:g},per_seq_ms=0,prefill_ms=0,chunk=1,output_tokens={TOKENS},max_seqs=1024"


# -- 1. recording --------------------------------------------------------------------------------------------------

def _streams(n: int) -> tuple[Engine, list[tuple[Chunk, int]]]:
    """An LLM-shaped engine (memory transport, never started) expecting ``n // TOKENS`` streams, and their chunks
    in arrival order with receive times: a stream sent every 3 ms, its first token 15 ms later, then one every
    10 ms, each arrival jittered by up to 0.4 ms."""
    spec = RunSpec(queue="q", schedule=Constant(10), duration_s=1.0, timeout_s=30.0, run_id="run")
    engine = Engine(open_transport(parse_broker_url("memory://bench"), "q", "run"), spec,
                    llm=llm_load(f"fixed:{INPUT_TOKENS}", f"fixed:{TOKENS}", [], 1))
    engine.result = RunResult(spec=spec, recorder=engine.recorder, started_epoch_s=0.0, measured_s=1.0)
    streams = n // TOKENS
    items: list[tuple[Chunk, int]] = []
    base = 10**12
    for first in range(1, streams + 1, BATCH):
        seqs = range(first, min(first + BATCH, streams + 1))
        for seq in seqs:
            intended = base + seq * 3 * MS
            engine.pending[seq] = _Pending(intended, intended + 40_000, False, input_tokens=INPUT_TOKENS)
            engine.recorder.record_sent()
        engine._seq = seqs[-1]
        for part in range(TOKENS):
            final = part == TOKENS - 1
            for seq in seqs:
                at = base + seq * 3 * MS + 15 * MS + part * 10 * MS + (seq * 7_919 + part * 104_729) % 400_000
                items.append((Chunk("run", seq, part, 1, final, "w-1", "cpu", len(seqs),
                                    STAMPS if part == 0 or final else None), at))
    return engine, items


def _qdeck_pass(n: int) -> float:
    """ns per chunk through ``on_chunk`` (and the recorder behind it)."""
    engine, items = _streams(n)
    gc.collect()
    t0 = time.perf_counter_ns()
    for ch, at in items:
        on_chunk(engine, ch, at)
    elapsed = time.perf_counter_ns() - t0
    rec = engine.recorder
    rec.flush()
    if engine.pending or rec.streams != n // TOKENS or rec.interval["itl"].get_total_count() != rec.streams * (
            TOKENS - 1):
        raise SystemExit(f"bench.llm_chunks: the recording pass is wrong: {len(engine.pending)} streams left, "
                         f"{rec.streams} completed")
    return elapsed / len(items)


def _bare_pass(n: int) -> float:
    """ns per chunk of a bare ``record_value`` (the chunk's gap in µs) into one histogram."""
    hist = new_histogram()
    record = hist.record_value
    values = [(10 * MS + (i * 104_729) % 400_000) // 1000 for i in range(n)]
    gc.collect()
    t0 = time.perf_counter_ns()
    for value in values:
        record(value)
    return (time.perf_counter_ns() - t0) / n


def _decode_pass(n: int) -> float:
    """ns per chunk of ``decode_reply`` on a middle chunk's body as the worker writes it."""
    body = encode_chunk(Chunk("0123456789abcdef", 12_345, 17, 1, False, "w-1", "cpu", 100))
    bodies = [body] * n
    t0 = time.perf_counter_ns()
    for b in bodies:
        decode_reply(b)
    return (time.perf_counter_ns() - t0) / n


def recording(n: int, targets: Targets) -> None:
    qdeck: list[float] = []
    bare: list[float] = []
    for _ in range(PASSES):
        qdeck.append(_qdeck_pass(n))
        bare.append(_bare_pass(n))
    q, b = min(qdeck) / 1000, min(bare) / 1000
    decode = _decode_pass(n // 4) / 1000
    print(f"recording, {n:,} chunks ({n // TOKENS:,} streams of {TOKENS} chunks), fastest of {PASSES} passes:\n"
          f"  qdeck on_chunk (Stream.add, record_chunk, record_stream amortised): {q:.2f} µs/chunk "
          f"(passes {', '.join(f'{v / 1000:.2f}' for v in qdeck)})\n"
          f"  bare HdrHistogram.record_value: {b:.2f} µs/chunk (passes {', '.join(f'{v / 1000:.2f}' for v in bare)})"
          f"\n  ratio qdeck/bare {q / b:.2f}; decode_reply of a chunk, not counted: {decode:.2f} µs", flush=True)
    targets.at_most("per-chunk recording (µs)", q, RECORD_US)


# -- 2. through Redis ----------------------------------------------------------------------------------------------

def _chunk_template(run: str) -> bytes:
    """A middle chunk's body as the worker writes it, with ``%d`` for its sequence number and index."""
    body = encode_chunk(Chunk(run, 11, 22, 1, False, "w-bench", "cpu", 100))
    return body.replace(b'"seq":11,', b'"seq":%d,').replace(b'"i":22,', b'"i":%d,')


async def bare_chunks(url: str, rate: float | None, seconds: float, n: int = 200_000,
                      window: int = 2_000) -> float:
    """Chunks/s a bare redis-py loop gets through one Redis stream: XADD bodies written without waiting on their
    replies (a task reads them), XREAD back on a second connection with each entry's JSON parsed. ``rate``: one
    step's chunks (rate × 5 ms) to a write every 5 ms for ``seconds``; None: ``n`` chunks flat out, at most
    ``window`` written and not yet read."""
    import redis.asyncio as aioredis

    from loadgen.brokers.redis_resp import pack_xadds, pack_xread, xadd_head, xread_entries

    run = uuid.uuid4().hex[:16]
    stream = f"bench:chunks:{run}"
    client = aioredis.Redis.from_url(url)
    pool = client.connection_pool
    out = await pool.get_connection()  # type: ignore[no-untyped-call]
    inn = await pool.get_connection()  # type: ignore[no-untyped-call]
    head = xadd_head(stream)
    template = _chunk_template(run)
    total = n if rate is None else int(rate * seconds)
    written = [0]
    read = [0]
    room = asyncio.Event()
    step_ns = int(STEP_MS * MS)

    def bodies(upto: int) -> bytes:
        first = written[0]
        written[0] = upto
        return pack_xadds(head, [template % (i // TOKENS, i % TOKENS) for i in range(first, upto)])

    async def send() -> None:
        t0 = time.perf_counter_ns()
        if rate is None:
            while written[0] < total:
                while written[0] - read[0] >= window:
                    room.clear()
                    await room.wait()
                await out.send_packed_command(bodies(min(written[0] + 100, total)), check_health=False)
                await asyncio.sleep(0)
            return
        due = t0
        while written[0] < total:
            due += step_ns
            await asyncio.sleep(max(due - time.perf_counter_ns(), 0) / 1e9)
            upto = min(int((time.perf_counter_ns() - t0) / 1e9 * rate), total)
            if upto > written[0]:
                await out.send_packed_command(bodies(upto), check_health=False)

    async def acks() -> None:
        for _ in range(total):
            await out.read_response()

    async def receive() -> None:
        last = b"0-0"
        packed = stream.encode()
        while read[0] < total:
            await inn.send_packed_command(pack_xread(packed, last, 1000, 100), check_health=False)
            entries = xread_entries(await inn.read_response())
            if entries:
                for _id, fields in entries:
                    json.loads(fields[1])
                read[0] += len(entries)
                last = entries[-1][0]
                room.set()

    t0 = time.perf_counter()
    await asyncio.gather(send(), acks(), receive())
    chunks_s = total / (time.perf_counter() - t0)
    for conn in (out, inn):
        await conn.disconnect()
    await client.delete(stream)
    await client.aclose()
    return chunks_s


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _runqueue_s() -> float:
    """Seconds this process has spent runnable but waiting for a CPU (Linux ``/proc/self/schedstat``; 0 elsewhere):
    on a shared machine, the lateness no code of the generator's can avoid."""
    try:
        with open("/proc/self/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _Counting(Engine):
    """qdeck's engine, counting the replies (here chunks) that arrive, and those inside the measured window."""

    arrived = 0
    in_window = 0
    _bounds: tuple[int, int] | None = None  # the measured window, monotonic ns

    def _on_reply(self, body: bytes, received_ns: int) -> None:
        self.arrived += 1
        bounds = self._bounds
        if bounds is None:
            warm, end = self._window()
            bounds = self._bounds = (self._mono0 + warm, self._mono0 + (end or 0))
        if bounds[0] <= received_ns < bounds[1]:
            self.in_window += 1
        super()._on_reply(body, received_ns)


def qdeck_run(url: str, queue: str, rate: float, seconds: float, procs: dict[str, psutil.Process], *,
              streams: bool = True) -> tuple[float, float, str]:
    """One constant-rate run of qdeck's engine (LLM-shaped when ``streams``): replies/s received inside the measured
    window, schedule-lag p99 (ms), and the run's line."""
    before = {name: _cpu(p) for name, p in procs.items()}
    waited = _runqueue_s()
    spec = RunSpec(queue=queue, schedule=Constant(rate), duration_s=seconds, warmup_s=1.0, timeout_s=10.0)
    llm = llm_load(f"fixed:{INPUT_TOKENS}", f"fixed:{TOKENS}", [], 1) if streams else None
    engine = _Counting(open_transport(parse_broker_url(url), queue, spec.run_id), spec, llm=llm)
    result = aio.run(engine.run())
    waited = _runqueue_s() - waited
    rec = result.recorder
    per_s = engine.in_window / seconds
    lag = rec.total["schedule_lag"]
    cpu = "  ".join(f"{name} {(_cpu(p) - before[name]) * 1e6 / max(engine.arrived, 1):.1f}"
                    for name, p in procs.items())
    done = rec.streams if streams else rec.replied
    complete = done == rec.sent and rec.timeouts == 0 and rec.error_count == 0 and result.unsent == 0
    what, one = ("chunks", "chunk") if streams else ("replies", "reply")
    line = (f"{per_s:9,.0f} {what}/s received, schedule-lag p99 {p99_ms(lag):.2f} ms (p50 "
            f"{lag.get_value_at_percentile(50) / 1000:.2f}, max {lag.get_max_value() / 1000:.1f}), {done:,} of "
            f"{rec.sent:,} {'streams complete' if streams else 'replied'}, waited {waited:.2f} s for a CPU"
            + (f"; CPU µs/{one}: {cpu}" if procs else ""))
    if not complete:
        line += f"  [INCOMPLETE: {rec.timeouts} timeouts, {rec.error_count} errors, {result.unsent} unsent]"
        per_s = 0.0  # a run that lost streams did not carry its chunks
    return per_s, p99_ms(lag), line


def through_redis(url: str, rate: float, seconds: float, rounds: int, targets: Targets) -> None:
    queue = f"qdeck-bench-llm-{uuid.uuid4().hex[:6]}"
    echo_queue = f"qdeck-bench-llm-echo-{uuid.uuid4().hex[:6]}"
    offered = rate * TOKENS
    print(f"\nthrough Redis: {MODEL} on {queue}; qdeck at {rate:g} requests/s constant = {offered:,.0f} chunks/s "
          f"offered, {seconds:g} s measured after 1 s of warm-up (load average {os.getloadavg()[0]:.1f})", flush=True)
    ceilings = [aio.run(bare_chunks(url, None, seconds))]
    print(f"  bare loop flat out: {ceilings[-1]:,.0f} chunks/s", flush=True)
    qdeck: list[float] = []
    lags: list[float] = []
    echo_lags: list[float] = []
    bare: list[float] = []
    try:
        with (worker(url, queue, "--model", MODEL, "--max-batch", "64") as proc,
              worker(url, echo_queue, "--model", "echo", "--max-batch", "64", "--max-wait-ms", "0")):
            procs = {"worker": psutil.Process(proc.pid), "generator": psutil.Process()}
            for i in range(rounds):
                bare.append(aio.run(bare_chunks(url, offered, seconds)))
                print(f"  round {i + 1}: bare loop at {offered:,.0f} chunks/s: {bare[-1]:9,.0f} chunks/s received",
                      flush=True)
                chunks_s, lag, line = qdeck_run(url, queue, rate, seconds, procs)
                qdeck.append(chunks_s)
                lags.append(lag)
                print(f"  round {i + 1}: qdeck, streamed:     {line}", flush=True)
                _replies, lag, line = qdeck_run(url, echo_queue, rate, seconds, {}, streams=False)
                echo_lags.append(lag)
                print(f"  round {i + 1}: qdeck, echo replies: {line}", flush=True)
    finally:
        remove_queues(parse_broker_url(url), [queue, f"{queue}:dlq", echo_queue, f"{echo_queue}:dlq"])
    ceilings.append(aio.run(bare_chunks(url, None, seconds)))
    print(f"  bare loop flat out, after: {ceilings[-1]:,.0f} chunks/s", flush=True)
    q, b, top = statistics.median(qdeck), statistics.median(bare), statistics.median(ceilings)
    lag, echo_lag = statistics.median(lags), statistics.median(echo_lags)
    print(f"  medians: qdeck {q:,.0f} chunks/s received, schedule-lag p99 {lag:.2f} ms (the same rate of one-reply "
          f"requests: {echo_lag:.2f} ms); bare loop at the same rate {b:,.0f} chunks/s → ratio qdeck/bare "
          f"{q / b:.2f}; bare flat out {top:,.0f} chunks/s → qdeck's rate is {q / top:.2f} of the pipe's ceiling",
          flush=True)
    targets.at_least("chunks/s received through Redis", q, CHUNKS_S, ",.0f")
    targets.at_most(f"schedule-lag p99 at {rate:g} requests/s, {q:,.0f} chunks/s (ms)", lag, LAG_P99_MS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=204_800, help="chunks in each recording pass")
    ap.add_argument("--rate", type=float, default=320.0, help=f"requests/s through Redis ({TOKENS} chunks each)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis", help="redis:// URL (default: an embedded Redis)")
    args = ap.parse_args()
    if args.chunks < TOKENS or args.rate <= 0 or args.seconds <= 0 or args.rounds < 1:
        ap.error("--chunks must be at least 64, --rate, --seconds and --rounds positive")
    targets = Targets("bench.llm_chunks")
    recording(args.chunks, targets)
    with redis_url(args.redis) as url:
        through_redis(url, args.rate, args.seconds, args.rounds, targets)
    targets.done()


if __name__ == "__main__":
    main()
