"""LLM-shaped load: token lengths per request from a seeded distribution, and the run's per-request objectives.

A length is ``fixed:N`` (or just ``N``), ``uniform:LOW,HIGH`` (integers, both ends included) or ``normal:MEAN,SD``
(rounded, and held to 1 ... ``MAX_TOKENS``). Each distribution draws from its own ``random.Random`` seeded from the
run's seed (input and output apart), in send order, so one seed gives one sequence of lengths, as it gives one
sequence of arrivals. Or the lengths come from a dataset file (``loadgen.run.llm_dataset``), its rows shuffled by the
same seed. ``max_tokens`` caps every output length. Every request of the run carries its ``input_tokens`` and
``max_tokens`` in the envelope.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadgen.errors import PlanError
from loadgen.results.objectives import Objectives

if TYPE_CHECKING:
    from loadgen.run.llm_dataset import Dataset, DatasetSampler

MAX_TOKENS = 1_000_000
KINDS = ("fixed", "uniform", "normal")
_STREAMS = {"input": 0x1A2B_0001, "output": 0x1A2B_0002, "dataset": 0x1A2B_0003}  # each draw's seed differs


@dataclass(frozen=True, slots=True)
class Lengths:
    """A token-length distribution: ``kind`` and its parameters (``fixed``: n; ``uniform``: low, high;
    ``normal``: mean, sd)."""

    kind: str
    a: float
    b: float = 0.0

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"

    def sampler(self, seed: int, stream: str) -> LengthSampler:
        return LengthSampler(self, stream_rng(seed, stream))


def stream_rng(seed: int, stream: str) -> random.Random:
    """The run's random source for one draw (input lengths, output lengths, dataset rows)."""
    return random.Random(seed * 1_000_003 + _STREAMS[stream])


@dataclass(slots=True)
class LengthSampler:
    lengths: Lengths
    rng: random.Random

    def next(self) -> int:
        d = self.lengths
        if d.kind == "fixed":
            return int(d.a)
        if d.kind == "uniform":
            return self.rng.randint(int(d.a), int(d.b))
        return min(max(round(self.rng.gauss(d.a, d.b)), 1), MAX_TOKENS)


def parse_lengths(text: str, what: str) -> Lengths:
    """``fixed:N`` | ``N`` | ``uniform:LOW,HIGH`` | ``normal:MEAN,SD``; ``PlanError`` in one line otherwise."""
    raw = text.strip()
    kind, sep, rest = raw.partition(":")
    if not sep:
        kind, rest = "fixed", raw
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise PlanError(f"{what} {text!r}: unknown distribution {kind!r} (use fixed:N, uniform:LOW,HIGH or "
                        "normal:MEAN,SD)")
    parts = [p.strip() for p in rest.split(",")]
    want = 1 if kind == "fixed" else 2
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise PlanError(f"{what} {text!r}: {rest!r} is not {want} number{'s' if want > 1 else ''}") from None
    if len(numbers) != want or not all(0 <= n <= MAX_TOKENS for n in numbers):
        raise PlanError(f"{what} {text!r}: {kind} takes {want} number{'s' if want > 1 else ''} between 0 and "
                        f"{MAX_TOKENS:,}")
    if kind in ("fixed", "uniform") and not all(n.is_integer() for n in numbers):
        raise PlanError(f"{what} {text!r}: token counts are whole numbers")
    if kind == "fixed" and numbers[0] < 1:
        raise PlanError(f"{what} {text!r}: at least 1 token")
    if kind == "uniform" and not 1 <= numbers[0] <= numbers[1]:
        raise PlanError(f"{what} {text!r}: uniform needs 1 ≤ LOW ≤ HIGH")
    if kind == "normal" and numbers[0] < 1:
        raise PlanError(f"{what} {text!r}: the mean must be at least 1 token")
    return Lengths(kind, *numbers)


