"""The request/reply envelope shared by the load generator and the worker (wire format version 1).

A request carries its run id and sequence number, the *intended* and the actual send time (wall clock, ns), the
reply destination, the workload name and the payload. A reply carries the id back with the worker's stamps (dequeued,
batch formed, inference start/end, reply published), the batch size, the worker id and device, and either the output
or an error. Both travel as compact JSON.

Decoding never raises: a malformed message comes back as ``Malformed(reason)`` so that a worker can dead-letter it
and go on serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 1
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Request:
    run: str
    seq: int
    intended_ns: int
    sent_ns: int
    reply_to: str
    workload: str
    payload: Any

    @property
    def id(self) -> str:
        return f"{self.run}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Stamps:
    """The worker's wall-clock stamps (ns) for one request, in the order they happen."""

    dequeued_ns: int
    batch_formed_ns: int
    inference_start_ns: int
    inference_end_ns: int
    reply_published_ns: int

    def ordered(self) -> bool:
        return (self.dequeued_ns <= self.batch_formed_ns <= self.inference_start_ns
                <= self.inference_end_ns <= self.reply_published_ns)


@dataclass(frozen=True, slots=True)
class Reply:
    run: str
    seq: int
    worker: str
    device: str
    batch_size: int
    stamps: Stamps
    output: Any = None
    error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.run}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that is not a valid envelope, with the reason (for the dead-letter record)."""

    reason: str


def encode_request(req: Request) -> bytes:
    return _dumps({"v": VERSION, "t": "req", "run": req.run, "seq": req.seq, "intended_ns": req.intended_ns,
                   "sent_ns": req.sent_ns, "reply_to": req.reply_to, "workload": req.workload,
                   "payload": req.payload}).encode()


def encode_reply(rep: Reply) -> bytes:
    s = rep.stamps
    doc: dict[str, Any] = {"v": VERSION, "t": "rep", "run": rep.run, "seq": rep.seq, "worker": rep.worker,
                           "device": rep.device, "batch_size": rep.batch_size,
                           "stamps": [s.dequeued_ns, s.batch_formed_ns, s.inference_start_ns, s.inference_end_ns,
                                      s.reply_published_ns]}
    if rep.error is not None:
        doc["error"] = rep.error
    else:
        doc["output"] = rep.output
    return _dumps(doc).encode()


def _load(data: bytes | str, kind: str) -> dict[str, Any] | Malformed:
    try:
        doc = json.loads(data.decode("utf-8") if isinstance(data, bytes | bytearray) else data)
    except UnicodeDecodeError:
        return Malformed("not UTF-8")
    except ValueError as exc:
        return Malformed(f"not JSON ({exc.args[0].split(':')[0] if exc.args else 'invalid'})")
    except RecursionError:
        return Malformed("JSON nested too deeply")
    if not isinstance(doc, dict):
        return Malformed(f"not a JSON object (got {type(doc).__name__})")
    version = doc.get("v")
    if version != VERSION:
        return Malformed(f"unsupported envelope version {version!r} (this qdeck speaks {VERSION})")
    if doc.get("t") != kind:
        return Malformed(f"expected a {kind!r} envelope, got {doc.get('t')!r}")
    return doc


def _fields(doc: dict[str, Any], spec: dict[str, type | tuple[type, ...]]) -> str | None:
    for name, typ in spec.items():
        if name not in doc:
            return f"missing field {name!r}"
        value = doc[name]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            return f"field {name!r} has the wrong type ({type(value).__name__})"
    return None


_REQUEST_FIELDS: dict[str, type | tuple[type, ...]] = {
    "run": str, "seq": int, "intended_ns": int, "sent_ns": int, "reply_to": str, "workload": str}


def decode_request(data: bytes | str) -> Request | Malformed:
    doc = _load(data, "req")
    if isinstance(doc, Malformed):
        return doc
    problem = _fields(doc, _REQUEST_FIELDS)
    if problem:
        return Malformed(problem)
    if "payload" not in doc:
        return Malformed("missing field 'payload'")
    if not doc["reply_to"]:
        return Malformed("empty reply_to")
    return Request(run=doc["run"], seq=doc["seq"], intended_ns=doc["intended_ns"], sent_ns=doc["sent_ns"],
                   reply_to=doc["reply_to"], workload=doc["workload"], payload=doc["payload"])


def decode_reply(data: bytes | str) -> Reply | Malformed:
    """A reply, or ``Malformed(reason)``. The load generator decodes one per request: a well-formed reply takes
    the fast path (one dict lookup per field); anything else gets the full check and a precise reason."""
    try:
        doc = json.loads(data)
        stamps = doc["stamps"]
        if (doc["v"] == VERSION and doc["t"] == "rep" and type(doc["run"]) is str and type(doc["seq"]) is int
                and type(stamps) is list and len(stamps) == 5 and all(type(x) is int for x in stamps)
                and type(doc["batch_size"]) is int and type(doc["worker"]) is str and type(doc["device"]) is str):
            error = doc.get("error")
            if error is None or type(error) is str:
                return Reply(doc["run"], doc["seq"], doc["worker"], doc["device"], doc["batch_size"],
                             Stamps(*stamps), doc.get("output"), error)
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    return _decode_reply_checked(data)


def _decode_reply_checked(data: bytes | str) -> Reply | Malformed:
    doc = _load(data, "rep")
    if isinstance(doc, Malformed):
        return doc
    problem = _fields(doc, {"run": str, "seq": int, "worker": str, "device": str, "batch_size": int,
                            "stamps": list})
    if problem:
        return Malformed(problem)
    stamps = doc["stamps"]
    if len(stamps) != 5 or not all(isinstance(x, int) and not isinstance(x, bool) for x in stamps):
        return Malformed("field 'stamps' must hold five integers")
    error = doc.get("error")
    if error is not None and not isinstance(error, str):
        return Malformed("field 'error' must be a string")
    # The fast path takes every valid reply; what gets here is malformed in a way the checks above do not name
    # (a boolean where a number belongs, such as "v": true).
    return Malformed("malformed reply (a field holds a boolean or a value of the wrong kind)")


def peek_reply_to(data: bytes | str) -> str | None:
    """Best effort: the reply destination of a message that failed to decode, so the sender can be told."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    value = doc.get("reply_to") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None
