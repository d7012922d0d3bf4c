"""``qdeck dlq export`` / ``import``: a record as one JSON object, exact.

Every value keeps its type, so an import writes back the very bytes and types that were exported: strings
``{"s": …}``, bytes ``{"b": base64}``, integers ``{"i": …}``, floats ``{"f": …}`` (``"nan"``, ``"inf"``,
``"-inf"`` as text), booleans ``{"bool": …}``, decimals ``{"dec": "…"}``, timestamps ``{"dt": ISO 8601}``, tables
``{"map": [[key, value], …]}`` (in order), arrays ``{"list": […]}`` and ``{"null": true}``. Headers are a list of
``[name, value]`` pairs in order (Kafka allows repeats). The first line of a file says what it is.
"""

from __future__ import annotations

import base64
import binascii
import math
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from probes.dlq.model import Place, Record
from probes.errors import ConfigError

FORMAT = "qdeck-dlq-export"
VERSION = 1


def encode_value(v: Any) -> dict[str, Any]:
    if v is None:
        return {"null": True}
    if isinstance(v, bool):
        return {"bool": v}
    if isinstance(v, int):
        return {"i": v}
    if isinstance(v, float):
        return {"f": v if math.isfinite(v) else repr(v)}
    if isinstance(v, Decimal):
        return {"dec": str(v)}
    if isinstance(v, str):
        return {"s": v}
    if isinstance(v, bytes | bytearray | memoryview):
        return {"b": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, datetime):
        return {"dt": v.isoformat()}
    if isinstance(v, dict):
        return {"map": [[str(k), encode_value(x)] for k, x in v.items()]}
    if isinstance(v, list | tuple):
        return {"list": [encode_value(x) for x in v]}
    raise TypeError(f"cannot export a value of type {type(v).__name__}")


def decode_value(d: Any, where: str) -> Any:
    if not isinstance(d, dict) or len(d) != 1:
        raise ConfigError(f"{where}: a value must be one tagged object such as {{\"s\": \"text\"}}")
    (tag, v), = d.items()
    try:
        if tag == "null":
            return None
        if tag == "bool" and isinstance(v, bool):
            return v
        if tag == "i" and isinstance(v, int) and not isinstance(v, bool):
            return v
        if tag == "f" and isinstance(v, int | float | str) and not isinstance(v, bool):
            return float(v)
        if tag == "dec" and isinstance(v, str):
            return Decimal(v)
        if tag == "s" and isinstance(v, str):
            return v
        if tag == "b" and isinstance(v, str):
            return base64.b64decode(v, validate=True)
        if tag == "dt" and isinstance(v, str):
            return datetime.fromisoformat(v)
        if tag == "map" and isinstance(v, list):
            return {str(k): decode_value(x, where) for k, x in (_pair(p, where) for p in v)}
        if tag == "list" and isinstance(v, list):
            return [decode_value(x, where) for x in v]
    except (ValueError, InvalidOperation, binascii.Error):
        raise ConfigError(f"{where}: {tag!r} value {str(v)[:40]!r} does not decode") from None
    raise ConfigError(f"{where}: unknown or mistyped value tag {tag!r}")


def _pair(p: Any, where: str) -> tuple[str, Any]:
    if not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], str):
        raise ConfigError(f"{where}: a header or table entry must be [name, value]")
    return p[0], p[1]


def header_line(kind: str, broker: str, source: str, exported_at: datetime) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "broker_kind": kind, "broker": broker, "source": source,
            "exported_at": exported_at.isoformat()}


def record_to_json(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "body": base64.b64encode(r.body).decode("ascii"),
        "headers": [[k, encode_value(v)] for k, v in r.headers],
        "properties": [[k, encode_value(v)] for k, v in r.properties.items()],
        "timestamp": r.timestamp.isoformat() if r.timestamp else None,
        "died_at": r.died_at.isoformat() if r.died_at else None,
        "reason": r.reason,
        "origin": None if r.origin is None else {"kind": r.origin.kind, "name": r.origin.name,
                                                 "routing_key": r.origin.routing_key,
                                                 "partition": r.origin.partition},
        "origin_source": r.origin_source,
        "redrives": r.redrives,
        "original_id": r.original_id,
    }


RECORD_KEYS = frozenset({"id", "body", "headers", "properties", "timestamp", "died_at", "reason", "origin",
                         "origin_source", "redrives", "original_id"})


def check_header(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a qdeck dead-letter export (its first line names format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ConfigError(f"{where}: export version {doc.get('version')!r}; this qdeck reads version {VERSION}")
    return doc


def record_from_json(doc: Any, where: str) -> Record:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a record must be a JSON object")
    unknown = sorted(set(doc) - RECORD_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (a record has {', '.join(sorted(RECORD_KEYS))})")
    if not isinstance(doc.get("id"), str) or not isinstance(doc.get("body"), str):
        raise ConfigError(f"{where}: a record needs an id and a body (base64)")
    try:
        body = base64.b64decode(doc["body"], validate=True)
    except (ValueError, binascii.Error):
        raise ConfigError(f"{where}: the body is not base64") from None
    headers = tuple((k, decode_value(v, where)) for k, v in (_pair(p, where) for p in doc.get("headers") or []))
    props = {k: decode_value(v, where) for k, v in (_pair(p, where) for p in doc.get("properties") or [])}
    origin = doc.get("origin")
    place = None
    if isinstance(origin, dict) and isinstance(origin.get("name"), str):
        place = Place(origin.get("kind", "queue"), origin["name"], origin.get("routing_key"), origin.get("partition"))

    def when(key: str) -> datetime | None:
        v = doc.get(key)
        try:
            return datetime.fromisoformat(v) if isinstance(v, str) else None
        except ValueError:
            raise ConfigError(f"{where}: {key} is not an ISO 8601 time") from None

    redrives = doc.get("redrives") or 0
    return Record(id=doc["id"], body=body, headers=headers, properties=props, timestamp=when("timestamp"),
                  died_at=when("died_at"), reason=doc.get("reason") if isinstance(doc.get("reason"), str) else None,
                  origin=place, origin_source=doc.get("origin_source"),
                  redrives=redrives if isinstance(redrives, int) else 0,
                  original_id=doc.get("original_id") if isinstance(doc.get("original_id"), str) else None)
