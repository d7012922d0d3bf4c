"""Queue detail: settings and dead-letter target, depth and rate history, consumers, and messages peeked on demand.

A peek runs only when asked (``p``). On RabbitMQ it first says what it does — messages are requeued and come back
marked redelivered — and waits for ``y`` (``P`` on a quorum queue with a delivery limit, where each peek counts as a
delivery); a RabbitMQ stream cannot be peeked, and it says so without asking. A DLQ's messages show their reason,
original queue, death count and first/last death times; Enter opens the body viewer.

The messages come a page at a time: ``]`` the next page, ``[`` the one before, ``r`` newest first / oldest first,
``i`` (Redis streams) a consumer group's pending entries with idle time, delivery count and consumer. The title says
which messages of how many are shown, in which order. Pages follow the probe's cursor (``PeekResult.next``), so they
neither repeat nor skip; ``[`` reads the page before again from its own cursor. RabbitMQ cannot seek: every page asks
first, and the dialog says how many messages it takes again.

``space`` marks messages, ``/`` filters the page, ``*`` marks what it shows; ``R`` ``M`` ``X`` ``E`` redrive, move,
delete (purge) or export the marked ones, or the whole queue (``console/tui/peek_marks.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Sparkline, Static

from console.render import fmt_duration, fmt_rate, fmt_time, fmt_ttl, page_caption
from console.safe_text import preview_bytes, safe
from console.tui.confirm import ConfirmPeek
from console.tui.dlq_action import writable
from console.tui.messages import ConsumersDone, PeekDone
from console.tui.peek_marks import MARK, MarkingScreen, Marks, matches
from console.tui.table import Column, VirtualTable
from probes.errors import ProbeError, UnsafeOperation
from probes.models import PeekCursor, PeekedMessage, PeekFrom, PeekResult, QueueStats
from probes.paging import rabbitmq_fetch_count
from probes.redact import redact_text

PEEK_LIMIT = 20
ID_WIDTH = 41  # a Redis entry id (two 20-digit numbers and a dash), a UUID message id, a Kafka partition:offset
# priority: on a narrow screen the times give way first; the id, the reason and the body stay
MESSAGE_COLUMNS = [Column("pos", "#", 0, max_width=ID_WIDTH + len(MARK), min_width=8),
                   Column("reason", "reason", 0, max_width=28, priority=1),
                   Column("origin", "original queue", 0, max_width=30, priority=3),
                   Column("count", "deaths", 6, right=True, priority=4),
                   # a group's pending entries only (Redis streams, ``i``): hidden otherwise
                   Column("idle", "idle", 6, right=True), Column("deliveries", "deliveries", 10, right=True),
                   Column("consumer", "consumer", 0, max_width=24, priority=2),
                   Column("first", "first death", 23, priority=7), Column("last", "last death", 23, priority=6),
                   Column("size", "bytes", 9, right=True, priority=5), Column("body", "body", 0, max_width=80)]
PENDING_COLUMNS = {"idle", "deliveries", "consumer"}
CONSUMER_COLUMNS = [Column("tag", "consumer", 0, max_width=40),
                    Column("conn", "connection", 0, max_width=30, priority=3),
                    Column("prefetch", "prefetch", 8, right=True, priority=2), Column("ack", "ack", 5, priority=4),
                    Column("active", "active", 6, priority=1)]


def message_ref(m: PeekedMessage) -> str:
    """What tells a peeked message apart: Kafka's partition:offset (an offset alone repeats across partitions),
    else the broker's id (a Redis entry id, a message id), else its position in the peek."""
    if m.partition is not None and m.offset is not None:
        return f"{m.partition}:{m.offset}"
    if m.message_id:
        return safe(m.message_id, ID_WIDTH)
    return str(m.offset if m.offset is not None else m.position)


