"""The worker's model registry: ``echo``, ``synthetic``, ``llm-synthetic``, ``llm-transformers``, ``minilm`` and a
user's own callable (``pkg.mod:fn``).

A model spec is ``NAME`` or ``NAME:key=value,key=value`` (``synthetic:base_ms=20,per_item_ms=0.5``).
Every model maps a list of inputs to a list of outputs of the same length; ``infer`` runs in a worker thread,
unless the model sets ``blocking = False`` (echo), when the worker calls it on its event loop. A model that sets
``streaming = True`` (``llm-synthetic``, ``llm-transformers``) streams its replies instead
(``loadgen.worker.stream_serve``).
"""

from __future__ import annotations

import importlib
import inspect
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loadgen.errors import ModelError

JITTERS = ("none", "exp", "uniform", "lognormal")
BUILTIN = ("echo", "synthetic", "llm-synthetic", "llm-transformers", "minilm")
MAX_SYNTHETIC_MS = 3_600_000.0  # an hour: longer is a typo (1e300 would overflow the sleep)




class Model(Protocol):
    name: str
    device: str

    def warmup(self) -> None: ...

    def infer(self, inputs: Sequence[Any]) -> list[Any]: ...


@dataclass
class EchoModel:
    """No compute: the reply carries the input back. Measures the broker path alone."""

    name: str = "echo"
    device: str = "cpu"
    blocking: bool = False  # no compute: the worker calls it on its event loop, no thread hop

    def warmup(self) -> None:
        return None

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        return list(inputs)


@dataclass
class SyntheticModel:
    """Service time ``base_ms + per_item_ms * batch`` (+ jitter), spent sleeping as a GPU's host thread waits.

    ``stall_ms`` with ``stall_after_s`` injects one stall that long, that many seconds after the first batch
    (the coordinated-omission demonstration). Outputs are the inputs' lengths.
    """

    base_ms: float = 5.0
    per_item_ms: float = 0.0
    jitter: str = "none"
    jitter_ms: float = 0.0
    stall_ms: float = 0.0
    stall_after_s: float = 0.0
    seed: int | None = None
    name: str = "synthetic"
    device: str = "cpu"
    _rng: random.Random = field(init=False, repr=False)
    _first: float | None = field(default=None, init=False, repr=False)
    _stalled: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.jitter not in JITTERS:
            raise ModelError(f"synthetic: jitter must be one of {', '.join(JITTERS)}, not {self.jitter!r}")
        for key in ("base_ms", "per_item_ms", "jitter_ms", "stall_ms", "stall_after_s"):
            value = getattr(self, key)
            if value < 0:
                raise ModelError("synthetic: times must not be negative")
            if not (math.isfinite(value) and value <= MAX_SYNTHETIC_MS):
                raise ModelError(f"synthetic: {key} must be a finite number up to {MAX_SYNTHETIC_MS:.0f}, not {value}")
        self._rng = random.Random(self.seed)

    def warmup(self) -> None:
        return None

    def service_s(self, batch: int) -> float:
        ms = self.base_ms + self.per_item_ms * batch
        with self._lock:
            if self.jitter == "exp" and self.jitter_ms > 0:
                ms += self._rng.expovariate(1.0 / self.jitter_ms)
            elif self.jitter == "uniform":
                ms += self._rng.uniform(0.0, 2.0 * self.jitter_ms)
            elif self.jitter == "lognormal" and self.jitter_ms > 0:
                ms += self._rng.lognormvariate(math.log(self.jitter_ms), 0.5)
            now = time.monotonic()
            if self._first is None:
                self._first = now
            if self.stall_ms and not self._stalled and now - self._first >= self.stall_after_s:
                self._stalled = True
                ms += self.stall_ms
        return ms / 1000.0

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        _sleep_precisely(self.service_s(len(inputs)))
        return [len(x) if isinstance(x, str | list | dict) else 0 for x in inputs]


def _sleep_precisely(seconds: float) -> None:
    """time.sleep overshoots by up to ~0.1 ms on Linux; spin the last 0.2 ms so service times are what was asked."""
    end = time.perf_counter() + seconds
    if seconds > 0.0003:
        time.sleep(seconds - 0.0002)
    while time.perf_counter() < end:
        pass


