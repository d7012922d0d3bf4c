"""``ChannelWriter`` writes exactly the frames pika's own ``basic_publish`` and ``basic_ack`` would write."""

from __future__ import annotations

from typing import Any

import pika.exceptions as pexc
import pytest
from pika import frame, spec

from loadgen.brokers.amqp import AckPlan, ChannelWriter
from tests.pika_writes import WriteChannel, WriteConn


def _pika_publish(number: int, body_max: int, key: str, body: bytes) -> bytes:
    """What pika's Connection._send_message marshals for basic_publish('', key, body)."""
    out = [frame.Method(number, spec.Basic.Publish(exchange="", routing_key=key)).marshal(),
           frame.Header(number, len(body), spec.BasicProperties()).marshal()]
    for start in range(0, len(body), body_max):
        out.append(frame.Body(number, body[start:start + body_max]).marshal())
    return b"".join(out)


@pytest.mark.parametrize("body_max", [131_064, 10])
def test_publish_and_ack_bytes_are_pikas(body_max: int) -> None:
    conn = WriteConn(body_max)
    writer = ChannelWriter(WriteChannel(conn))  # type: ignore[arg-type]
    messages = [("requests", b'{"seq":1}'), ("qdeck.reply.ab", b""), ("requests", "ünï".encode() * 9),
                ("requests", b'{"seq":2}')]
    acks = [(1, False), (2, True), (2**40, False)]
    writer.publish(messages)
    writer.ack(acks)
    writer.publish(messages[:1], acks[:2])
    assert len(conn.written) == 3  # one write per call
    published = b"".join(_pika_publish(3, body_max, k, b) for k, b in messages)
    acked = b"".join(frame.Method(3, spec.Basic.Ack(delivery_tag=t, multiple=m)).marshal() for t, m in acks)
    assert conn.written[0] == published
    assert conn.written[1] == acked
    assert conn.written[2] == _pika_publish(3, body_max, *messages[0]) + acked[:2 * 21]
    assert conn.bytes_sent == sum(map(len, conn.written))
    # counted as pika counts its frames: three per publish with a one-frame body (two with none), one per ack
    bodies = sum(2 + -(-len(b) // body_max) for _k, b in messages)
    assert conn.frames_sent == bodies + len(acks) + (2 + -(-len(messages[0][1]) // body_max)) + 2


def test_closed_channel_raises_and_writes_nothing() -> None:
    conn = WriteConn(100)
    writer = ChannelWriter(WriteChannel(conn, is_open=False))  # type: ignore[arg-type]
    with pytest.raises(pexc.ChannelWrongStateError):
        writer.publish([("q", b"x")])
    with pytest.raises(pexc.ChannelWrongStateError):
        writer.ack([(1, False)])
    assert conn.written == []


def test_without_pika_internals_it_goes_through_pikas_api() -> None:
    calls: list[Any] = []

    class Channel:
        channel_number, is_open, connection = 1, True, object()

        def basic_publish(self, exchange: str, key: str, body: bytes) -> None:
            calls.append(("publish", exchange, key, body))

        def basic_ack(self, tag: int, multiple: bool = False) -> None:
            calls.append(("ack", tag, multiple))

    writer = ChannelWriter(Channel())  # type: ignore[arg-type]
    writer.publish([("q", b"a"), ("q", b"b")])
    writer.ack([(7, False)])
    writer.publish([("q", b"c")], [(9, True)])
    assert calls == [("publish", "", "q", b"a"), ("publish", "", "q", b"b"), ("ack", 7, False),
                     ("publish", "", "q", b"c"), ("ack", 9, True)]


def test_ack_plan_uses_multiple_only_below_the_oldest_delivery_in_hand() -> None:
    plan = AckPlan()
    for tag in range(1, 11):
        plan.received(tag)
    # Two batches in the model at once: 1-4 and 5-8; the second finishes first.
    assert plan.acks([5, 6, 7, 8]) == [(5, False), (6, False), (7, False), (8, False)]  # 1-4 still in hand
    assert plan.acks([1, 2, 3, 4]) == [(4, True)]  # 5-8 acked already: a multiple ack at 4 settles just 1-4
    plan.forget([10])  # requeued with a nack
    assert plan.acks([9]) == [(9, False)]
    assert plan.in_hand == 0
    plan.received(11)
    plan.received(12)
    assert plan.acks([12, 11]) == [(12, True)]


def test_ack_plan_acks_each_tag_once_whatever_the_order() -> None:
    """Every tag is settled by exactly one ack (a second ack of a tag closes the channel), and a multiple ack
    never covers a tag still in hand: checked against the broker's rule over many random orders."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        plan, unacked, in_hand = AckPlan(), set(), []
        tag = 0
        for _step in range(30):
            for _ in range(rng.randint(0, 4)):
                tag += 1
                plan.received(tag)
                unacked.add(tag)
                in_hand.append(tag)
            if in_hand:
                done = rng.sample(in_hand, rng.randint(1, len(in_hand)))
                for t in done:
                    in_hand.remove(t)
                for t, multiple in plan.acks(done):
                    assert t in unacked  # RabbitMQ: "unknown delivery tag" otherwise
                    covered = {u for u in unacked if u <= t} if multiple else {t}
                    assert not covered & set(in_hand)
                    unacked -= covered
                assert unacked == set(in_hand)


def test_a_write_goes_to_the_socket_at_once_and_what_it_does_not_take_goes_through_pika() -> None:
    from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport

    class Sock:
        def __init__(self, takes: list[int | Exception]) -> None:
            self.takes, self.sent = takes, b""

        def send(self, data: bytes) -> int:
            take = self.takes.pop(0)
            if isinstance(take, Exception):
                raise take
            self.sent += data[:take]
            return take

    class Transport(_AsyncPlaintextTransport):
        def __init__(self, sock: Sock, queued: int = 0) -> None:  # no event loop: only what _emit looks at
            self._state, self._sock, self.queued = self._STATE_ACTIVE, sock, queued

        def get_write_buffer_size(self) -> int:
            return self.queued

    body = b"x" * 50
    for takes, queued, to_socket, to_pika in [
        ([10_000], 0, "all", 0),  # all at once: nothing left for pika
        ([20], 0, 20, "rest"),  # a partial send: pika writes the rest, in order
        ([BlockingIOError()], 0, 0, "all"),
        ([ConnectionResetError()], 0, 0, "all"),  # pika meets the error itself and closes its way
        ([], 5, 0, "all"),  # earlier bytes still queued in pika: go behind them
    ]:
        conn = WriteConn(131_064)
        conn._transport = Transport(Sock(list(takes)), queued)  # type: ignore[attr-defined]
        ChannelWriter(WriteChannel(conn)).publish([("q", body)])  # type: ignore[arg-type]
        whole = _pika_publish(3, 131_064, "q", body)
        sent = conn._transport._sock.sent  # type: ignore[attr-defined]
        assert sent + b"".join(conn.written) == whole
        assert len(sent) == (len(whole) if to_socket == "all" else to_socket)
        assert len(conn.written) == (0 if to_pika == 0 else 1)
        assert conn.bytes_sent == len(whole)


def test_persistent_messages_carry_delivery_mode_2_as_pikas_basic_publish_would() -> None:
    """``--persistent``: the content header is pika's for ``BasicProperties(delivery_mode=2)``; persistent messages go
    first, then transient ones, then acks, still in one write."""
    conn = WriteConn(10)
    writer = ChannelWriter(WriteChannel(conn))  # type: ignore[arg-type]
    persistent = [("requests", b'{"seq":1}'), ("requests", b"x" * 25)]
    transient = [("requests", b'{"seq":2}')]
    writer.publish(transient, [(7, True)], persistent=persistent)
    assert len(conn.written) == 1

    def pika_persistent(key: str, body: bytes) -> bytes:
        props = spec.BasicProperties(delivery_mode=2)
        out = [frame.Method(3, spec.Basic.Publish(exchange="", routing_key=key)).marshal(),
               frame.Header(3, len(body), props).marshal()]
        out += [frame.Body(3, body[i:i + 10]).marshal() for i in range(0, len(body), 10)]
        return b"".join(out)

    assert conn.written[0] == (b"".join(pika_persistent(k, b) for k, b in persistent)
                               + _pika_publish(3, 10, *transient[0])
                               + frame.Method(3, spec.Basic.Ack(delivery_tag=7, multiple=True)).marshal())