def parse_max_tokens(value: Any, what: str) -> int:
    """``--max-tokens`` / ``max_tokens``: a whole number of tokens, 1 ... ``MAX_TOKENS``; ``PlanError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise PlanError(f"{what} {value!r}: a whole number of tokens from 1 to {MAX_TOKENS:,}")
    return value


@dataclass(slots=True)
class LlmLoad:
    """What makes a run LLM-shaped: the token lengths its requests ask for (distributions, or a dataset's rows;
    None: the worker's defaults), the cap on output lengths, and the per-request objectives goodput and attainment
    are judged by. A dataset replaces both distributions (``loadgen.run.plan`` refuses the two together)."""

    input_tokens: Lengths | None = None
    output_tokens: Lengths | None = None
    objectives: Objectives = field(default_factory=Objectives)
    seed: int = 1
    dataset: Dataset | None = None
    max_tokens: int | None = None
    _inputs: LengthSampler | None = None
    _outputs: LengthSampler | None = None
    _rows: DatasetSampler | None = None

    def __post_init__(self) -> None:
        if self.input_tokens is not None:
            self._inputs = self.input_tokens.sampler(self.seed, "input")
        if self.output_tokens is not None:
            self._outputs = self.output_tokens.sampler(self.seed, "output")
        if self.dataset is not None:
            self._rows = self.dataset.sampler(stream_rng(self.seed, "dataset"))

    def next_lengths(self) -> tuple[int, int]:
        """The next request's (input tokens, max tokens); 0 where no distribution was given."""
        if self._rows is not None:
            n_in, n_out = self._rows.next()
        else:
            n_in = self._inputs.next() if self._inputs is not None else 0
            n_out = self._outputs.next() if self._outputs is not None else 0
        return n_in, min(n_out, self.max_tokens) if self.max_tokens is not None else n_out

    def facts(self) -> dict[str, object]:
        def shown(d: Lengths | None) -> str | None:
            return f"dataset {self.dataset.name}" if self.dataset is not None else d.describe() if d else None

        return {"input_tokens": shown(self.input_tokens), "output_tokens": shown(self.output_tokens),
                "objectives": self.objectives.texts,
                "dataset": self.dataset.facts() if self.dataset is not None else None, "max_tokens": self.max_tokens}


def llm_to_wire(llm: LlmLoad) -> dict[str, Any]:
    """``llm`` as plain JSON data for an agent of a distributed run (``llm_from_wire``): the distributions, the
    objectives' texts, the cap, and a dataset's rows themselves (an agent need not have the file)."""
    ds = llm.dataset
    return {"input_tokens": _lengths_wire(llm.input_tokens), "output_tokens": _lengths_wire(llm.output_tokens),
            "objectives": llm.objectives.texts, "max_tokens": llm.max_tokens,
            "dataset": None if ds is None else {"path": ds.path, "sha256": ds.sha256, "format": ds.format,
                                                "rows": [list(row) for row in ds.rows], "skipped": dict(ds.skipped)}}


def llm_from_wire(doc: Any, seed: int) -> LlmLoad | None:
    """The ``LlmLoad`` an agent runs its share with (None: a plain run), drawing from ``seed``, its share's own.
    ``PlanError`` (one line) for a document that is not one ``llm_to_wire`` wrote."""
    if doc is None:
        return None
    from loadgen.run.llm_dataset import Dataset

    try:
        ds = doc["dataset"]
        dataset = None if ds is None else Dataset(str(ds["path"]), str(ds["sha256"]), str(ds["format"]),
                                                  tuple((int(a), int(b)) for a, b in ds["rows"]),
                                                  {str(k): int(v) for k, v in ds["skipped"].items()})
        return LlmLoad(_lengths_from_wire(doc["input_tokens"]), _lengths_from_wire(doc["output_tokens"]),
                       Objectives.parse(list(doc["objectives"])), seed, dataset,
                       None if doc["max_tokens"] is None else int(doc["max_tokens"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"not an LLM load from a qdeck master: {type(exc).__name__}: {exc}"[:300]) from None


def _lengths_wire(lengths: Lengths | None) -> list[Any] | None:
    return None if lengths is None else [lengths.kind, lengths.a, lengths.b]


def _lengths_from_wire(doc: Any) -> Lengths | None:
    if doc is None:
        return None
    kind, a, b = doc
    if kind not in KINDS:
        raise ValueError(f"unknown distribution {kind!r}")
    return Lengths(str(kind), float(a), float(b))


def llm_load(input_tokens: str | None, output_tokens: str | None, objectives: list[str], seed: int) -> LlmLoad | None:
    """The run's LLM settings from the CLI's texts; None when none was given (a plain run)."""
    if input_tokens is None and output_tokens is None and not objectives:
        return None
    return LlmLoad(parse_lengths(input_tokens, "--input-tokens") if input_tokens is not None else None,
                   parse_lengths(output_tokens, "--output-tokens") if output_tokens is not None else None,
                   Objectives.parse(objectives), seed)
