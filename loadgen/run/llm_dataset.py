"""Dataset files of token lengths for LLM-shaped load (``--dataset FILE``): one (input, output) token count a row.

Formats, told apart by the content:

- CSV, or TSV when the header line holds a tab: a header naming an input column (``input_tokens``,
  ``prompt_tokens`` or ``prompt_len``) and an output column (``output_tokens``, ``completion_tokens`` or
  ``output_len``); other columns are ignored;
- JSONL: an object a line with those keys;
- ShareGPT, a JSON list or JSONL of ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}``:
  text, not counts. The prompt is the first human turn (``human`` or ``user``), the output the first gpt turn
  (``gpt`` or ``assistant``) after it, as vLLM's ``benchmark_serving`` pairs the first two turns; each is counted
  by ``estimate_tokens``. A conversation with fewer than two turns, with no human turn followed by a gpt turn, or
  whose prompt or reply is empty, is skipped and counted under its reason.

Every length is a whole number from 1 to ``MAX_TOKENS``; anything else, a file that cannot be read or one with no
usable row is a ``PlanError`` naming the file (and the line). A run draws the rows shuffled by its seed: each pass
over the file is a new permutation, so every row is used once before any is used again (``DatasetSampler``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.errors import PlanError
from loadgen.run.llm_load import MAX_TOKENS

INPUT_KEYS = ("input_tokens", "prompt_tokens", "prompt_len")
OUTPUT_KEYS = ("output_tokens", "completion_tokens", "output_len")
HUMAN, GPT = ("human", "user"), ("gpt", "assistant")
CHARS_PER_TOKEN = 4
ESTIMATE_RULE = f"estimated from the text: ⌈characters / {CHARS_PER_TOKEN}⌉ (no tokenizer)"


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` without a tokenizer: ⌈characters / 4⌉ of the text stripped of its outer whitespace
    (OpenAI's rule of thumb for English text: a token is about 4 characters); 0 for empty text."""
    return math.ceil(len(text.strip()) / CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Dataset:
    path: str
    sha256: str
    format: str  # csv | tsv | jsonl | sharegpt
    rows: tuple[tuple[int, int], ...]
    skipped: dict[str, int] = field(default_factory=dict)  # ShareGPT conversations left out, by reason

    @property
    def name(self) -> str:
        return Path(self.path).name

    def facts(self) -> dict[str, Any]:
        """What summary.json's llm section records of the dataset."""
        return {"file": self.name, "format": self.format, "rows_used": len(self.rows), "skipped": dict(self.skipped),
                "sha256": self.sha256, "order": "shuffled by --seed, each row once a pass",
                "token_counts": ESTIMATE_RULE if self.format == "sharegpt" else "from the file"}

    def sampler(self, rng: random.Random) -> DatasetSampler:
        return DatasetSampler(self.rows, rng)


@dataclass(slots=True)
class DatasetSampler:
    rows: tuple[tuple[int, int], ...]
    rng: random.Random
    _order: list[int] = field(default_factory=list)

    def next(self) -> tuple[int, int]:
        if not self._order:
            self._order = list(range(len(self.rows)))
            self.rng.shuffle(self._order)
            self._order.reverse()  # popped from the end: the permutation in its own order
        return self.rows[self._order.pop()]


def read_dataset(path: str | Path) -> Dataset:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PlanError(f"cannot read dataset {p}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PlanError(f"dataset {p} line {line}: not UTF-8 text") from None
    head = text.lstrip()[:1]
    skipped: dict[str, int] = {}
    rows: list[tuple[int, int] | None]
    if not head:  # an empty file
        fmt, rows = "", []
    elif head == "[":
        fmt, rows = "sharegpt", [_conversation(obj, f"dataset {p} line {n}", skipped) for n, obj in _json_list(text, p)]
    elif head == "{":
        fmt, rows = _jsonl(text, p, skipped)
    else:
        fmt, rows = _csv(text, p)
    usable = tuple(r for r in rows if r is not None)
    if not usable:
        why = f" (skipped: {_skipped_text(skipped)})" if skipped else ""
        raise PlanError(f"dataset {p} has no usable rows{why}: give a CSV/TSV with input_tokens and output_tokens "
                        "columns, JSONL with those keys, or ShareGPT conversations")
    return Dataset(str(p), hashlib.sha256(data).hexdigest(), fmt, usable, skipped)


def _skipped_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {why}" for why, n in skipped.items())


def _length(value: Any, key: str, where: str) -> int:
    """A token count from the file: a whole number from 1 to MAX_TOKENS."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    try:
        whole = number is not None and math.isfinite(number) and float(number).is_integer()
    except OverflowError:  # an integer of hundreds of digits: no float holds it
        whole = False
    if number is None or not whole:
        raise PlanError(f"{where}: {key} {_show(value)} is not a whole number")
    if not 1 <= number <= MAX_TOKENS:
        raise PlanError(f"{where}: {key} {_show(value)} is not between 1 and {MAX_TOKENS:,}")
    return int(number)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def _pick(keys: tuple[str, ...], have: Any) -> str | None:
    return next((k for k in keys if k in have), None)


def _counts(obj: dict[str, Any], where: str) -> tuple[int, int]:
    inp, out = _pick(INPUT_KEYS, obj), _pick(OUTPUT_KEYS, obj)
    if inp is None or out is None:
        raise PlanError(f"{where}: needs {' or '.join(INPUT_KEYS)} and {' or '.join(OUTPUT_KEYS)}")
    return _length(obj[inp], inp, where), _length(obj[out], out, where)


def _csv(text: str, p: Path) -> tuple[str, list[tuple[int, int] | None]]:
    first = text.split("\n", 1)[0]
    fmt, delimiter = ("tsv", "\t") if "\t" in first else ("csv", ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        inp, out = _pick(INPUT_KEYS, header), _pick(OUTPUT_KEYS, header)
        if inp is None or out is None:
            raise PlanError(f"dataset {p} line 1: the header needs an {' or '.join(INPUT_KEYS)} column and an "
                            f"{' or '.join(OUTPUT_KEYS)} column (has {', '.join(header) or 'none'})")
        i, o = header.index(inp), header.index(out)
        rows: list[tuple[int, int] | None] = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            where = f"dataset {p} line {reader.line_num}"
            if len(cells) <= max(i, o):
                raise PlanError(f"{where}: {len(cells)} columns, the header has {len(header)}")
            rows.append((_length(cells[i], inp, where), _length(cells[o], out, where)))
    except csv.Error as exc:
        raise PlanError(f"dataset {p} line {reader.line_num}: not a readable {fmt.upper()}: {exc}") from None
    return fmt, rows


def _jsonl(text: str, p: Path, skipped: dict[str, int]) -> tuple[str, list[tuple[int, int] | None]]:
    fmt = ""
    rows: list[tuple[int, int] | None] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"dataset {p} line {n}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser's depth
            raise PlanError(f"{where}: not JSON ({_json_problem(exc)})") from None
        if not isinstance(obj, dict):
            raise PlanError(f"{where}: not a JSON object")
        fmt = fmt or ("sharegpt" if "conversations" in obj else "jsonl")
        rows.append(_conversation(obj, where, skipped) if fmt == "sharegpt" else _counts(obj, where))
    return fmt, rows


def _json_list(text: str, p: Path) -> Iterator[tuple[int, Any]]:
    """The entries of a JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()
    i, line = text.index("[") + 1, 1

    def skip(j: int) -> int:
        while j < len(text) and text[j] in " \t\r\n":
            j += 1
        return j

    def at(j: int) -> int:
        nonlocal i, line
        line += text.count("\n", i, j)
        i = j
        return line

    j = skip(i)
    if j < len(text) and text[j] == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, j)
        except (ValueError, RecursionError) as exc:
            raise PlanError(f"dataset {p} line {at(j)}: not JSON ({_json_problem(exc)})") from None
        yield at(j), obj
        j = skip(end)
        if j < len(text) and text[j] == "]":
            if text[skip(j + 1):]:
                raise PlanError(f"dataset {p} line {at(skip(j + 1))}: text after the JSON list")
            return
        if j >= len(text) or text[j] != ",":
            raise PlanError(f"dataset {p} line {at(j)}: expected ',' or ']' in the JSON list")
        j = skip(j + 1)


def _conversation(obj: Any, where: str, skipped: dict[str, int]) -> tuple[int, int] | None:
    """A ShareGPT record's (prompt, reply) token estimates; None (counted in ``skipped``) when it has no pair."""
    turns = obj.get("conversations") if isinstance(obj, dict) else None
    if not isinstance(turns, list) or not all(isinstance(t, dict) and isinstance(t.get("from"), str)
                                              and isinstance(t.get("value"), str) for t in turns):
        raise PlanError(f"{where}: not a ShareGPT record ({{\"conversations\": [{{\"from\": \"human\", \"value\": "
                        "\"...\"}, ...]})")

    roles = [t["from"].strip().lower() for t in turns]
    human = next((k for k, r in enumerate(roles) if r in HUMAN), None)
    reply = next((k for k, r in enumerate(roles) if r in GPT and human is not None and k > human), None)
    n_in = estimate_tokens(turns[human]["value"]) if human is not None else 0
    n_out = estimate_tokens(turns[reply]["value"]) if reply is not None else 0
    why = ("with fewer than 2 turns" if len(turns) < 2 else "with no human turn followed by a gpt turn"
           if human is None or reply is None else "with an empty prompt or reply" if not n_in or not n_out else None)
    if why is not None:
        skipped[why] = skipped.get(why, 0) + 1
        return None
    for n, key in ((n_in, "prompt"), (n_out, "reply")):
        if n > MAX_TOKENS:
            raise PlanError(f"{where}: the {key} is about {n:,} tokens, more than {MAX_TOKENS:,}")
    return n_in, n_out


def _json_problem(exc: Exception) -> str:
    return "nested too deep" if isinstance(exc, RecursionError) else str(exc)
