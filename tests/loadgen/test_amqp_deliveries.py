"""``DeliveryReader`` parses its consumers' deliveries exactly as pika would and hands pika everything else."""

from __future__ import annotations

from typing import Any

import pytest
from pika import frame, spec

from probes.rabbitmq.amqp_deliveries import DeliveryReader


class _Conn:
    def __init__(self, body_max: int = 131_064) -> None:
        self._frame_buffer = b""
        self.bytes_received = self.frames_received = 0
        self.to_pika: list[bytes] = []
        self.body_max = body_max

    def _on_data_available(self, data: bytes) -> None:
        self.to_pika.append(data)
        decoded = frame.decode_frame(data)
        assert decoded[0] == len(data), "pika was handed a partial frame"
        self.bytes_received += len(data)
        self.frames_received += 1


class _Channel:
    def __init__(self, number: int = 1) -> None:
        self.channel_number, self.is_open = number, True
        self._cancelled: set[str] = set()
        self.consumers: dict[str, Any] = {}

    def basic_consume(self, queue: str, callback: Any, auto_ack: bool = False) -> str:
        tag = f"ctag1.{queue}"
        self.consumers[tag] = callback
        return tag


def _deliver(number: int, tag: str, delivery_tag: int, body: bytes, props: spec.BasicProperties | None = None,
             body_max: int = 131_064) -> bytes:
    out = [frame.Method(number, spec.Basic.Deliver(consumer_tag=tag, delivery_tag=delivery_tag, redelivered=False,
                                                   exchange="", routing_key="q")).marshal(),
           frame.Header(number, len(body), props or spec.BasicProperties()).marshal()]
    out += [frame.Body(number, body[i:i + body_max]).marshal() for i in range(0, len(body), body_max)]
    return b"".join(out)


def _count_frames(data: bytes) -> int:
    count = 0
    while data:
        data = data[int.from_bytes(data[3:7], "big") + 8:]
        count += 1
    return count


def _stream() -> tuple[bytes, list[tuple[bytes, int, dict[str, Any] | None]], list[bytes]]:
    """A byte stream, what the reader's consumer must get, and the frames pika must get (in order)."""
    heartbeat = frame.Heartbeat().marshal()
    other = _deliver(1, "someone-else", 7, b"not ours")
    qos_ok = frame.Method(1, spec.Basic.QosOk()).marshal()
    headers = spec.BasicProperties(headers={"reason": "x"}, content_type="application/json", delivery_mode=2)
    parts = [_deliver(1, "ctag1.replies", 1, b'{"seq":1}'), heartbeat,
             _deliver(1, "ctag1.replies", 2, "ünï".encode() * 40, body_max=17), other,
             _deliver(1, "ctag1.replies", 3, b"", headers), qos_ok,
             _deliver(1, "ctag1.replies", 2**40, b'{"seq":4}')]
    wanted = [(b'{"seq":1}', 1, None), ("ünï".encode() * 40, 2, None), (b"", 3, {"reason": "x"}),
              (b'{"seq":4}', 2**40, None)]
    # pika gets the foreign delivery frame by frame
    other_frames, rest = [], other
    while rest:
        size = int.from_bytes(rest[3:7], "big") + 8
        other_frames.append(rest[:size])
        rest = rest[size:]
    return b"".join(parts), wanted, [heartbeat, *other_frames, qos_ok]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_deliveries_parsed_whatever_the_reads_and_the_rest_goes_to_pika(chunk: int) -> None:
    data, wanted, pika_frames = _stream()
    conn, channel = _Conn(), _Channel()
    got: list[tuple[bytes, int, Any]] = []
    reader = DeliveryReader.of(conn)
    assert DeliveryReader.of(conn) is reader
    reader.consume(channel, "replies", lambda body, tag, props: got.append((body, tag, props)),  # type: ignore[arg-type]
                   auto_ack=True)
    for i in range(0, len(data), chunk):
        conn._on_data_available(data[i:i + chunk])  # the reader stands in pika's place now
    assert [(b, t) for b, t, _p in got] == [(b, t) for b, t, _h in wanted]
    assert got[2][2].headers == {"reason": "x"} and got[2][2].content_type == "application/json"
    assert got[0][2].headers is None
    assert conn.to_pika == pika_frames
    assert conn.bytes_received == len(data) and conn.frames_received == _count_frames(data)
    assert reader._buffer == b""


