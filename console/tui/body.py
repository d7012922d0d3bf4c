"""One message in full: properties, headers, deaths, and the body — JSON pretty-printed, text shown safely,
binary as a hex dump. Everything from the broker is escaped and cut to PEEK_BODY_BYTES (the one peek body
limit)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.render import fmt_time
from console.safe_text import is_binary, json_text, safe
from console.tui.base import BaseScreen
from console.tui.screenshot import screenshot_dir
from probes.models import PEEK_BODY_BYTES, PeekedMessage
from probes.serialize import to_jsonable


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


def save_message(queue: str, m: PeekedMessage, directory: Path | None = None) -> Path:
    """Write ``m`` as ``qdeck dlq peek --json`` writes a message (every header and property, the body as text or
    base64) to ``qdeck-message-<queue>-<id>.json`` in ``directory`` (default: where screenshots go); the path."""
    ident = m.message_id or (f"{m.partition}-{m.offset}" if m.offset is not None else str(m.position))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"qdeck-message-{queue}-{ident}")[:150] + ".json"
    path = (directory or screenshot_dir()) / name
    doc = {"queue": queue, "message": to_jsonable(m)}
    path.write_text(json_text(doc) + "\n", encoding="ascii")
    return path.resolve()


OSC52_MAX_CHARS = 100_000  # what terminals take in one OSC 52 (xterm's default limit is about this)


def clipboard_text(m: PeekedMessage) -> tuple[str | None, str]:
    """(the body as it is copied, what to tell the user): its text as qdeck shows it anywhere (control characters
    escaped: a clipboard pasted into a shell must not carry escape sequences), cut to OSC52_MAX_CHARS; None for a
    binary body (``w`` saves it whole, in base64)."""
    if is_binary(m.body):
        return None, "the body is binary: w saves it whole (base64 in JSON) instead"
    text = safe(m.body.decode("utf-8", errors="backslashreplace"), None, keep_newlines=True)
    notes = []
    if len(text) > OSC52_MAX_CHARS:
        text = text[:OSC52_MAX_CHARS]
        notes.append(f"cut to {OSC52_MAX_CHARS:,} characters (terminals take no more at once; w saves it whole)")
    if m.body_truncated:
        notes.append(f"the peek read {len(m.body):,} of {m.size:,} bytes")
    return text, f"copied the body ({len(text):,} characters) through OSC 52" + (f": {'; '.join(notes)}" if notes
                                                                                   else "")


class BodyScreen(BaseScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("w", "save", "save to a file"),
                                             Binding("y", "copy", "copy body")]

    def __init__(self, queue: str, message: PeekedMessage) -> None:
        super().__init__(name="body")
        self.queue, self.message = queue, message

    def action_save(self) -> None:
        """w: the whole message as JSON in a file, and where it went (or why it could not be written)."""
        try:
            saved = save_message(self.queue, self.message)
        except OSError as exc:
            self.notify(f"could not save the message: {safe(exc.strerror or exc, 200)} "
                        f"({safe(exc.filename or screenshot_dir(), 200)})", title="Save", severity="error",
                        markup=False)
            return
        cut = (f"; its body was cut at {len(self.message.body):,} of {self.message.size:,} bytes by the peek"
               if self.message.body_truncated else "")
        self.notify(f"saved to {safe(str(saved), 300)}{cut}", title="Save", markup=False)

    def action_copy(self) -> None:
        """y: the body to the clipboard through OSC 52 (the terminal puts it there, over SSH too), only when the
        console was started with --clipboard; otherwise it says how to turn it on."""
        if not self.qapp.osc52:
            self.notify("copying is off: start the console with --clipboard to copy through OSC 52 (the terminal "
                        "sets your clipboard; tmux needs set-clipboard on); w saves the message to a file",
                        title="Copy", severity="warning", markup=False)
            return
        text, said = clipboard_text(self.message)
        if text is None:
            self.notify(said, title="Copy", severity="warning", markup=False)
            return
        self.app.copy_to_clipboard(text)
        self.notify(said, title="Copy", markup=False)

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with VerticalScroll(id="body"):
            yield Static(message_text(self.message), id="body-text")
        yield from self.compose_footer()