@dataclass
class CallableModel:
    """A user's ``list[input] -> list[output]`` callable, loaded from ``pkg.mod:fn``."""

    fn: Callable[[list[Any]], Sequence[Any]]
    name: str
    device: str = "cpu"

    def warmup(self) -> None:
        return None

    def infer(self, inputs: Sequence[Any]) -> list[Any]:
        out = list(self.fn(list(inputs)))
        if len(out) != len(inputs):
            raise ValueError(f"model {self.name} returned {len(out)} outputs for {len(inputs)} inputs")
        return out


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:k=v,...`` → (name, params). An import path ``pkg.mod:fn`` has no ``=`` and stays whole."""
    head, sep, rest = spec.partition(":")
    if not sep or ("=" not in rest and head.strip() not in BUILTIN):
        return spec.strip(), {}
    name = head
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError(f"model parameter {item!r} is not key=value")
        params[key.strip()] = value.strip()
    return name.strip(), params


def _typed(cls_name: str, params: dict[str, str], fields: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in fields:
            raise ModelError(f"{cls_name}: unknown parameter {key!r} (known: {', '.join(sorted(fields))})")
        try:
            out[key] = fields[key](raw)
        except ValueError:
            kind = getattr(fields[key], "__name__", "value").lstrip("_")
            raise ModelError(f"{cls_name}: {key}={raw!r} is not a {kind}") from None
    return out


_SYNTHETIC_FIELDS: dict[str, Callable[[str], Any]] = {
    "base_ms": float, "per_item_ms": float, "jitter": str, "jitter_ms": float, "stall_ms": float,
    "stall_after_s": float, "seed": int}


_LLM_SYNTHETIC_FIELDS: dict[str, Callable[[str], Any]] = {
    "step_ms": float, "per_seq_ms": float, "prefill_ms": float, "kv_tokens": int, "max_seqs": int, "chunk": int,
    "input_tokens": int, "output_tokens": int, "stall_ms": float, "stall_after_s": float}


_LLM_TRANSFORMERS_FIELDS: dict[str, Callable[[str], Any]] = {
    "size": str, "max_seqs": int, "chunk": int, "input_tokens": int, "output_tokens": int, "seed": int, "dtype": str}


def load_model(spec: str, device: str = "auto") -> Model:
    """Build the model named by ``spec`` for ``device`` (auto | cpu | cuda); raise ``ModelError`` with one line."""
    name, params = parse_spec(spec)
    if name == "echo":
        _typed("echo", params, {})
        return EchoModel()
    if name == "synthetic":
        return SyntheticModel(**_typed("synthetic", params, _SYNTHETIC_FIELDS))
    if name == "llm-synthetic":
        from loadgen.worker.models.llm_synthetic import LlmSyntheticModel

        return LlmSyntheticModel(**_typed("llm-synthetic", params, _LLM_SYNTHETIC_FIELDS))
    if name == "llm-transformers":
        from loadgen.worker.models.llm_transformers import LlmTransformersModel

        return LlmTransformersModel(device=device, **_typed("llm-transformers", params, _LLM_TRANSFORMERS_FIELDS))
    if name == "minilm":
        from loadgen.worker.models.minilm import MiniLMModel

        return MiniLMModel.load(device=device, **_typed("minilm", params, {"normalize": _bool, "encoding": str}))
    if ":" in name:
        return _import_callable(name)
    raise ModelError(f"unknown model {name!r}: use echo, synthetic, llm-synthetic, llm-transformers, minilm or an "
                     "import path pkg.mod:fn")


def _bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _import_callable(spec: str) -> Model:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import model module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelError(f"model {spec!r}: {module_name} has no attribute {attr!r}")
    if not callable(obj):
        raise ModelError(f"model {spec!r} is not callable")
    if inspect.isgeneratorfunction(obj):  # yields a request's chunks: a streaming model
        from loadgen.worker.models.llm_callable import MAX_SEQS, CallableStreamModel

        return CallableStreamModel(fn=obj, name=spec, max_seqs=getattr(obj, "max_seqs", MAX_SEQS))
    warm = getattr(obj, "warmup", None)
    model = CallableModel(fn=obj, name=spec)
    if callable(warm):
        model.warmup = warm  # type: ignore[method-assign]
    return model