def test_a_partial_frame_pika_held_is_kept_and_a_cancelled_consumer_goes_to_pika() -> None:
    conn, channel = _Conn(), _Channel()
    first = _deliver(1, "ctag1.q", 1, b"one")
    conn._frame_buffer = first[:5]  # pika had started reading when the reader took over
    got: list[bytes] = []
    DeliveryReader.of(conn).consume(channel, "q", lambda body, tag, props: got.append(body),  # type: ignore[arg-type]
                                    auto_ack=False)
    assert conn._frame_buffer == b""
    conn._on_data_available(first[5:])
    assert got == [b"one"] and conn.to_pika == []
    channel._cancelled.add("ctag1.q")
    conn._on_data_available(_deliver(1, "ctag1.q", 2, b"two"))
    assert got == [b"one"] and len(conn.to_pika) == 3  # pika rejects it, as it does for a cancelled consumer


def test_without_pika_internals_deliveries_take_pikas_path() -> None:
    class Conn:
        pass

    channel = _Channel()
    got: list[tuple[bytes, int]] = []
    tag = DeliveryReader.of(Conn()).consume(channel, "q", lambda b, t, p: got.append((b, t)),  # type: ignore[arg-type]
                                            auto_ack=True)
    method = spec.Basic.Deliver(consumer_tag=tag, delivery_tag=5)
    channel.consumers[tag](channel, method, spec.BasicProperties(), b"via pika")
    assert got == [(b"via pika", 5)]


@pytest.mark.parametrize("chunk", [1, 5, 10_000])
def test_publisher_confirms_of_a_registered_channel_are_parsed_here_others_go_to_pika(chunk: int) -> None:
    conn, mine = _Conn(), _Channel(1)
    confirms: list[tuple[int, bool]] = []
    reader = DeliveryReader.of(conn)
    assert reader.confirms(mine, lambda tag, multiple: confirms.append((tag, multiple)))  # type: ignore[arg-type]
    theirs = frame.Method(2, spec.Basic.Ack(delivery_tag=9, multiple=True)).marshal()
    data = b"".join([frame.Method(1, spec.Basic.Ack(delivery_tag=3, multiple=True)).marshal(), theirs,
                     frame.Method(1, spec.Basic.Nack(delivery_tag=4, multiple=False, requeue=True)).marshal(),
                     frame.Heartbeat().marshal(),
                     frame.Method(1, spec.Basic.Ack(delivery_tag=2**40, multiple=False)).marshal()])
    for i in range(0, len(data), chunk):
        conn._on_data_available(data[i:i + chunk])
    assert confirms == [(3, True), (4, False), (2**40, False)]
    assert reader.confirms_parsed == 3 and reader.parsed == 0
    assert conn.to_pika == [theirs, frame.Heartbeat().marshal()]
    assert conn.frames_received == 3 + 2  # the heartbeat checker counts the frames parsed here too


def test_confirms_of_a_closed_channel_go_to_pika() -> None:
    conn, channel = _Conn(), _Channel(1)
    confirms: list[tuple[int, bool]] = []
    reader = DeliveryReader.of(conn)
    reader.confirms(channel, lambda tag, multiple: confirms.append((tag, multiple)))  # type: ignore[arg-type]
    channel.is_open = False
    ack = frame.Method(1, spec.Basic.Ack(delivery_tag=1, multiple=False)).marshal()
    conn._on_data_available(ack)
    assert confirms == [] and conn.to_pika == [ack]
