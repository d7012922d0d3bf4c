"""A virtual table for the console: only the visible rows are rendered, so 10,000 queues update in milliseconds.

Textual's DataTable builds every row it holds (1.2 s for 10,000 here); this one keeps plain rows (tuples of already
escaped strings) and renders lines on demand through the Line API. Keys: ↑ ↓ PgUp PgDn Home End move (and vim's
j k g G, Ctrl-D Ctrl-U half a page), Enter opens;
the mouse selects a row (a second click opens it) and a click on a column title sorts by it (again: reverse).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int  # 0: as wide as the widest cell, up to ``max_width``
    right: bool = False
    max_width: int = 60
    min_width: int = 0  # an auto-width column is at least this wide
    cut_middle: bool = False  # a cell too wide loses its middle (both ends tell apart), not its end
    priority: int = 0  # when the table is too wide for the screen the highest numbers give way first; 0 never does


Row = tuple[str, ...]

HEADER = Style(bold=True, reverse=True)
CURSOR = Style(reverse=True)
ALERT = Style(color="red", bold=True)
WARNED = Style(color="yellow")  # a health rule warns about the row (alerts, in red, are CRIT)
STALE = Style(dim=True, italic=True)  # figures of a broker whose polls fail: its last good snapshot's


class VirtualTable(ScrollView, can_focus=True):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(-1)", show=False),
        Binding("enter", "open", "open", show=False),
        # vim and less, as k9s users expect
        Binding("k", "move(-1)", show=False),
        Binding("j", "move(1)", show=False),
        Binding("g", "jump(0)", show=False),
        Binding("G", "jump(-1)", show=False),
        Binding("ctrl+u", "half_page(-1)", show=False),
        Binding("ctrl+d", "half_page(1)", show=False),
    ]
    DEFAULT_CSS = """
    VirtualTable { height: 1fr; }
    """
    cursor: reactive[int] = reactive(0)

    class Opened(Message):
        def __init__(self, table: VirtualTable, key: Any) -> None:
            super().__init__()
            self.table, self.key = table, key

    class Highlighted(Message):
        def __init__(self, table: VirtualTable, key: Any) -> None:
            super().__init__()
            self.table, self.key = table, key

    class Sorted(Message):
        def __init__(self, table: VirtualTable, column: str) -> None:
            super().__init__()
            self.table, self.column = table, column

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.rows: Sequence[Row] = []
        self.keys: Sequence[Any] = []
        self.alerts: set[int] = set()  # row indexes drawn in red (dead letters waiting, brokers down)
        self.stale: set[int] = set()  # row indexes drawn dim: their broker's polls fail, the figures are old
        self.warned: set[int] = set()  # row indexes drawn yellow: a health rule warns about them
        self.chosen = False  # the user moved the cursor: from then on it follows its row; until then, the top row
        self.sort_column: str | None = None
        self.sort_descending = False  # the marker: ▼ biggest (or Z) first, ▲ smallest (or A) first
        self.widths = [max(c.width, c.min_width, len(self.title(c))) for c in self.columns]
        self.hidden: set[str] = set()  # column keys not drawn (the broker column when there is one broker)
        self.narrowed: list[str] = []  # column titles given way to fit the screen's width (``_fit``)
        self._off: set[str] = set()  # the columns not drawn: hidden, or given way to the width

    # -- data ----------------------------------------------------------------------------------------------------

    def set_rows(self, keys: Sequence[Any], rows: Sequence[Row], alerts: set[int] | None = None,
                 widest: dict[str, int] | None = None, stale: set[int] | None = None,
                 warned: set[int] | None = None) -> None:
        """Replace the rows; the cursor stays on the same key when it is still there, once the user has moved it
        (before that it stays on the first row, however the rows of several brokers arrive and sort).

        ``rows`` may be lazy (a Sequence that formats row i when asked): only visible rows are ever read, except
        to size auto-width columns, which ``widest`` (column key → widest cell) spares.
        """
        current = self.keys[self.cursor] if self.chosen and 0 <= self.cursor < len(self.keys) else None
        self.keys, self.rows, self.alerts, self.stale = keys, rows, alerts or set(), stale or set()
        self.warned = warned or set()
        for i, col in enumerate(self.columns):
            title = len(self.title(col))  # the sort marker included: a title is never cut
            if col.width == 0:
                if widest is not None and col.key in widest:
                    cell = widest[col.key]
                else:
                    cell = max((len(r[i]) for r in self.rows), default=0)
                self.widths[i] = max(min(max(cell, col.min_width), col.max_width), title)
            else:
                self.widths[i] = max(col.width, title)
        self._fit()
        cursor = min(self.cursor, max(len(self.rows) - 1, 0)) if self.chosen else 0
        if current is not None:
            with contextlib.suppress(ValueError):
                cursor = self.keys.index(current)
        self.set_reactive(VirtualTable.cursor, cursor)
        self.refresh()
        self._announce()

    def _fit(self) -> None:
        """Columns give way by priority until the rest fit the width on screen (none at all before the first
        layout, when the width is not known yet); the scrollable size follows."""
        off = set(self.hidden)
        width = self.size.width
        if width > 0:
            shown = [(w, c) for w, c in zip(self.widths, self.columns, strict=False) if c.key not in off]
            total = sum(w + 1 for w, _c in shown) - 1
            for w, c in sorted(shown, key=lambda wc: -wc[1].priority):
                if total <= width or c.priority == 0:
                    break
                off.add(c.key)
                total -= w + 1
        self._off = off
        self.narrowed = [c.title for c in self.columns if c.key in off and c.key not in self.hidden]
        total = sum(w + 1 for w, c in zip(self.widths, self.columns, strict=False) if c.key not in off)
        self.virtual_size = Size(total, len(self.rows) + 1)

    def on_resize(self, _event: events.Resize) -> None:
        before = self._off
        self._fit()
        if self._off != before:
            self.refresh()

    @property
    def current_key(self) -> Any:
        return self.keys[self.cursor] if 0 <= self.cursor < len(self.keys) else None

    # -- rendering -----------------------------------------------------------------------------------------------

    def title(self, col: Column) -> str:
        if col.key != self.sort_column:
            return col.title
        return col.title + (" ▼" if self.sort_descending else " ▲")

    def _cells(self, values: Sequence[str]) -> str:
        out = []
        for value, width, col in zip(values, self.widths, self.columns, strict=False):
            if col.key in self._off:
                continue
            if len(value) <= width:
                text = value
            elif col.cut_middle and width > 8:
                head = (width - 1) // 2
                text = value[:head] + "…" + value[len(value) - (width - 1 - head):]
            else:
                text = value[: max(width - 1, 0)] + "…"
            out.append(text.rjust(width) if col.right else text.ljust(width))
        return " ".join(out)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:  # the header stays put
            line = self._cells([self.title(col) for col in self.columns])
            return Strip([Segment(line, HEADER)]).crop(scroll_x, scroll_x + width).extend_cell_length(width, HEADER)
        index = y - 1 + scroll_y
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        style = self.rich_style
        if index in self.alerts:
            style = style + ALERT
        elif index in self.warned:
            style = style + WARNED
        if index in self.stale:
            style = style + STALE
        if index == self.cursor:
            style = style + CURSOR
        line = self._cells(self.rows[index])
        return Strip([Segment(line, style)]).crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    # -- cursor and input ----------------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        scroll_y = self.scroll_offset.y
        height = max(self.size.height - 1, 1)
        if new < scroll_y:
            self.scroll_to(y=new, animate=False)
        elif new >= scroll_y + height:
            self.scroll_to(y=new - height + 1, animate=False)
        self._announce()

    def _announce(self) -> None:
        if self.rows:
            self.post_message(self.Highlighted(self, self.current_key))

    def action_move(self, delta: int) -> None:
        if self.rows:
            self.chosen = True
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(self.size.height - 2, 1))

    def action_half_page(self, direction: int) -> None:
        self.action_move(direction * max((self.size.height - 1) // 2, 1))

    def action_jump(self, where: int) -> None:
        if self.rows:
            self.chosen = True
            self.cursor = 0 if where == 0 else len(self.rows) - 1

    def action_open(self) -> None:
        if self.rows:
            self.post_message(self.Opened(self, self.current_key))

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x + self.scroll_offset.x
            edge = 0
            for col, width in zip(self.columns, self.widths, strict=False):
                if col.key in self._off:
                    continue
                edge += width + 1
                if x < edge:
                    self.post_message(self.Sorted(self, col.key))
                    return
            return
        index = event.y - 1 + self.scroll_offset.y
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain >= 2:
                self.action_open()
            self.chosen = True
            self.cursor = index

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.refresh()
