"""The request/reply envelope shared by the load generator and the worker (wire format version 1).

A request carries its run id and sequence number, the *intended* and the actual send time (wall clock, ns), the
reply destination, the workload name and the payload. A reply carries the id back with the worker's stamps (dequeued,
batch formed, inference start/end, reply published), the batch size, the worker id and device, and either the output
or an error. Both travel as compact JSON.

Decoding never raises: a malformed message comes back as ``Malformed(reason)`` so that a worker can dead-letter it
and go on serving.

JSON goes through orjson (~5× faster than the standard library both ways, and one message is encoded and decoded
per request at every hop), with the standard library as the referee wherever the two would differ. orjson reads
integers beyond 64 bits as floats: a float of that size in the payload or output, or in an envelope field that must
be an integer, sends the message to the standard library. orjson refuses some text json accepts (NaN, lone
surrogates) and cannot write some values (integers beyond 64 bits, non-string keys): the standard library handles
those too. So every message decodes exactly as ``json.loads`` decodes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

VERSION = 1
_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_BIG = 9.2e18  # past ±2**63: where orjson's floats may stand for integers it could not hold


def _dumpb(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits, a non-string key: the standard library writes those
        return _std_dumps(obj).encode()


def _dumps(obj: Any) -> str:
    return _dumpb(obj).decode()


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


def _fast_loads(data: bytes | str, user_field: str) -> Any:
    """orjson's reading of an envelope; raises ValueError wherever the standard library must decide instead.
    The envelope's own integer fields are type-checked by the caller (a rounded one fails as a float); the user's
    data (``payload`` or ``output``) is searched for rounded integers here."""
    doc = orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    if type(doc) is dict:
        user = doc.get(user_field)
        if type(user) is not str and _maybe_rounded(user):
            raise ValueError("an integer beyond 64 bits")
    return doc


# Request, Stamps and Reply are NamedTuples, not frozen dataclasses: one is built per message on the hot paths,
# and a frozen dataclass's __init__ (one object.__setattr__ per field) costs ~3× a tuple's.


class Request(NamedTuple):
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


class Stamps(NamedTuple):
    """The worker's wall-clock stamps (ns) for one request, in the order they happen."""

    dequeued_ns: int
    batch_formed_ns: int
    inference_start_ns: int
    inference_end_ns: int
    reply_published_ns: int

    def ordered(self) -> bool:
        return (self.dequeued_ns <= self.batch_formed_ns <= self.inference_start_ns
                <= self.inference_end_ns <= self.reply_published_ns)


class Reply(NamedTuple):
    run: str
    seq: int
    worker: str
    device: str
    batch_size: int
    stamps: Stamps
    output: Any = None
    error: str | None = None
    model: str = ""  # the worker's model and batching ("echo, batch ≤ 16, wait 5ms, ×1"); optional on the wire

    @property
    def id(self) -> str:
        return f"{self.run}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that is not a valid envelope, with the reason (for the dead-letter record)."""

    reason: str


def encode_request(req: Request) -> bytes:
    return _dumpb({"v": VERSION, "t": "req", "run": req.run, "seq": req.seq, "intended_ns": req.intended_ns,
                   "sent_ns": req.sent_ns, "reply_to": req.reply_to, "workload": req.workload,
                   "payload": req.payload})


class RequestTemplate:
    """Encodes one run's requests fast: only ``seq`` and the two times vary, so everything else is encoded once.
    ``encode(seq, intended_ns, sent_ns)`` gives exactly the bytes ``encode_request`` gives for the same request."""

    __slots__ = ("_head", "_tail")

    def __init__(self, run: str, reply_to: str, workload: str, payload: Any) -> None:
        self._head = f'{{"v":{VERSION},"t":"req","run":{_dumps(run)},"seq":'.encode()
        rest = f'"reply_to":{_dumps(reply_to)},"workload":{_dumps(workload)},"payload":{_dumps(payload)}'
        self._tail = f",{rest}}}".encode()

    def encode(self, seq: int, intended_ns: int, sent_ns: int) -> bytes:
        return b'%b%d,"intended_ns":%d,"sent_ns":%d%b' % (self._head, seq, intended_ns, sent_ns, self._tail)


