"""The request/reply envelope shared by the load generator and the worker (wire format versions 1 and 2).

A request carries its run id and sequence number, the *intended* and the actual send time (wall clock, ns), the
reply destination, the workload name and the payload; an LLM-shaped request also its ``input_tokens`` and
``max_tokens`` (optional fields, absent when 0). A reply carries the id back with the worker's stamps (dequeued,
batch formed, inference start/end, reply published), the batch size, the worker id and device, and either the output
or an error. Both travel as compact JSON, written as version 1.

Version 2 adds the streamed reply: a stream of ``chunk`` messages (``"v":2,"t":"chunk"``), each with the request's
id, its index ``i`` (0, 1, ...), the tokens ``n`` it carries, ``final`` on the last one, the worker, device and the
sequences in the decode step that made it (``batch_size``), and the worker's five stamps on the first and on the
final chunk only (dequeued, joined the running batch, prefill start, the chunk's last token, published). Version 1
messages still decode; requests and whole replies are still written as version 1, so older peers read them.

A reply and a final chunk may carry the worker's latest GPU sample (``gpu``, optional: absent without a GPU, so
older peers read them; the field's form is in ``loadgen.gpu_sample``).

Decoding never raises: a malformed message comes back as ``Malformed(reason)`` so that a worker can dead-letter it
and go on serving.

JSON goes through orjson with the standard library as the referee (``loadgen.envelope_json``): every message
decodes exactly as ``json.loads`` decodes it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from loadgen.envelope_json import dumpb, dumps, fast_loads
from loadgen.gpu_sample import GpuSample, gpu_from_wire

VERSION = 1  # requests and whole replies
STREAM_VERSION = 2  # streamed replies (chunks); a reply of either version decodes
_REPLY_VERSIONS = (1, 2)


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
    input_tokens: int = 0  # LLM-shaped load: the prompt's length in tokens (0: not given)
    max_tokens: int = 0  # LLM-shaped load: the output tokens asked for (0: the model's default)

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
    gpu: GpuSample | None = None  # the worker's latest GPU sample; optional on the wire

    @property
    def id(self) -> str:
        return f"{self.run}:{self.seq}"


# What ``Stamps(*five)`` and ``Reply(*ten)`` do (a NamedTuple's ``__new__`` is ``tuple.__new__(cls, fields)``), for
# the decoder's fast path, which has checked the fields' count and types itself.
_new_stamps = functools.partial(tuple.__new__, Stamps)
_new_reply = functools.partial(tuple.__new__, Reply)


class Chunk(NamedTuple):
    """One piece of a streamed reply (envelope version 2). ``stamps`` is on the first and on the final chunk only
    (None on the others); ``error`` ends a stream (final) that failed."""

    run: str
    seq: int
    part: int  # the chunk's index in its stream: 0, 1, ...
    tokens: int
    final: bool
    worker: str
    device: str
    batch_size: int  # sequences in the decode step that produced this chunk
    stamps: Stamps | None = None
    error: str | None = None
    model: str = ""
    output: Any = None
    gpu: GpuSample | None = None  # the worker's latest GPU sample (on final chunks)

    @property
    def id(self) -> str:
        return f"{self.run}:{self.seq}"


@dataclass(frozen=True, slots=True)
class Malformed:
    """A message that is not a valid envelope, with the reason (for the dead-letter record)."""

    reason: str


def encode_request(req: Request) -> bytes:
    doc: dict[str, Any] = {"v": VERSION, "t": "req", "run": req.run, "seq": req.seq, "intended_ns": req.intended_ns,
                           "sent_ns": req.sent_ns}
    if req.input_tokens or req.max_tokens:
        doc["input_tokens"], doc["max_tokens"] = req.input_tokens, req.max_tokens
    doc.update(reply_to=req.reply_to, workload=req.workload, payload=req.payload)
    return dumpb(doc)


class RequestTemplate:
    """Encodes one run's requests fast: only ``seq`` and the two times vary, so everything else is encoded once.
    ``encode(seq, intended_ns, sent_ns)`` gives exactly the bytes ``encode_request`` gives for the same request."""

    __slots__ = ("_head", "_tail")

    def __init__(self, run: str, reply_to: str, workload: str, payload: Any) -> None:
        self._head = f'{{"v":{VERSION},"t":"req","run":{dumps(run)},"seq":'.encode()
        rest = f'"reply_to":{dumps(reply_to)},"workload":{dumps(workload)},"payload":{dumps(payload)}'
        self._tail = f",{rest}}}".encode()

    def encode(self, seq: int, intended_ns: int, sent_ns: int) -> bytes:
        return b'%b%d,"intended_ns":%d,"sent_ns":%d%b' % (self._head, seq, intended_ns, sent_ns, self._tail)

    def encode_llm(self, seq: int, intended_ns: int, sent_ns: int, input_tokens: int, max_tokens: int) -> bytes:
        """As ``encode``, with an LLM-shaped request's lengths (what ``encode_request`` writes for them)."""
        if not (input_tokens or max_tokens):
            return self.encode(seq, intended_ns, sent_ns)
        return b'%b%d,"intended_ns":%d,"sent_ns":%d,"input_tokens":%d,"max_tokens":%d%b' % (
            self._head, seq, intended_ns, sent_ns, input_tokens, max_tokens, self._tail)


