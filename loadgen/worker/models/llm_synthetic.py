"""``llm-synthetic[:k=v,...]``: a generative model's timing with continuous batching, as LLM servers schedule it.

One engine thread runs decode steps back to back while any sequence is active. At each step boundary waiting
requests join the running batch (first come, first served) while the KV budget allows: a sequence holds
``input + max output`` tokens of KV (``kv_tokens`` in all; a request larger than the whole budget runs alone) and at
most ``max_seqs`` run at once. A step serves every active sequence one token and takes

    step_ms + per_seq_ms × active sequences + prefill_ms × input tokens of the sequences joining in it

(the joining sequences' prefill runs in the step that gives their first token, as a mixed prefill/decode step does).
The first token goes out at once as chunk 0; after it a chunk goes out every ``chunk`` tokens, and the last
tokens go out in the final chunk. ``stall_ms`` with ``stall_after_s``: one step that much longer, that many seconds
after the first step (the coordinated-omission demonstration). A request that gives no lengths gets
``input_tokens`` and ``output_tokens``. Time is spent sleeping, as a GPU's host thread waits.

The worker (``loadgen.worker.stream_serve``) feeds it requests as it has room and publishes each step's chunks.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from loadgen.errors import ModelError
from loadgen.worker.models.sequence_queue import SequenceQueue

MAX_MS = 3_600_000.0


@dataclass(frozen=True, slots=True)
class TokenEvent:
    key: int
    tokens: int
    first: bool
    final: bool
    joined_ns: int  # wall clock: the start of the step the sequence joined in (its prefill start)


class Generating(Protocol):
    """A sequence being generated, as the chunk rule reads and updates it."""

    key: int
    max_tokens: int
    generated: int
    unsent: int
    joined_ns: int


def next_token(seq: Generating, chunk: int) -> tuple[TokenEvent | None, bool]:
    """One more token of ``seq``: the chunk it completes, or None, and whether it was the last. The chunk rule of
    every streaming model: the first token goes out at once, then a chunk every ``chunk`` tokens, and the final
    chunk with the rest."""
    seq.generated += 1
    seq.unsent += 1
    first, final = seq.generated == 1, seq.generated >= seq.max_tokens
    if not (first or final or seq.unsent >= chunk):
        return None, final
    event = TokenEvent(seq.key, seq.unsent, first, final, seq.joined_ns)
    seq.unsent = 0
    return event, final


G = TypeVar("G", bound=Generating)


def next_tokens(seqs: Iterable[G], chunk: int) -> tuple[list[TokenEvent], list[G]]:
    """One more token of each of ``seqs`` (``next_token``): the chunks they complete, and the sequences that ended."""
    events: list[TokenEvent] = []
    done: list[G] = []
    for seq in seqs:
        event, final = next_token(seq, chunk)
        if event is not None:
            events.append(event)
        if final:
            done.append(seq)
    return events, done


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One decode step: its wall-clock start and end, the sequences it served, the chunks it made."""

    start_ns: int
    end_ns: int
    batch: int
    events: tuple[TokenEvent, ...]
    error: str | None = None  # the engine failed: every event is a final one, for every sequence it held


@dataclass(slots=True)
class _Seq:
    key: int
    input_tokens: int
    max_tokens: int
    kv: int
    generated: int = 0
    unsent: int = 0
    joined_ns: int = 0


