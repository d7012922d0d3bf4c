"""A stand-in for the pika connection and channel that qdeck's hand-marshalled publishes write through
(``ChannelWriter``, ``PublishFrames``): only the attributes ``probes.rabbitmq.pika_compat`` reads and writes, and
every write kept, so tests compare the bytes with what pika's own ``basic_publish`` marshals."""

from __future__ import annotations


class WriteConn:
    def __init__(self, body_max: int) -> None:
        self._body_max_length = body_max
        self.bytes_sent = self.frames_sent = 0
        self.written: list[bytes] = []

    def _adapter_emit_data(self, data: bytes) -> None:
        self.written.append(data)


class WriteChannel:
    def __init__(self, conn: WriteConn, number: int = 3, is_open: bool = True) -> None:
        self.connection, self.channel_number, self.is_open = conn, number, is_open
