"""Envelope JSON: orjson for speed, the standard library as the referee wherever the two would differ.

orjson is ~5× faster than the standard library both ways, and one message is encoded and decoded per request at
every hop (``loadgen.envelope``). orjson reads
integers beyond 64 bits as floats: a float of that size in the payload or output, or in an envelope field that must
be an integer, sends the message to the standard library. orjson refuses some text json accepts (NaN, lone
surrogates) and cannot write some values (integers beyond 64 bits, non-string keys): the standard library handles
those too. So every message decodes exactly as ``json.loads`` decodes it.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_BIG = 9.2e18  # past ±2**63: where orjson's floats may stand for integers it could not hold


def dumpb(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits, a non-string key: the standard library writes those
        return _std_dumps(obj).encode()


def dumps(obj: Any) -> str:
    return dumpb(obj).decode()


def _maybe_rounded(value: Any) -> bool:
    """True if ``value`` holds a float orjson may have made of an integer beyond 64 bits."""
    t = type(value)
    if t is float:
        return bool((value >= _BIG or value <= -_BIG) and value.is_integer())
    if t is list:
        return any(map(_maybe_rounded, value))
    if t is dict:
        return any(map(_maybe_rounded, value.values()))
    return False


def fast_loads(data: bytes | str, user_field: str) -> Any:
    """orjson's reading of an envelope; raises ValueError wherever the standard library must decide instead.
    The envelope's own integer fields are type-checked by the caller (a rounded one fails as a float); the user's
    data (``payload`` or ``output``) is searched for rounded integers here."""
    doc = orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    if type(doc) is dict:
        user = doc.get(user_field)
        if type(user) is not str and _maybe_rounded(user):
            raise ValueError("an integer beyond 64 bits")
    return doc
