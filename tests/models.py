"""Models for worker tests, loaded by import path (``--model tests.models:fail_on_poison``)."""

from __future__ import annotations

from typing import Any


def fail_on_poison(inputs: list[Any]) -> list[Any]:
    """Echo, but a batch holding the input "poison" raises (a model bug that one request triggers)."""
    if "poison" in inputs:
        raise RuntimeError("cannot embed poison")
    return list(inputs)
