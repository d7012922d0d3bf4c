"""Redis commands packed by hand (RESP), for the hot paths that write many at once without redis-py's per-command
packing and parsing: the generator's request XADDs and reply XREADs, the worker's reply XADDs. ``read_response`` on
the connection they were written to reads each reply (an error reply raises ``ResponseError`` for that command
alone, and the connection stays usable)."""

from __future__ import annotations

from typing import Any


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def xadd_head(stream: str) -> bytes:
    """The RESP prefix of ``XADD <stream> * body``; append one bulk string (the body) per command."""
    return b"*5\r\n$4\r\nXADD\r\n" + bulk(stream.encode()) + bulk(b"*") + bulk(b"body")


def pack_xadds(head: bytes, bodies: list[bytes]) -> bytes:
    return b"".join([head + b"$%d\r\n%b\r\n" % (len(b), b) for b in bodies])


def pack_xread(stream: bytes, last: bytes, count: int, block_ms: int) -> bytes:
    return (b"*8\r\n$5\r\nXREAD\r\n$5\r\nCOUNT\r\n" + bulk(b"%d" % count) + b"$5\r\nBLOCK\r\n"
            + bulk(b"%d" % block_ms) + b"$7\r\nSTREAMS\r\n" + bulk(stream) + bulk(last))


def xread_entries(res: Any) -> list[Any]:
    """The entries ``[[id, [field, value, ...]], ...]`` of a raw one-stream XREAD reply (RESP2 list of
    ``[stream, entries]`` or RESP3 map ``{stream: entries}``); [] on a timeout."""
    if not res:
        return []
    return next(iter(res.values())) if isinstance(res, dict) else res[0][1]


def pack_xtrim_minid(stream: bytes, min_id: bytes) -> bytes:
    return b"*4\r\n$5\r\nXTRIM\r\n" + bulk(stream) + b"$5\r\nMINID\r\n" + bulk(min_id)
