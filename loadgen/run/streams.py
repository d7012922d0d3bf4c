"""Streamed replies on the generator's side: the chunks of one request matched into its stream.

A request's stream is complete when its final chunk and every chunk before it (indices 0 ... final) have come, in
whatever order they arrive. A chunk whose index already came is a duplicate (counted, otherwise ignored); a chunk
for a request already answered is a duplicate too; the final chunk of a stream cut by the timeout counts the stream
as late (its other chunks are not counted again). Figures are taken on arrival, on the generator's monotonic clock:
the first chunk to arrive gives TTFT, every arrival after it a gap (ITL), and the completed stream its TPOT and
token counts. An empty chunk after the first (a worker that learns a stream has ended only after its last token,
as a generator function's return) carries no token: it is no gap, and TPOT ends at the last chunk with tokens. A
stream cut by the timeout is a timeout, with the tokens received so far counted apart (``streams_cut``,
``cut_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loadgen.envelope import Chunk

if TYPE_CHECKING:
    from loadgen.run.engine import Engine

MAX_CHUNK_INDEX = 1 << 20  # a stream of more chunks than this is not a stream qdeck sent for

MORE, DONE, DUPLICATE = 0, 1, 2


@dataclass(slots=True)
class Stream:
    """A streamed reply in progress (monotonic ns)."""

    first_ns: int = 0
    last_ns: int = 0
    tokens: int = 0
    seen: int = 0  # one bit per chunk index received
    count: int = 0
    final_index: int = -1
    max_gap_ns: int = 0
    final: Chunk | None = None

    def add(self, ch: Chunk, received_ns: int) -> int:
        """Take ``ch``: ``DUPLICATE`` (its index came already), ``DONE`` (the stream is complete) or ``MORE``."""
        bit = 1 << ch.part
        if self.seen & bit:
            return DUPLICATE
        self.seen |= bit
        if not self.count:
            self.first_ns = self.last_ns = received_ns
        elif ch.tokens:  # an empty chunk after the first (a stream's end said after its last token) is no token
            gap = received_ns - self.last_ns
            if gap > self.max_gap_ns:
                self.max_gap_ns = gap
            self.last_ns = received_ns
        self.count += 1
        self.tokens += ch.tokens
        if ch.final:
            self.final_index, self.final = ch.part, ch
        return DONE if self.final_index + 1 == self.count else MORE


def on_chunk(engine: Engine, ch: Chunk, received_ns: int) -> None:
    """Match one chunk to its request (``Engine._on_reply`` hands chunks here)."""
    result = engine.result
    assert result is not None
    recorder = engine.recorder
    if ch.run != engine.spec.run_id or ch.part >= MAX_CHUNK_INDEX:
        result.foreign += 1
        return
    entry = engine.pending.get(ch.seq)
    if entry is None:
        if ch.seq in engine.timed_out:
            if ch.final:
                recorder.record_late()
        elif 0 < ch.seq <= engine._seq:
            recorder.record_duplicate()
        else:
            result.foreign += 1
        return
    stream = entry.stream
    if stream is None:
        stream = entry.stream = Stream()
    previous = stream.last_ns
    outcome = stream.add(ch, received_ns)
    if outcome == DUPLICATE:
        recorder.record_duplicate()
        return
    if not entry.warmup and (stream.count == 1 or ch.tokens):
        recorder.record_chunk(entry.intended_ns, entry.sent_ns, received_ns, ch.tokens,
                              received_ns - previous if stream.count > 1 else None)
    if outcome != DONE:
        return
    del engine.pending[ch.seq]
    if entry.waiter is not None and not entry.waiter.done():
        entry.waiter.set_result(None)
    if entry.warmup:
        return
    final = stream.final
    assert final is not None
    if final.gpu is not None:  # the worker's latest GPU sample, on a stream's final chunk
        recorder.gpu.add(final.worker, final.gpu)
    if final.error is not None or final.stamps is None:
        recorder.record_error("worker_error")
        return
    recorder.record_stream(entry.intended_ns, entry.sent_ns, stream.first_ns, stream.last_ns, received_ns,
                           stream.max_gap_ns,
                           final.stamps, final.batch_size, final.device, engine.wall(0), final.model,
                           entry.input_tokens, stream.tokens)