@dataclass
class LlmSyntheticModel(SequenceQueue[_Seq, _Seq]):
    step_ms: float = 10.0
    per_seq_ms: float = 0.1
    prefill_ms: float = 0.01  # per input token of a joining sequence
    kv_tokens: int = 1_048_576
    max_seqs: int = 256
    chunk: int = 1
    input_tokens: int = 128
    output_tokens: int = 64
    stall_ms: float = 0.0
    stall_after_s: float = 0.0
    name: str = "llm-synthetic"
    device: str = "cpu"
    streaming: bool = True  # the worker serves it through loadgen.worker.stream_serve
    _kv_used: int = field(default=0, init=False, repr=False)
    _first_step: float | None = field(default=None, init=False, repr=False)
    _stalled: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("step_ms", "per_seq_ms", "prefill_ms", "stall_ms", "stall_after_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and 0 <= value <= MAX_MS):
                raise ModelError(f"llm-synthetic: {key} must be between 0 and {MAX_MS:.0f}, not {value}")
        for key in ("kv_tokens", "max_seqs", "chunk", "input_tokens", "output_tokens"):
            if getattr(self, key) < 1:
                raise ModelError(f"llm-synthetic: {key} must be at least 1")

    # -- the Model protocol (the streaming worker uses start/submit/room/close instead of infer) --

    def warmup(self) -> None:
        return None

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        raise ModelError("llm-synthetic streams its replies: it is served by the streaming worker")

    # -- the engine --

    def step_ms_for(self, batch: int, joining_input_tokens: int) -> float:
        """A step's length: the configured curve (without the one-off stall)."""
        return self.step_ms + self.per_seq_ms * batch + self.prefill_ms * joining_input_tokens

    def start(self, emit: Callable[[StepOutput], None]) -> None:
        """Run the engine thread; ``emit`` is called on it after every step."""
        self._thread = threading.Thread(target=self._run, args=(emit,), name="qdeck-llm-engine", daemon=True)
        self._thread.start()

    def submit(self, key: int, input_tokens: int, max_tokens: int) -> None:
        """A request joins the waiting queue (0: the model's default length)."""
        n_in, n_out = input_tokens or self.input_tokens, max_tokens or self.output_tokens
        self._enqueue(_Seq(key, n_in, n_out, n_in + n_out))

    def room(self) -> int:
        """How many more requests it takes now: none while a waiting one is held back by the KV budget."""
        with self._lock:
            if self._waiting and self._active and self._kv_used + self._waiting[0].kv > self.kv_tokens:
                return 0
            return max(self.max_seqs - self._held(), 0)

    def _admit(self, now_ns: int) -> int:
        """At a step boundary (lock held): waiting requests join while they fit; their input tokens."""
        joining = 0
        while self._waiting and len(self._active) < self.max_seqs:
            seq = self._waiting[0]
            if self._kv_used + seq.kv > self.kv_tokens and self._active:
                break
            self._waiting.popleft()
            seq.joined_ns = now_ns
            self._kv_used += seq.kv
            self._active.append(seq)
            joining += seq.input_tokens
        return joining

    def _run(self, emit: Callable[[StepOutput], None]) -> None:
        from loadgen.worker.models import _sleep_precisely

        while True:
            with self._lock:
                if not self._wait_for_work():
                    return
                start = time.time_ns()
                try:
                    joining = self._admit(start)
                    active = list(self._active)
                except Exception as exc:  # never expected; said to every sequence rather than lost
                    emit(self._fail(start, exc))
                    return
            try:
                emit(self._step(start, active, joining, _sleep_precisely))
            except Exception as exc:
                with self._lock:
                    emit(self._fail(start, exc))
                return

    def _step(self, start: int, active: list[_Seq], joining: int, sleep: Callable[[float], None]) -> StepOutput:
        ms = self.step_ms_for(len(active), joining)
        now = time.monotonic()
        if self._first_step is None:
            self._first_step = now
        if self.stall_ms and not self._stalled and now - self._first_step >= self.stall_after_s:
            self._stalled = True
            ms += self.stall_ms
        sleep(ms / 1000)
        end = time.time_ns()
        events, done = next_tokens(active, self.chunk)
        if done:
            with self._lock:
                for seq in done:
                    self._active.remove(seq)
                    self._kv_used -= seq.kv
        return StepOutput(start, end, len(active), tuple(events))

    def _fail(self, start: int, exc: Exception) -> StepOutput:
        """Lock held: every sequence held ends with the error."""
        held = [*self._active, *self._waiting]
        self._active.clear()
        self._waiting.clear()
        self._kv_used = 0
        self._closed = True
        events = tuple(TokenEvent(s.key, 0, s.generated == 0, True, s.joined_ns or start) for s in held)
        return StepOutput(start, time.time_ns(), len(held), events, error=f"{type(exc).__name__}: {exc}"[:500])
