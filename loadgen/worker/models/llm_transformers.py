"""``llm-transformers[:k=v,...]``: a real Llama-style causal LM from Hugging Face ``transformers`` with random weights.

As vLLM's ``--load-format dummy`` does for benchmarking, the weights are randomly initialised from a config (seeded),
so the worker does the compute of generation with nothing downloaded: no checkpoint, no tokenizer. A request's
prompt is ``input_tokens`` seeded random ids in the vocabulary; generation is greedy (argmax) and never stops early:
every request gets exactly its ``max_tokens``.

Sizes (``size=``), all Llama-style (RMSNorm, rotary positions, SwiGLU MLP, untied output head):

======  ======  ======  =====  =============  ======  =========  ===========
size    layers  hidden  heads  KV heads       MLP     vocab      parameters
======  ======  ======  =====  =============  ======  =========  ===========
tiny    2       64      4      4              256     1 000      0.26 M
small   8       512     8      8              1 408   32 000     58.5 M
base    16      1 024   16     4 (GQA)        2 816   32 000     245.9 M
======  ======  ======  =====  =============  ======  =========  ===========

tiny holds 2 048 positions (input + output tokens), small and base 4 096; a longer request is refused with an error
reply (as vLLM refuses a prompt past the model's context), the others go on.

The engine does continuous batching. One engine thread runs steps back to back while any sequence is active; at
each step boundary waiting requests join (first come, first served, at most ``max_seqs`` at once). A step is one
decode forward pass over the running batch (one token per sequence, its KV cache passed as ``past_key_values``,
``cache`` in transformers 5) followed by the prefill of the sequences joining in it (one forward pass per group of
equal prompt length, each into its own cache), which gives their first token; the joiners' caches are then
left-padded to a common length and merged into the running batch's cache (the attention mask hides the padding;
position ids stay each sequence's own). Finished sequences leave the cache at the end of the step and the padding
no sequence needs is cut off. The first token goes out at once as chunk 0; after it a chunk every ``chunk`` tokens,
the last ones in the final chunk.

A model exception ends every stream held (running and waiting) with an error, the cache is dropped and the engine
serves on. ``device``: ``auto`` is CUDA when torch sees one; ``dtype``: ``auto`` is float32 on CPU and bfloat16 on
CUDA (float16 and bfloat16 only on CUDA). ``seed`` fixes the weights and the prompts.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from loadgen.errors import ModelError
from loadgen.worker.models.llm_synthetic import StepOutput, TokenEvent, next_tokens
from loadgen.worker.models.sequence_queue import SequenceQueue

NAME = "llm-transformers"
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
             "intermediate_size": 256, "vocab_size": 1000, "max_position_embeddings": 2048},
    "small": {"num_hidden_layers": 8, "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 8,
              "intermediate_size": 1408, "vocab_size": 32000, "max_position_embeddings": 4096},
    "base": {"num_hidden_layers": 16, "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
             "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 4096},
}
DTYPES = ("auto", "float32", "float16", "bfloat16")
WARMUP_TOKENS = 8


@dataclass(slots=True, eq=False)
class _Seq:
    key: int
    input_tokens: int
    max_tokens: int
    generated: int = 0
    unsent: int = 0
    joined_ns: int = 0


@dataclass(slots=True)
class _Batch:
    """The running sequences and their KV cache, row i of every tensor being ``seqs[i]``; the cache is left-padded."""

    seqs: list[_Seq] = field(default_factory=list)
    cache: Any = None  # transformers.DynamicCache
    mask: Any = None  # [batch, cache length]: 1 for a real position, 0 for padding
    pos: Any = None  # [batch]: each sequence's next position (its real length)
    last: Any = None  # [batch]: each sequence's last token, the next decode step's input


@dataclass
class LlmTransformersModel(SequenceQueue[_Seq, _Seq]):
    size: str = "tiny"
    max_seqs: int = 32
    chunk: int = 1
    input_tokens: int = 128
    output_tokens: int = 64
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    record: bool = False  # keep each request's prompt and generated ids in ``tokens`` (tests)
    name: str = NAME
    streaming: bool = True  # the worker serves it through loadgen.worker.stream_serve
    module: Any = field(default=None, init=False, repr=False)  # the transformers LlamaForCausalLM
    tokens: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict, init=False, repr=False)
    _batch: _Batch = field(default_factory=_Batch, init=False, repr=False)
    _jobs: queue.SimpleQueue[tuple[Callable[[], Any] | None, Future[Any] | None]] = field(
        default_factory=queue.SimpleQueue, init=False, repr=False)
    _torch: Any = field(default=None, init=False, repr=False)
    _cache_cls: Any = field(default=None, init=False, repr=False)
    _cache_kw: str = field(default="past_key_values", init=False, repr=False)
    _gen: Any = field(default=None, init=False, repr=False)
    _max_positions: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size not in SIZES:
            raise ModelError(f"{NAME}: size must be one of {', '.join(SIZES)}, not {self.size!r}")
        if self.dtype not in DTYPES:
            raise ModelError(f"{NAME}: dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        for key in ("max_seqs", "chunk", "input_tokens", "output_tokens"):
            if getattr(self, key) < 1:
                raise ModelError(f"{NAME}: {key} must be at least 1")
        self._max_positions = SIZES[self.size]["max_position_embeddings"]
        if self.input_tokens + self.output_tokens > self._max_positions:
            raise ModelError(f"{NAME}: input_tokens + output_tokens must be at most {self._max_positions} "
                             f"(the positions of size={self.size})")
        self._load()

    def _load(self) -> None:
        from loadgen.worker.models.minilm import quiet_offline_hub, resolve_device

        quiet_offline_hub()
        try:
            import torch
            from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
        except ImportError as exc:
            raise ModelError(f"{NAME} needs the inference extra: pip install 'qdeck[inference]' "
                             f"({exc.name or exc} is not installed)") from None
        self.device = resolve_device(self.device)
        on_cuda = self.device.startswith("cuda")
        dtype = self.dtype if self.dtype != "auto" else ("bfloat16" if on_cuda else "float32")
        if dtype != "float32" and not on_cuda:
            raise ModelError(f"{NAME}: dtype={dtype} needs --device cuda (on CPU use float32)")
        config = LlamaConfig(**SIZES[self.size], bos_token_id=None, eos_token_id=None, pad_token_id=None)
        build: Any = LlamaForCausalLM  # (its decorated __init__ confuses type checkers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = build(config)
        self.module = module.to(device=self.device, dtype=getattr(torch, dtype)).eval()
        self._torch, self._cache_cls = torch, DynamicCache
        self._cache_kw = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
        self._gen = torch.Generator().manual_seed(self.seed)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    # -- the Model protocol (the streaming worker uses start/submit/room/close instead of infer) --

    def warmup(self) -> None:
        """A short prefill and one decode step on the engine thread (torch's lazy set-up, one OpenMP team)."""
        self._on_engine(self._warm).result()

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        raise ModelError(f"{NAME} streams its replies: it is served by the streaming worker")

    # -- the streaming model protocol --

    def start(self, emit: Callable[[StepOutput], None]) -> None:
        """Run the engine on its thread; ``emit`` is called there after every step."""
        self._on_engine(lambda: self._run(emit))

    def submit(self, key: int, input_tokens: int, max_tokens: int) -> None:
        """A request joins the waiting queue (0: the model's default length)."""
        self._enqueue(_Seq(key, input_tokens or self.input_tokens, max_tokens or self.output_tokens))

    def _join_engine(self) -> None:
        if self._thread is not None:
            self._jobs.put((None, None))  # the engine thread serves jobs (warm-up, the engine): the last one
        super()._join_engine()

    # -- the engine thread: warm-up and the engine run on the same thread --

    def _on_engine(self, fn: Callable[[], Any]) -> Future[Any]:
        done: Future[Any] = Future()
        self._jobs.put((fn, done))
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve_jobs, name="qdeck-llm-engine", daemon=True)
            self._thread.start()
        return done

    def _serve_jobs(self) -> None:
        while True:
            fn, done = self._jobs.get()
            if fn is None or done is None:
                return
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller of warmup
                done.set_exception(exc)

    def _warm(self) -> None:
        torch = self._torch
        with torch.inference_mode():
            ids = torch.zeros((1, WARMUP_TOKENS), dtype=torch.long, device=self.device)
            cache = self._cache_cls()
            first = self._forward(ids, torch.ones_like(ids), None, cache).argmax(-1)
            mask = torch.ones((1, WARMUP_TOKENS + 1), dtype=torch.long, device=self.device)
            self._forward(first[:, None], mask, torch.full((1, 1), WARMUP_TOKENS, device=self.device), cache)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()

    def _run(self, emit: Callable[[StepOutput], None]) -> None:
        torch = self._torch
        while True:
            with self._lock:
                if not self._wait_for_work():
                    return
                start = time.time_ns()
                joining, refused = self._admit(start)
            if refused:
                emit(self._refuse(start, refused))
            if not joining and not self._batch.seqs:
                continue
            try:
                with torch.inference_mode():
                    step, done = self._step(start, joining)
                emit(step)
                if done:
                    with torch.inference_mode():
                        self._leave(done)
            except Exception as exc:
                with self._lock:
                    failed = self._fail(start, exc)
                emit(failed)

    def _admit(self, now_ns: int) -> tuple[list[_Seq], list[_Seq]]:
        """At a step boundary (lock held): waiting requests join while there is room; those too long are refused."""
        joining: list[_Seq] = []
        refused: list[_Seq] = []
        while self._waiting and len(self._active) < self.max_seqs:
            seq = self._waiting.popleft()
            seq.joined_ns = now_ns
            if seq.input_tokens + seq.max_tokens > self._max_positions:
                refused.append(seq)
                continue
            self._active.append(seq)
            joining.append(seq)
        return joining, refused

    def _refuse(self, start: int, refused: list[_Seq]) -> StepOutput:
        events = tuple(TokenEvent(s.key, 0, True, True, start) for s in refused)
        return StepOutput(start, time.time_ns(), len(refused), events,
                          error=f"request too long: input + output tokens must be at most {self._max_positions} "
                                f"for {NAME} size={self.size}")

    def _step(self, start: int, joining: list[_Seq]) -> tuple[StepOutput, list[_Seq]]:
        """One decode pass over the running batch, then the joiners' prefill: a token for every sequence."""
        made: list[tuple[_Seq, int]] = []
        if self._batch.seqs:
            made += zip(self._batch.seqs, self._decode(), strict=True)
        groups: dict[int, list[_Seq]] = {}
        for seq in joining:
            groups.setdefault(seq.input_tokens, []).append(seq)
        joined = [self._prefill(group) for group in groups.values()]
        for part in joined:
            made += zip(part.seqs, part.last.tolist(), strict=True)
        if joined:
            self._join(joined)
        end = time.time_ns()
        if self.record:
            for seq, token in made:
                self.tokens[seq.key][1].append(token)
        events, done = next_tokens((seq for seq, _token in made), self.chunk)
        if done:
            with self._lock:
                for seq in done:
                    self._active.remove(seq)
        return StepOutput(start, end, len(made), tuple(events)), done

    def _forward(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        """The last position's logits: [batch, vocab]."""
        out = self.module(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                          **{self._cache_kw: cache})
        return out.logits[:, -1]

    def _decode(self) -> list[int]:
        torch, b = self._torch, self._batch
        mask = torch.cat([b.mask, b.mask.new_ones((len(b.seqs), 1))], dim=1)
        b.last = self._forward(b.last[:, None], mask, b.pos[:, None], b.cache).argmax(-1)
        b.mask, b.pos = mask, b.pos + 1
        return list(b.last.tolist())

    def _prefill(self, group: list[_Seq]) -> _Batch:
        """The group's prompts (all one length) in one pass into a cache of their own: a batch of them alone."""
        torch = self._torch
        n = group[0].input_tokens
        ids = torch.randint(self.module.config.vocab_size, (len(group), n), generator=self._gen).to(self.device)
        if self.record:
            for seq, row in zip(group, ids.tolist(), strict=True):
                self.tokens[seq.key] = (row, [])
        cache = self._cache_cls()
        mask = torch.ones_like(ids)
        first = self._forward(ids, mask, None, cache).argmax(-1)
        pos = torch.full((len(group),), n, dtype=torch.long, device=self.device)
        return _Batch(list(group), cache, mask, pos, first)

    def _join(self, parts: list[_Batch]) -> None:
        """The running batch and the joiners' batches as one: each cache left-padded to the longest, concatenated."""
        torch = self._torch
        if self._batch.seqs:
            parts = [self._batch, *parts]
        if len(parts) == 1:
            self._batch = parts[0]
            return
        width = max(p.mask.shape[1] for p in parts)
        layers = zip(*(_kv(p.cache) for p in parts), strict=True)
        kv = [(torch.cat([_pad_left(k, width) for k, _v in layer]), torch.cat([_pad_left(v, width) for _k, v in layer]))
              for layer in layers]
        self._batch = _Batch([s for p in parts for s in p.seqs], self._cache_cls(kv, config=self.module.config),
                             torch.cat([_pad_left(p.mask, width) for p in parts]),
                             torch.cat([p.pos for p in parts]), torch.cat([p.last for p in parts]))

    def _leave(self, done: list[_Seq]) -> None:
        """Finished sequences leave the batch; the left padding that no sequence needs any more is cut off."""
        torch, b = self._torch, self._batch
        gone = set(map(id, done))
        keep = [i for i, seq in enumerate(b.seqs) if id(seq) not in gone]
        if not keep:
            self._batch = _Batch()
            return
        rows = torch.tensor(keep, device=self.device)
        pos = b.pos[rows]
        cut = b.mask.shape[1] - int(pos.max())  # real tokens are on the right: the longest still needs this many
        b.cache = self._cache_cls([(k[rows][:, :, cut:], v[rows][:, :, cut:]) for k, v in _kv(b.cache)],
                                  config=self.module.config)
        b.seqs = [b.seqs[i] for i in keep]
        b.mask, b.pos, b.last = b.mask[rows][:, cut:], pos, b.last[rows]

    def _fail(self, start: int, exc: Exception) -> StepOutput:
        """Lock held: every sequence held ends with the error; the cache is dropped and the engine serves on."""
        held = [*self._active, *self._waiting]
        self._active.clear()
        self._waiting.clear()
        self._batch = _Batch()
        events = tuple(TokenEvent(s.key, 0, s.generated == 0, True, s.joined_ns or start) for s in held)
        return StepOutput(start, time.time_ns(), len(held), events, error=f"{type(exc).__name__}: {exc}"[:500])


def _kv(cache: Any) -> list[tuple[Any, Any]]:
    """A DynamicCache's (keys, values) per layer, each [batch, kv heads, length, head dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _pad_left(t: Any, width: int) -> Any:
    """Zeros on the left of the sequence axis (dim 2 of a KV tensor, dim 1 of a mask) up to ``width``."""
    import torch.nn.functional as F

    missing = width - t.shape[2 if t.dim() == 4 else 1]
    if missing == 0:
        return t
    return F.pad(t, (0, 0, missing, 0) if t.dim() == 4 else (missing, 0))
