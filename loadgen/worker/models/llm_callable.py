"""A user's streaming model: ``pkg.mod:fn`` where ``fn`` is a generator function (``def fn(request): ... yield``).

``fn`` is called once per request with a dict ``{"payload": …, "input_tokens": N, "max_tokens": M}`` (the
envelope's fields; 0 when the run gave no lengths) and yields the request's chunks in order. Each item yielded is
one chunk: an ``int`` is its number of tokens, a list or tuple (token ids) counts its length, anything else (a
piece of text) counts as one token. A stream ends when its tokens reach ``max_tokens`` (the chunk that reaches it
is the final one, as a server stops at ``max_tokens``; ``fn`` is then closed) or when ``fn`` returns (an
end-of-sequence: a final chunk of 0 tokens follows the last one, in the next step). A stream with no ``max_tokens``
ends only when ``fn`` returns, or at ``MAX_TOKENS``.

Scheduling is continuous batching by turns: one engine thread runs steps back to back while any stream is active;
a step advances every active stream by one item, and new requests join at step boundaries, at most ``max_seqs``
at once (``fn.max_seqs`` when the function sets it, else ``MAX_SEQS``). An exception raised by ``fn`` ends that
request's stream with the error (a dead letter with the reason), and the others go on. Time is the user's: what
``fn`` spends computing is the step's length.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from loadgen.envelope import Request
from loadgen.errors import ModelError
from loadgen.worker.models.llm_synthetic import StepOutput, TokenEvent
from loadgen.worker.models.sequence_queue import SequenceQueue

MAX_SEQS = 64
MAX_TOKENS = 1_000_000  # a stream with no max_tokens stops here: a generator that never returns is a bug


@dataclass(slots=True)
class _Stream:
    key: int
    chunks: Iterator[Any]
    max_tokens: int
    joined_ns: int = 0
    tokens: int = 0
    parts: int = 0


def chunk_tokens(item: Any) -> int:
    """The tokens one yielded item stands for: an int is a count, a list or tuple its length, else one."""
    if isinstance(item, bool):
        return 1
    if isinstance(item, int):
        if item < 0:
            raise ValueError(f"a chunk of {item} tokens")
        return item
    if isinstance(item, list | tuple):
        return len(item)
    return 1


@dataclass
class CallableStreamModel(SequenceQueue[tuple[int, Request], _Stream]):
    fn: Callable[[dict[str, Any]], Generator[Any, None, None]]
    name: str
    max_seqs: int = MAX_SEQS
    device: str = "cpu"
    streaming: bool = True
    _joining: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.max_seqs, int) or self.max_seqs < 1:
            raise ModelError(f"model {self.name}: max_seqs must be a whole number of at least 1, not "
                             f"{self.max_seqs!r}")

    def warmup(self) -> None:
        return None

    def infer(self, inputs: Any) -> list[Any]:
        raise ModelError(f"model {self.name} streams its replies: it is served by the streaming worker")

    def start(self, emit: Callable[[StepOutput], None]) -> None:
        self._thread = threading.Thread(target=self._run, args=(emit,), name="qdeck-user-stream", daemon=True)
        self._thread.start()

    def submit(self, key: int, input_tokens: int, max_tokens: int) -> None:
        self.submit_request(key, Request("", 0, 0, 0, "", "", None, input_tokens, max_tokens))

    def submit_request(self, key: int, request: Request) -> None:
        """A request joins the waiting queue; ``fn`` sees its payload and lengths."""
        self._enqueue((key, request))

    def _held(self) -> int:
        """(lock held) Streams running, joining (taken from the queue, their generators being made) or waiting."""
        return len(self._active) + self._joining + len(self._waiting)

    def close(self) -> None:
        super().close()
        for stream in self._active:
            _close(stream.chunks)

    def _run(self, emit: Callable[[StepOutput], None]) -> None:
        while True:
            with self._lock:
                if not self._wait_for_work():
                    return
                start = time.time_ns()
                joining: list[tuple[int, Request]] = []
                while self._waiting and len(self._active) + len(joining) < self.max_seqs:
                    joining.append(self._waiting.popleft())
                self._joining = len(joining)
            failed: list[StepOutput] = []
            for key, req in joining:
                try:
                    chunks = iter(self.fn({"payload": req.payload, "input_tokens": req.input_tokens,
                                           "max_tokens": req.max_tokens}))
                except Exception as exc:
                    failed.append(_failure(key, start, exc))
                    with self._lock:
                        self._joining -= 1
                    continue
                with self._lock:
                    self._active.append(_Stream(key, chunks, req.max_tokens or MAX_TOKENS, start))
                    self._joining -= 1
            events, batch = self._step(start, failed)
            for out in failed:
                emit(out)
            if events:
                emit(StepOutput(start, time.time_ns(), batch, tuple(events)))

    def _step(self, start: int, failed: list[StepOutput]) -> tuple[list[TokenEvent], int]:
        """Advance every active stream by one item (on the engine thread)."""
        events: list[TokenEvent] = []
        batch = len(self._active)
        done: list[_Stream] = []
        for s in self._active:
            try:
                item = next(s.chunks)
                tokens = chunk_tokens(item)
            except StopIteration:
                events.append(TokenEvent(s.key, 0, s.parts == 0, True, s.joined_ns))
                done.append(s)
                continue
            except Exception as exc:
                failed.append(_failure(s.key, start, exc, s.parts == 0, s.joined_ns))
                done.append(s)
                continue
            tokens = min(tokens, s.max_tokens - s.tokens)
            s.tokens += tokens
            final = s.tokens >= s.max_tokens
            events.append(TokenEvent(s.key, tokens, s.parts == 0, final, s.joined_ns))
            s.parts += 1
            if final:
                _close(s.chunks)
                done.append(s)
        if done:
            gone = {id(s) for s in done}
            with self._lock:
                self._active = [s for s in self._active if id(s) not in gone]
        return events, batch


def _failure(key: int, start: int, exc: Exception, first: bool = True, joined_ns: int = 0) -> StepOutput:
    event = TokenEvent(key, 0, first, True, joined_ns or start)
    return StepOutput(start, time.time_ns(), 1, (event,), error=f"{type(exc).__name__}: {exc}"[:500])


def _close(chunks: Iterator[Any]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):  # a generator's own cleanup failing must not stop the engine
            close()
