"""Models for the settle tests, loaded by import path (``--model tests.loadgen.settle_models:unencodable``)."""

from __future__ import annotations

from typing import Any


def unencodable(inputs: list[Any]) -> list[Any]:
    """Echo, but the input "poison" comes back as an object JSON cannot write (a model returning, say, a tensor)."""
    return [object() if x == "poison" else x for x in inputs]