def encode_reply(rep: Reply) -> bytes:
    s = rep.stamps
    doc: dict[str, Any] = {"v": VERSION, "t": "rep", "run": rep.run, "seq": rep.seq, "worker": rep.worker,
                           "device": rep.device, "batch_size": rep.batch_size,
                           "stamps": [s.dequeued_ns, s.batch_formed_ns, s.inference_start_ns, s.inference_end_ns,
                                      s.reply_published_ns]}
    if rep.model:
        doc["model"] = rep.model
    if rep.gpu is not None:
        doc["gpu"] = rep.gpu.wire()
    if rep.error is not None:
        doc["error"] = rep.error
    else:
        doc["output"] = rep.output
    return dumpb(doc)


def encode_chunk(ch: Chunk) -> bytes:
    doc: dict[str, Any] = {"v": STREAM_VERSION, "t": "chunk", "run": ch.run, "seq": ch.seq, "i": ch.part,
                           "n": ch.tokens, "final": ch.final, "worker": ch.worker, "device": ch.device,
                           "batch_size": ch.batch_size}
    if ch.stamps is not None:
        s = ch.stamps
        doc["stamps"] = [s.dequeued_ns, s.batch_formed_ns, s.inference_start_ns, s.inference_end_ns,
                         s.reply_published_ns]
    if ch.model:
        doc["model"] = ch.model
    if ch.gpu is not None:
        doc["gpu"] = ch.gpu.wire()
    if ch.error is not None:
        doc["error"] = ch.error
    elif ch.output is not None:
        doc["output"] = ch.output
    return dumpb(doc)


def _load(data: bytes | str, kind: str) -> dict[str, Any] | Malformed:
    """The checked path, with the standard library: the decoders' fast paths fall back to it."""
    doc = _std_load(data)
    if isinstance(doc, Malformed):
        return doc
    if not isinstance(doc, dict):
        return Malformed(f"not a JSON object (got {type(doc).__name__})")
    version = doc.get("v")
    speaks = _REPLY_VERSIONS if kind in ("rep", "chunk") else (VERSION,)
    if version not in speaks or type(version) is bool:
        return Malformed(f"unsupported envelope version {version!r} (this qdeck speaks "
                         f"{' and '.join(map(str, speaks))})")
    if kind == "chunk" and version != STREAM_VERSION:
        return Malformed(f"a streamed reply is envelope version {STREAM_VERSION}, not {version!r}")
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
        doc = fast_loads(data, "payload")
        if (doc["v"] == VERSION and doc["t"] == "req" and type(doc["run"]) is str and type(doc["seq"]) is int
                and type(doc["intended_ns"]) is int and type(doc["sent_ns"]) is int
                and type(doc["reply_to"]) is str and doc["reply_to"] and type(doc["workload"]) is str):
            n_in, n_out = doc.get("input_tokens", 0), doc.get("max_tokens", 0)
            if type(n_in) is int and type(n_out) is int and n_in >= 0 and n_out >= 0:
                return Request(doc["run"], doc["seq"], doc["intended_ns"], doc["sent_ns"], doc["reply_to"],
                               doc["workload"], doc["payload"], n_in, n_out)
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
    lengths = [doc.get(k, 0) for k in ("input_tokens", "max_tokens")]
    if not all(type(n) is int and n >= 0 for n in lengths):
        return Malformed("fields 'input_tokens' and 'max_tokens' must be integers, not negative")
    return Request(run=doc["run"], seq=doc["seq"], intended_ns=doc["intended_ns"], sent_ns=doc["sent_ns"],
                   reply_to=doc["reply_to"], workload=doc["workload"], payload=doc["payload"],
                   input_tokens=lengths[0], max_tokens=lengths[1])


def decode_reply(data: bytes | str) -> Reply | Chunk | Malformed:
    """A reply, a chunk of a streamed reply, or ``Malformed(reason)``. The load generator decodes one per request
    (or chunk): a well-formed one takes the fast path (one dict lookup per field, the named tuples made without
    their Python-level constructors); anything else gets the full check and a precise reason."""
    try:
        doc = fast_loads(data, "output")
        if doc["t"] == "chunk":
            return _fast_chunk(doc) or _decode_chunk_checked(data)
        stamps = doc["stamps"]
        a, b, c, d, e = stamps
        run, seq, batch_size, worker, device = doc["run"], doc["seq"], doc["batch_size"], doc["worker"], doc["device"]
        error = doc.get("error")
        model = doc.get("model", "")
        gpu = None if (raw := doc.get("gpu")) is None else gpu_from_wire(raw)
        version = doc["v"]
        if (type(version) is int and version in _REPLY_VERSIONS and doc["t"] == "rep" and type(run) is str
                and type(seq) is int and type(stamps) is list and type(a) is int and type(b) is int
                and type(c) is int and type(d) is int and type(e) is int and type(batch_size) is int
                and type(worker) is str and type(device) is str and (error is None or type(error) is str)
                and type(model) is str):
            return _new_reply((run, seq, worker, device, batch_size, _new_stamps(stamps), doc.get("output"),
                               error, model, gpu))
    except (ValueError, KeyError, TypeError, RecursionError):
        pass
    return _decode_reply_checked(data)


