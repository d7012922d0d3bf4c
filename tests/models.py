"""Models for worker tests, loaded by import path (``--model tests.models:fail_on_poison``)."""

from __future__ import annotations

from typing import Any


def fail_on_poison(inputs: list[Any]) -> list[Any]:
    """Echo, but a batch holding the input "poison" raises (a model bug that one request triggers)."""
    if "poison" in inputs:
        raise RuntimeError("cannot embed poison")
    return list(inputs)


def stream_words(request: dict[str, Any]) -> Any:
    """A streaming model (a generator function): two tokens a chunk until ``max_tokens``; a request whose
    payload is "boom" fails after its first chunk."""
    while True:
        yield 2
        if request["payload"] == "boom":
            raise RuntimeError("decoder blew up")


stream_words.max_seqs = 8  # type: ignore[attr-defined]
