"""``DeliveryReader`` on large messages: a body split over many frames and many reads is parsed in linear work.

The work is observed, never timed: the bytes the reader allocates while a delivery arrives (tracemalloc, read by
read: a copy of the buffer or of a frame is an allocation) and the function calls it makes (``sys.setprofile``:
re-parsing the frames already received shows as calls). Reading the whole buffer again on every read makes both
grow with size² / read size; parsing each frame once makes them grow with the size.
"""

from __future__ import annotations

import sys
import tracemalloc
from types import FrameType
from typing import Any

import pytest
from pika import frame, spec

from loadgen.brokers.amqp import READ_SLICE_BYTES
from probes.rabbitmq.amqp_deliveries import DeliveryReader
from tests.loadgen.test_amqp_deliveries import _Channel, _Conn, _count_frames, _deliver

SIZE = 10 * 1024 * 1024  # 10 MiB
FRAME_PAYLOAD = 131_064  # pika's body frame payload at RabbitMQ's default frame_max (131,072)


def _reader() -> tuple[_Conn, _Channel, list[tuple[bytes, int, Any]]]:
    conn, channel = _Conn(), _Channel()
    got: list[tuple[bytes, int, Any]] = []
    DeliveryReader.of(conn).consume(channel, "q", lambda body, tag, props: got.append((body, tag, props)),
                                    auto_ack=True)
    return conn, channel, got


def _reads(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _body(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def test_a_10_mib_delivery_in_64_kib_reads_allocates_a_few_times_its_size() -> None:
    body = _body(SIZE)
    reads = _reads(_deliver(1, "ctag1.q", 1, body, body_max=FRAME_PAYLOAD), 64 * 1024)
    conn, _channel, got = _reader()
    allocated = 0
    tracemalloc.start()
    try:
        for data in reads:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            conn._on_data_available(data)  # the reader stands in pika's place
            allocated += tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert [(b == body, tag) for b, tag, _p in got] == [(True, 1)]
    # The body itself is one allocation of its size; the frames once more; a read's leftover at most once again.
    assert allocated <= 3 * SIZE, f"{allocated / SIZE:.1f}× the body allocated over {len(reads)} reads"


def test_a_10_mib_delivery_in_read_slices_is_parsed_frame_by_frame_once() -> None:
    body = _body(SIZE)
    data = _deliver(1, "ctag1.q", 7, body, body_max=FRAME_PAYLOAD)
    reads = _reads(data, READ_SLICE_BYTES)
    n_reads, frames = len(reads), _count_frames(data)
    conn, _channel, got = _reader()
    calls = 0

    def count(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        for chunk in reads:
            conn._on_data_available(chunk)
    finally:
        sys.setprofile(None)
    assert [(b == body, tag) for b, tag, _p in got] == [(True, 7)]
    # A few calls per read (keep the bytes) and per frame (parse it once); re-parsing every frame received so far
    # on every read makes this ~frames × reads / 2.
    assert calls <= 10 * (n_reads + frames), f"{calls:,} calls for {n_reads:,} reads of {frames} frames"
    assert conn.bytes_received == len(data) and conn.frames_received == frames and conn.to_pika == []


@pytest.mark.parametrize(("size", "frame_payload", "read"),
                         [(5_000, 1_000, 1), (5_000, 1_000, 5), (5_000, 1_000, 11), (300_000, FRAME_PAYLOAD, 4096),
                          (300_000, FRAME_PAYLOAD, READ_SLICE_BYTES), (300_000, FRAME_PAYLOAD, 100_003)])
def test_large_and_small_deliveries_split_anywhere(size: int, frame_payload: int, read: int) -> None:
    big = _body(size)
    small = [b'{"seq":%d}' % i for i in range(3)]
    heartbeat = frame.Heartbeat().marshal()
    props = spec.BasicProperties(headers={"k": "v"}, content_type="application/octet-stream")
    data = b"".join([_deliver(1, "ctag1.q", 1, small[0]),
                     _deliver(1, "ctag1.q", 2, big, props, body_max=frame_payload), heartbeat,
                     _deliver(1, "ctag1.q", 3, big[:frame_payload], body_max=frame_payload),
                     _deliver(1, "ctag1.q", 4, small[1]), _deliver(1, "ctag1.q", 5, big, body_max=frame_payload // 7),
                     _deliver(1, "ctag1.q", 6, small[2])])
    conn, _channel, got = _reader()
    for chunk in _reads(data, read):
        conn._on_data_available(chunk)
    assert [b for b, _t, _p in got] == [small[0], big, big[:frame_payload], small[1], big, small[2]]
    assert all(type(b) is bytes for b, _t, _p in got)
    assert [t for _b, t, _p in got] == list(range(1, 7))
    assert got[1][2].headers == {"k": "v"} and got[1][2].content_type == "application/octet-stream"
    assert conn.to_pika == [heartbeat]
    assert conn.bytes_received == len(data) and conn.frames_received == _count_frames(data)
    assert DeliveryReader.of(conn)._buffer == b""


def _whole_frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        size = int.from_bytes(data[3:7], "big") + 8
        out.append(data[:size])
        data = data[size:]
    return out


@pytest.mark.parametrize("read", [7, 50_000])
def test_a_consumer_cancelled_while_its_delivery_arrives_leaves_it_to_pika_whole(read: int) -> None:
    big = _body(400_000)
    first = _deliver(1, "ctag1.q", 1, big, body_max=FRAME_PAYLOAD)
    after = _deliver(1, "ctag1.q", 2, b"after")
    conn, channel, got = _reader()
    half = len(first) // 2
    for chunk in _reads(first[:half], read):
        conn._on_data_available(chunk)
    assert got == [] and conn.to_pika == []
    channel._cancelled.add("ctag1.q")  # pika rejects the deliveries of a cancelled consumer: they are its to parse
    for chunk in _reads(first[half:] + after, read):
        conn._on_data_available(chunk)
    assert got == []
    assert conn.to_pika == _whole_frames(first + after)
    assert conn.bytes_received == len(first + after)
    assert DeliveryReader.of(conn)._buffer == b""


@pytest.mark.parametrize("read", [9, 30_000, 10**6])
def test_a_foreign_frame_inside_a_delivery_hands_the_delivery_to_pika_and_the_next_is_parsed(read: int) -> None:
    big = _body(300_000)
    split = _whole_frames(_deliver(1, "ctag1.q", 1, big, body_max=FRAME_PAYLOAD))  # method, header, 3 bodies
    other_channel = frame.Method(2, spec.Basic.QosOk()).marshal()
    broken = b"".join(split[:3]) + other_channel + b"".join(split[3:])
    nxt = _deliver(1, "ctag1.q", 2, big, body_max=FRAME_PAYLOAD)
    conn, _channel, got = _reader()
    for chunk in _reads(broken + nxt, read):
        conn._on_data_available(chunk)
    assert conn.to_pika == _whole_frames(broken)  # in order, each whole: pika decides what it makes of it
    assert [(b == big, t) for b, t, _p in got] == [(True, 2)]
    assert conn.bytes_received == len(broken + nxt)
    assert conn.frames_received == _count_frames(broken + nxt)
    assert DeliveryReader.of(conn)._buffer == b""