def encode_reply(rep: Reply) -> bytes:
    s = rep.stamps
    doc: dict[str, Any] = {"v": VERSION, "t": "rep", "run": rep.run, "seq": rep.seq, "worker": rep.worker,
                           "device": rep.device, "batch_size": rep.batch_size,
                           "stamps": [s.dequeued_ns, s.batch_formed_ns, s.inference_start_ns, s.inference_end_ns,
                                      s.reply_published_ns]}
    if rep.model:
        doc["model"] = rep.model
    if rep.error is not None:
        doc["error"] = rep.error
    else:
        doc["output"] = rep.output
    return _dumpb(doc)


def _load(data: bytes | str, kind: str) -> dict[str, Any] | Malformed:
    """The checked path, with the standard library: the decoders' fast paths fall back to it."""
    doc = _std_load(data)
    if isinstance(doc, Malformed):
        return doc
    if not isinstance(doc, dict):
        return Malformed(f"not a JSON object (got {type(doc).__name__})")
    version = doc.get("v")
    if version != VERSION:
        return Malformed(f"unsupported envelope version {version!r} (this qdeck speaks {VERSION})")
    if doc.get("t") != kind:
        return Malformed(f"expected a {kind!r} envelope, got {doc.get('t')!r}")
    return doc


def _std_load(data: bytes | str) -> Any:
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes | bytearray) else data)
    except UnicodeDecodeError:
        return Malformed("not UTF-8")
    except ValueError as exc:
        return Malformed(f"not JSON ({exc.args[0].split(':')[0] if exc.args else 'invalid'})")
    except RecursionError:
        return Malformed("JSON nested too deeply")


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
    """A request, or ``Malformed(reason)``; a well-formed request takes the fast path, as in ``decode_reply``."""
    try:
        doc = _fast_loads(data, "payload")
        if (doc["v"] == VERSION and doc["t"] == "req" and type(doc["run"]) is str and type(doc["seq"]) is int
                and type(doc["intended_ns"]) is int and type(doc["sent_ns"]) is int
                and type(doc["reply_to"]) is str and doc["reply_to"] and type(doc["workload"]) is str):
            return Request(doc["run"], doc["seq"], doc["intended_ns"], doc["sent_ns"], doc["reply_to"],
                           doc["workload"], doc["payload"])
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
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
        doc = _fast_loads(data, "output")
        stamps = doc["stamps"]
        a, b, c, d, e = stamps
        error = doc.get("error")
        model = doc.get("model", "")
        if (doc["v"] == VERSION and doc["t"] == "rep" and type(doc["run"]) is str and type(doc["seq"]) is int
                and type(stamps) is list and type(a) is int and type(b) is int and type(c) is int
                and type(d) is int and type(e) is int and type(doc["batch_size"]) is int
                and type(doc["worker"]) is str and type(doc["device"]) is str
                and (error is None or type(error) is str) and type(model) is str):
            return Reply(doc["run"], doc["seq"], doc["worker"], doc["device"], doc["batch_size"],
                         Stamps(a, b, c, d, e), doc.get("output"), error, model)
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
    model = doc.get("model", "")
    if not isinstance(model, str):
        return Malformed("field 'model' must be a string")
    if type(doc["v"]) is bool:  # "v": true equals 1 in Python, and passed the version check
        return Malformed("malformed reply (a field holds a boolean or a value of the wrong kind)")
    # A valid reply gets here when the fast path left it to the standard library (an integer beyond 64 bits in
    # the output, a lone surrogate): it decodes as json.loads reads it.
    return Reply(doc["run"], doc["seq"], doc["worker"], doc["device"], doc["batch_size"], Stamps(*stamps),
                 doc.get("output"), error, model)


def peek_reply_to(data: bytes | str) -> str | None:
    """Best effort: the reply destination of a message that failed to decode, so the sender can be told."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    value = doc.get("reply_to") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None
