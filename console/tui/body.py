"""One message in full: properties, headers, deaths, and the body — JSON pretty-printed, text shown safely,
binary as a hex dump. Everything from the broker is escaped and cut to PEEK_BODY_BYTES (the one peek body
limit)."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.render import fmt_time
from console.safe_text import is_binary, safe
from console.tui.base import BaseScreen
from probes.models import PEEK_BODY_BYTES, PeekedMessage


def hexdump(data: bytes, width: int = 16) -> str:
    lines = []
    for off in range(0, len(data), width):
        chunk = data[off:off + width]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hexes:<{width * 3}} {text}")
    return "\n".join(lines)


def body_text(body: bytes, size: int) -> tuple[str, str]:
    """(how it is shown, the text): JSON, text or hex; never raw."""
    shown = body[:PEEK_BODY_BYTES]
    more = max(size, len(body)) - len(shown)
    tail = f"\n… {more:,} more bytes not shown" if more > 0 else ""
    if is_binary(shown):
        return "binary, hex", hexdump(shown) + tail
    text = shown.decode("utf-8", errors="backslashreplace")
    try:
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "text", safe(text, None, keep_newlines=True) + tail
    return "JSON", safe(pretty, None, keep_newlines=True) + tail


def message_text(m: PeekedMessage) -> Text:
    out = Text()
    out.append("message ", style="bold")
    ident = m.message_id or (m.offset if m.offset is not None else m.position)
    out.append(safe(ident, 80))
    facts = [("size", f"{m.size:,} bytes"), ("exchange", m.exchange), ("routing key", m.routing_key),
             ("redelivered", m.redelivered), ("timestamp", fmt_time(m.timestamp) if m.timestamp else None),
             ("partition", m.partition), ("offset", m.offset),
             ("key", m.key.decode("utf-8", "backslashreplace") if m.key else None)]
    for name, value in facts:
        if value is not None:
            out.append(f"\n{name}: ", style="bold")
            out.append(safe(value, 200))
    if m.deaths:
        out.append("\n\ndeaths (most recent first)", style="bold red")
        for d in m.deaths:
            out.append(f"\n  {safe(d.reason or '?', 60)} from {safe(d.queue or '?', 80)} × {d.count}"
                       f"{' at ' + fmt_time(d.time) if d.time else ''}"
                       f"{' via ' + safe(d.exchange, 60) if d.exchange else ''}")
    if m.headers:
        out.append("\n\nheaders", style="bold")
        for k, v in list(m.headers.items())[:100]:
            out.append(f"\n  {safe(k, 80)}: {safe(v, 300)}")
    if m.properties:
        out.append("\n\nproperties", style="bold")
        for k, v in list(m.properties.items())[:50]:
            out.append(f"\n  {safe(k, 80)}: {safe(v, 200)}")
    how, text = body_text(m.body, m.size)
    out.append(f"\n\nbody ({how})\n", style="bold")
    out.append(text)
    return out


class BodyScreen(BaseScreen):
    def __init__(self, queue: str, message: PeekedMessage) -> None:
        super().__init__(name="body")
        self.queue, self.message = queue, message

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with VerticalScroll(id="body"):
            yield Static(message_text(self.message), id="body-text")
        yield from self.compose_footer()