def _decode_reply_checked(data: bytes | str) -> Reply | Chunk | Malformed:
    peek = _std_load(data)
    if isinstance(peek, dict) and peek.get("t") == "chunk":
        return _decode_chunk_checked(data)
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
    optional = _optional_fields(doc)
    if isinstance(optional, Malformed):
        return optional
    if type(doc["v"]) is bool:  # "v": true equals 1 in Python, and passed the version check
        return Malformed("malformed reply (a field holds a boolean or a value of the wrong kind)")
    # A valid reply gets here when the fast path left it to the standard library (an integer beyond 64 bits in
    # the output, a lone surrogate): it decodes as json.loads reads it.
    error, model, gpu = optional
    return Reply(doc["run"], doc["seq"], doc["worker"], doc["device"], doc["batch_size"], Stamps(*stamps),
                 doc.get("output"), error, model, gpu)


def _optional_fields(doc: dict[str, Any]) -> tuple[str | None, str, GpuSample | None] | Malformed:
    """A reply's or chunk's optional fields (error, model, gpu), checked."""
    error, model, raw = doc.get("error"), doc.get("model", ""), doc.get("gpu")
    if error is not None and not isinstance(error, str):
        return Malformed("field 'error' must be a string")
    if not isinstance(model, str):
        return Malformed("field 'model' must be a string")
    try:
        return error, model, None if raw is None else gpu_from_wire(raw)
    except ValueError as exc:
        return Malformed(str(exc))


def _fast_chunk(doc: dict[str, Any]) -> Chunk | None:
    """A well-formed chunk from orjson's reading, or None for the checked path to decide."""
    stamps = doc.get("stamps")
    error = doc.get("error")
    model = doc.get("model", "")
    gpu = None if (raw := doc.get("gpu")) is None else gpu_from_wire(raw)  # a ValueError: the checked path decides
    if (doc["v"] == STREAM_VERSION and type(doc["v"]) is int and type(doc["run"]) is str and type(doc["seq"]) is int
            and type(doc["i"]) is int and doc["i"] >= 0 and type(doc["n"]) is int and doc["n"] >= 0
            and type(doc["final"]) is bool and type(doc["worker"]) is str and type(doc["device"]) is str
            and type(doc["batch_size"]) is int and (error is None or type(error) is str) and type(model) is str):
        if stamps is None:
            return Chunk(doc["run"], doc["seq"], doc["i"], doc["n"], doc["final"], doc["worker"], doc["device"],
                         doc["batch_size"], None, error, model, doc.get("output"), gpu)
        if type(stamps) is list and len(stamps) == 5 and all(type(x) is int for x in stamps):
            return Chunk(doc["run"], doc["seq"], doc["i"], doc["n"], doc["final"], doc["worker"], doc["device"],
                         doc["batch_size"], Stamps(*stamps), error, model, doc.get("output"), gpu)
    return None


def _decode_chunk_checked(data: bytes | str) -> Chunk | Malformed:
    doc = _load(data, "chunk")
    if isinstance(doc, Malformed):
        return doc
    problem = _fields(doc, {"run": str, "seq": int, "i": int, "n": int, "final": bool, "worker": str,
                            "device": str, "batch_size": int})
    if problem:
        return Malformed(problem)
    if doc["i"] < 0 or doc["n"] < 0:
        return Malformed("fields 'i' and 'n' must not be negative")
    stamps = doc.get("stamps")
    if stamps is not None and (not isinstance(stamps, list) or len(stamps) != 5
                               or not all(isinstance(x, int) and not isinstance(x, bool) for x in stamps)):
        return Malformed("field 'stamps' must hold five integers")
    optional = _optional_fields(doc)
    if isinstance(optional, Malformed):
        return optional
    error, model, gpu = optional
    return Chunk(doc["run"], doc["seq"], doc["i"], doc["n"], doc["final"], doc["worker"], doc["device"],
                 doc["batch_size"], Stamps(*stamps) if stamps is not None else None, error, model, doc.get("output"),
                 gpu)


def peek_reply_to(data: bytes | str) -> str | None:
    """Best effort: the reply destination of a message that failed to decode, so the sender can be told."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    value = doc.get("reply_to") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None
