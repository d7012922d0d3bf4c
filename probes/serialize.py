"""Plain-JSON views of the models for ``--json`` output (raw payloads left out, bodies made text-safe)."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime
from typing import Any

from probes.models import PeekedMessage


def to_jsonable(obj: Any) -> Any:
    """Dataclasses → dicts without their ``raw`` field; bytes → base64; datetimes → ISO 8601."""
    if isinstance(obj, PeekedMessage):
        return _message(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "raw"}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    return obj


def _message(m: PeekedMessage) -> dict[str, Any]:
    out: dict[str, Any] = {f.name: to_jsonable(getattr(m, f.name)) for f in dataclasses.fields(m)
                           if f.name not in ("raw", "body")}
    try:
        out["body_text"] = m.body.decode("utf-8")
        out["body_base64"] = None
    except UnicodeDecodeError:
        out["body_text"] = None
        out["body_base64"] = base64.b64encode(m.body).decode("ascii")
    out.update(death_reason=m.death_reason, death_count=m.death_count, original_queue=m.original_queue,
               original_exchange=m.original_exchange, original_routing_keys=list(m.original_routing_keys),
               first_death_time=to_jsonable(m.first_death_time), last_death_time=to_jsonable(m.last_death_time))
    return out