def message_row(m: PeekedMessage, mark: str = "") -> tuple[str, ...]:
    """A peeked message's row; ``mark`` goes before its id (``MARK``, or as many spaces while others are marked)."""
    idle = fmt_duration(None if m.idle_ms is None else m.idle_ms / 1000)
    deliveries = "-" if m.delivery_count is None else f"{m.delivery_count:,}"
    return (mark + message_ref(m), safe(m.death_reason or "-", 60), safe(m.original_queue or "-", 60),
            str(m.death_count) if m.deaths else "-", idle, deliveries, safe(m.consumer or "-", 60),
            fmt_time(m.first_death_time), fmt_time(m.last_death_time),
            f"{m.size:,}", preview_bytes(m.body, 80, total=m.size))


@dataclass
class PageDone(PeekDone):
    """A page arrived: ``request`` numbers the ask it answers (a later ask wins), ``step`` is where it moves the
    walk (``first`` page, ``next`` page, ``back`` a page), ``start`` the cursor it was read from."""

    request: int = 0
    step: str = "first"
    start: PeekCursor | None = None


class QueueDetailScreen(MarkingScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "peek", "peek messages"),
        Binding("P", "peek(True)", "peek anyway", show=False),
        Binding("right_square_bracket", "page_next", "next page", show=False),
        Binding("left_square_bracket", "page_back", "previous page", show=False),
        Binding("r", "newest", "newest first", show=False),
        Binding("i", "pending", "pending entries", show=False),
        Binding("c", "consumers", "consumers"),
        Binding("tab", "app.focus_next", "next table", show=False),
        Binding("space", "mark", "mark", show=False),
        Binding("asterisk", "mark_all", "mark all shown", show=False),
        Binding("slash", "filter", "filter messages", show=False),
        Binding("R", "act('redrive')", "redrive"),
        Binding("M", "act('move')", "move"),
        Binding("X", "act('delete')", "purge/delete"),
        Binding("E", "act('export')", "export"),
    ]

    def __init__(self, broker: str, queue: str, *, auto_peek: bool = False) -> None:
        super().__init__(name="detail")
        self.broker, self.queue = broker, queue
        self.auto_peek = auto_peek
        self.messages: list[PeekedMessage] = []
        self.newest = False  # newest first (r)
        self.pending: str | None = None  # Redis streams: the group whose pending entries are shown (i)
        self.pages: list[PeekCursor | None] = []  # where each page up to the one shown started (None: the first)
        self.result: PeekResult | None = None  # the page shown
        self.asked = 0  # the last page asked for (a slower, earlier answer is dropped)
        self.scope: str | None = None  # the walk's range, as its first page said
        self.marks = Marks("")  # space, *: what R M X E act on (its broker kind is set on mount)
        self.needle = ""  # the peek filter (/): the rows shown and what * marks

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with Vertical(id="detail"):
            yield Static(id="info")
            with Horizontal(classes="history"):
                yield Label("depth ", classes="spark-title")
                yield Sparkline([], id="depth")
            with Horizontal(classes="history"):
                yield Label("in/s  ", classes="spark-title")
                yield Sparkline([], id="publish")
            with Horizontal(classes="history"):
                yield Label("out/s ", classes="spark-title")
                yield Sparkline([], id="deliver")
            yield Label("consumers (c to refresh)", classes="section")
            yield VirtualTable(CONSUMER_COLUMNS, id="consumers")
            yield Label("messages: p to peek", id="messages-title", classes="section")
            box = Input(placeholder="filter these messages: id, reason, original queue or body text (Enter keeps "
                                    "it, Esc clears; * marks what it shows)", id="filter")
            box.display = False
            yield box
            messages = VirtualTable(MESSAGE_COLUMNS, id="messages")
            messages.hidden = set(PENDING_COLUMNS)
            yield messages
        yield from self.compose_footer()

    def on_mount(self) -> None:
        target = self.qapp.targets.get(self.broker)
        self.marks.kind = target.kind if target is not None else ""
        self.refresh_data()
        self.action_consumers()
        self.query_one("#messages", VirtualTable).focus()
        if self.auto_peek:
            self.action_peek()

    @property
    def stats(self) -> QueueStats | None:
        st = self.qapp.states.get(self.broker)
        return st.snapshot.queue(self.queue) if st and st.snapshot else None

    def refresh_data(self) -> None:
        q = self.stats
        info = Text()
        info.append(f"{safe(self.queue, 120)}", style="bold")
        info.append(f"  on {safe(self.broker, 40)}\n")
        if q is None:
            info.append("not in the latest snapshot (deleted, filtered by the broker, or not polled yet)",
                        style="yellow")
        else:
            st = self.qapp.states.get(self.broker)
            age = st.stale_s(self.qapp.clock()) if st is not None else None
            if st is not None and age is not None:
                info.append(f"stale: the figures below are from the last good poll, {fmt_duration(age)} ago — "
                            f"{safe(st.health.last_error or 'the broker does not answer', 160)}\n",
                            style="bold yellow")
            kind_type = q.kind + (f" · {q.queue_type}" if q.queue_type and q.queue_type != q.kind else "")
            info.append(f"{kind_type}"
                        f"{' · ' + q.state if q.state else ''} · depth {q.depth:,} · in flight {q.in_flight:,} · "
                        f"consumers {q.consumers} · in {fmt_rate(q.publish_rate)}/s · out "
                        f"{fmt_rate(q.deliver_rate)}/s" + (f" · lag {q.lag:,}" if q.lag is not None else "")
                        + (f" (rates from {safe(q.rate_source, 40)})" if q.rate_source else ""),
                        style="dim italic" if age is not None else "")
            if q.is_dead_letter:
                info.append("\nthis is a dead-letter queue", style="bold red" if q.depth else "red")
            if q.dead_letter_target:
                routes = f" → {', '.join(safe(x, 60) for x in q.dead_letter_queues)}" if q.dead_letter_queues else ""
                source = f" ({safe(q.dead_letter_source, 40)})" if q.dead_letter_source else ""
                if q.dead_letter_overrides:
                    source = f" (argument, overrides {safe(q.dead_letter_overrides, 40)})"
                info.append(f"\ndead letters go to {safe(q.dead_letter_target, 80)}{routes}{source}")
            if q.message_ttl_ms is not None:
                info.append(f"\nmessage TTL {fmt_ttl(q.message_ttl_ms)} ({safe(q.message_ttl_source or '?', 80)})")
            if q.delivery_limit is not None:
                info.append(f"\ndelivery limit {q.delivery_limit}: each RabbitMQ peek counts as a delivery",
                            style="yellow")
        target = self.qapp.targets.get(self.broker)
        if target is not None and not writable(target):
            info.append("\nread-only: R M X need allow_write = true in the profile (E exports)", style="dim")
        self.query_one("#info", Static).update(info)
        st = self.qapp.states.get(self.broker)
        hist = st.history.get(self.queue) if st else None
        for wid, series in (("#depth", hist.depth if hist else ()), ("#publish", hist.publish if hist else ()),
                            ("#deliver", hist.deliver if hist else ())):
            self.query_one(wid, Sparkline).data = list(series) or [0.0]

    # -- consumers -----------------------------------------------------------------------------------------------

    def action_consumers(self) -> None:
        self.run_worker(self._consumers(), group="consumers", exclusive=True, exit_on_error=False)

    async def _consumers(self) -> None:
        try:
            found = tuple(await self.qapp.probes[self.broker].consumers(self.queue))
        except ProbeError as exc:
            self.post_message(ConsumersDone(self.broker, self.queue, (), redact_text(str(exc))))
            return
        self.post_message(ConsumersDone(self.broker, self.queue, found))

    def on_consumers_done(self, message: ConsumersDone) -> None:
        table = self.query_one("#consumers", VirtualTable)
        if message.error:
            table.set_rows([None], [(f"({safe(message.error, 100)})", "", "", "", "")])
            return
        rows = [(safe(c.tag, 60), safe(c.connection or "-", 40), str(c.prefetch) if c.prefetch is not None else "-",
                 "ack" if c.ack_required else ("auto" if c.ack_required is False else "-"),
                 "yes" if c.active else ("no" if c.active is False else "-")) for c in message.consumers]
        table.set_rows(list(range(len(rows))), rows or [("(no consumers)", "", "", "", "")])

    # -- peek ----------------------------------------------------------------------------------------------------

    def action_peek(self, force: bool = False) -> None:
        """The first page, in the order and view chosen (``r``, ``i``)."""
        self._ask(None, "first", force)

    def action_page_next(self) -> None:
        if self.result is None:
            self._ask(None, "first")
        elif self.result.next is None:
            self._say("this is the last page (p reads from the start again)")
        else:
            self._ask(self.result.next, "next")

    def action_page_back(self) -> None:
        if len(self.pages) < 2:
            self._say("this is the first page")
        else:
            self._ask(self.pages[-2], "back")

    def action_newest(self) -> None:
        if self.pending is not None:
            self._say("pending entries come oldest first only (Redis's XPENDING has no reverse)")
            return
        self.newest = not self.newest
        if self.result is not None:
            self._ask(None, "first")
        else:
            self._say(f"{'newest' if self.newest else 'oldest'} first: p to peek")

    def action_pending(self) -> None:
        """Step through the stream's consumer groups' pending entries, then back to its messages."""
        q = self.stats
        st = self.qapp.states.get(self.broker)
        if st is None or st.kind != "redis" or (q is not None and q.kind != "stream"):
            self._say("pending entries (delivered, not acknowledged) are Redis streams' consumer-group lists")
            return
        groups = sorted({g.group for g in (st.snapshot.groups if st.snapshot else ()) if g.source == self.queue})
        if not groups:
            self._say("no consumer group reads this stream: nothing is pending")
            return
        at = groups.index(self.pending) + 1 if self.pending in groups else 0
        self.pending = groups[at] if at < len(groups) else None
        if self.pending is not None:
            self.newest = False
        self.query_one("#messages", VirtualTable).hidden = set() if self.pending is not None else set(PENDING_COLUMNS)
        self._ask(None, "first")

    def _say(self, text: str) -> None:
        """A line under the peek title (what a key could not do), the title itself kept."""
        title = self.query_one("#messages-title", Label)
        shown = self._title() if self.result is not None else Text("messages: p to peek")
        shown.append(f"\n{safe(text, 200)}", style="yellow")
        title.update(shown)

    def _ask(self, after: PeekCursor | None, step: str, force: bool = False) -> None:
        """Say what a peek does before asking: a RabbitMQ stream cannot be peeked at all (no dialog); any other
        RabbitMQ queue asks for every page, saying how many messages it takes (RabbitMQ cannot seek: page N takes
        the pages before it again), and one with a delivery limit asks for the forced peek, the only one it
        accepts."""
        start = PeekFrom(after=after) if after is not None else PeekFrom(newest=self.newest, pending=self.pending)
        if self.qapp.states[self.broker].kind != "rabbitmq":
            self._start_peek(start, step, force)
            return
        q = self.stats
        if q is not None and q.queue_type == "stream":
            self.query_one("#messages-title", Label).update(Text(
                "messages: a RabbitMQ stream cannot be peeked (the management API reads queues only; read a "
                "stream with a stream consumer from an offset)", style="yellow"))
            return
        limit = q.delivery_limit if q else None
        self.app.push_screen(ConfirmPeek(self.queue, limit, rabbitmq_fetch_count(PEEK_LIMIT, start)),
                             lambda ok: self._start_peek(start, step, force or limit is not None) if ok else None)

    def _start_peek(self, start: PeekFrom, step: str, force: bool) -> None:
        self.asked += 1
        self.query_one("#messages-title", Label).update("messages: peeking…")
        self.run_worker(self._peek(start, step, force, self.asked), group="peek", exclusive=True,
                        exit_on_error=False)

    async def _peek(self, start: PeekFrom, step: str, force: bool, request: int) -> None:
        probe = self.qapp.probes[self.broker]

        def done(result: PeekResult | None, error: str | None = None) -> PageDone:
            return PageDone(self.broker, self.queue, result, error, request=request, step=step, start=start.after)

        try:  # the first page of the default view is asked for as it always was (test doubles take no start)
            if start == PeekFrom():
                result = await probe.peek(self.queue, PEEK_LIMIT, force=force)
            else:
                result = await probe.peek(self.queue, PEEK_LIMIT, force=force, start=start)
        except UnsafeOperation as exc:
            self.post_message(done(None, f"refused: {exc} — P peeks anyway"))
            return
        except ProbeError as exc:
            self.post_message(done(None, redact_text(str(exc))))
            return
        self.post_message(done(result))

    def on_page_done(self, message: PageDone) -> None:
        if message.request != self.asked:
            return  # an answer to an earlier ask: the later one is coming
        if message.result is not None:
            if message.step == "next":
                self.pages.append(message.start)
            elif message.step == "back":
                self.pages.pop()
            else:
                self.pages = [None]
                self.scope = message.result.scope
        self._show(message)

    def on_peek_done(self, message: PeekDone) -> None:
        if message.result is not None:
            self.pages, self.scope = [None], message.result.scope
        self._show(message)

    def _caption(self) -> str:
        result = self.result
        if result is None:
            return "messages"
        if result.scope is None and self.scope is not None:  # a later page: the range the walk started with
            result = PeekResult(result.broker, result.queue, result.messages, first=result.first,
                                total=result.total, next=result.next, order=result.order, scope=self.scope)
        page = len(self.pages)
        keys = ["] next" if result.next is not None else "last page", "[ previous" if page > 1 else "",
                "r " + ("oldest" if self.newest else "newest") + " first" if self.pending is None else "",
                "i next group" if self.pending is not None else "", "space / * mark", "Enter opens one"]
        marked = f" · {len(self.marks):,} marked" if len(self.marks) else ""
        return f"{page_caption(result)} · page {page}{marked}  —  {', '.join(k for k in keys if k)}"

    def _show(self, message: PeekDone) -> None:
        title = self.query_one("#messages-title", Label)
        if message.result is None:
            title.update(Text(f"messages: {safe(message.error or '', 200)}", style="red"))
            return
        self.result = message.result
        self.messages = list(message.result.messages)
        table = self.query_one("#messages", VirtualTable)
        table.hidden = set() if self.pending is not None else set(PENDING_COLUMNS)
        table.chosen = False  # a new page starts at its first row
        self._rows()
        table.focus()

    def _title(self) -> Text:
        """The peek title: the caption, the filter, the page's notes."""
        text = Text(self._caption())
        if self.needle:
            shown = len(self.query_one("#messages", VirtualTable).keys)
            text.append(f"\nfilter {safe(self.needle, 60)!r}: {shown} of {len(self.messages)} shown", style="bold")
        if self.result is not None:
            for note in (self.result.side_effect, *self.result.notes):
                if note:
                    text.append(f"\nnote: {safe(note, 300)}", style="yellow")
        return text

    def _rows(self) -> None:
        """The page's rows that the filter shows (keys: their index in the page), marks before the ids, and the
        title."""
        table = self.query_one("#messages", VirtualTable)
        keys = [i for i, m in enumerate(self.messages) if matches(m, message_ref(m), self.needle)]
        pad = " " * len(MARK) if len(self.marks) else ""
        table.set_rows(keys, [message_row(m, MARK if pad and self.marks.marked(m) else pad)
                              for m in (self.messages[i] for i in keys)])
        self.query_one("#messages-title", Label).update(self._title())

    def reread(self, kind: str) -> None:
        """After an action changed the queue: its first page again (on RabbitMQ, whose peek requeues, p does it)."""
        if self.qapp.states[self.broker].kind == "rabbitmq":
            self.result, self.messages = None, []
            self.query_one("#messages", VirtualTable).set_rows([], [])
            self.query_one("#messages-title", Label).update(f"messages: the queue changed ({kind}) — p peeks again")
            return
        self._ask(None, "first")

    def on_virtual_table_opened(self, message: VirtualTable.Opened) -> None:
        if message.table.id == "messages" and isinstance(message.key, int) and message.key < len(self.messages):
            from console.tui.body import BodyScreen

            self.app.push_screen(BodyScreen(self.queue, self.messages[message.key]))
