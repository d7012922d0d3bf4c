"""A deterministic fake broker for console tests and snapshots: fixed queues, a DLQ with x-death messages, and a
frozen clock (so "polled 3s ago" never changes between runs)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from console.tui.app import QdeckApp
from probes.fake import FakeBroker, FakeProbe
from probes.models import BrokerSnapshot, ConsumerInfo, DeathRecord, PeekedMessage, QueueStats
from probes.urls import parse_broker_url

FROZEN = 1_795_000_000.0
T0 = datetime(2026, 11, 24, 9, 15, tzinfo=UTC)


class FrozenProbe(FakeProbe):
    async def snapshot(self) -> BrokerSnapshot:
        snap = await super().snapshot()
        return dataclasses.replace(snap, taken_at=FROZEN)


def q(name: str, depth: int, *, kind: str = "queue", in_flight: int = 0, consumers: int = 1,
      rates: tuple[float | None, float | None] = (None, None), dlq: bool = False, target: str | None = None,
      lag: int | None = None) -> QueueStats:
    return QueueStats(broker="fake", name=name, kind=kind, depth=depth, in_flight=in_flight, consumers=consumers,
                      publish_rate=rates[0], deliver_rate=rates[1], dead_letter_target=target, is_dead_letter=dlq,
                      dead_letter_queues=(f"{name}.dlq",) if target else (), lag=lag,
                      dead_letter_source="arguments" if target else None)


def demo_broker() -> FakeBroker:
    deaths = (DeathRecord(queue="embed.requests", reason="rejected", count=3, exchange="dlx", time=T0),)
    messages = [
        PeekedMessage(position=0, body=b'{"text": "an input that is far too long", "tokens": 9812}', size=54,
                      body_truncated=False, message_id="m-1", headers={"tenant": "acme"}, deaths=deaths,
                      first_death_reason="rejected", first_death_queue="embed.requests"),
        PeekedMessage(position=1, body=bytes(range(0, 40)), size=40, body_truncated=False, message_id="m-2",
                      deaths=(DeathRecord(queue="embed.requests", reason="expired", count=1, time=T0),)),
    ]
    return FakeBroker(
        queues=[q("embed.requests", 1200, in_flight=32, consumers=4, rates=(210.0, 180.5), target="dlx"),
                q("embed.requests.dlq", 2, consumers=0, dlq=True),
                q("rerank.requests", 40, in_flight=8, consumers=2, rates=(55.0, 60.0)),
                q("events", 5000, kind="topic", consumers=3, lag=350),
                q("evil\x1b]0;pwned\x07", 1)],
        messages={"embed.requests.dlq": messages},
        consumers=[ConsumerInfo(queue="embed.requests", tag="worker-a", connection="10.0.0.5:51234", channel="1",
                                prefetch=32, ack_required=True, active=True)])


def demo_app(name: str = "snap", interval: float = 3600.0) -> tuple[QdeckApp, FakeBroker]:
    broker = demo_broker()
    target = parse_broker_url(f"memory://{name}")
    app = QdeckApp([target], interval=interval, clock=lambda: FROZEN + 3,
                   probes={target.label: FrozenProbe(target, broker=broker)})
    return app, broker


def screen_text(app: QdeckApp) -> str:
    """What the terminal shows now, as plain text lines (the modal on top included)."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return "\n".join("".join(seg.text for seg in strip) for strip in update.strips)  # type: ignore[attr-defined]
