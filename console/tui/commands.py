"""The ``:`` command palette: jump to a view, or straight to a queue by name."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from console.safe_text import safe
from console.tui.messages import OpenQueue

if TYPE_CHECKING:
    from console.tui.protocol import ConsoleApp

VIEWS = [("overview", "every queue, topic and stream", "overview"),
         ("dead letters", "dead-letter queues and their messages", "dead_letters"),
         ("lag", "consumer-group lag and time to drain", "lag"),
         ("brokers (ctx)", "every broker and profile with its full error; Enter shows only that one", "brokers"),
         ("health", "the health rules' findings per broker (what qdeck check judges)", "health"),
         ("load run", "a load run's stages, SLOs and rate beside its request queue", "load_run"),
         ("help", "the keys", "help")]
MAX_QUEUE_HITS = 50


class ViewCommands(Provider):
    @property
    def qapp(self) -> ConsoleApp:
        return cast("ConsoleApp", self.app)

    async def discover(self) -> Hits:
        for name, help_text, action in VIEWS:
            yield DiscoveryHit(name, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action in VIEWS:
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self.app.run_action, action), help=help_text)
        hits = 0
        for label, st in self.qapp.shown_states().items():
            for q in st.queues():
                shown = safe(q.name, 80)
                score = matcher.match(shown)
                if score > 0:
                    yield Hit(score, matcher.highlight(shown), partial(self.app.post_message, OpenQueue(label, q.name)),
                              help=f"{q.kind} on {safe(label, 40)}, depth {q.depth:,}")
                    hits += 1
                    if hits >= MAX_QUEUE_HITS:
                        return
