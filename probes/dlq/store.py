"""``DeadLetterStore``: one broker's side of the dead-letter actions on one source, and the lazy table of stores.

The engine drives a store like this (a store never decides what to move; it reads, writes and removes exactly):

    async with store:                                   # connects; aclose() on the way out
        problems = await store.preflight(place)         # before writing: what would go wrong at this destination
        async for batch in store.read(n):               # Records in the source's order, held until settled
            ok = await store.publish(pairs)             # confirmed at each destination (per record: None or why not)
            ... journal ...
            gone = await store.remove(records)          # only confirmed ones: ack, XDEL, commit past them
            await store.release(records)                # the rest: back as they were (nack+requeue, nothing ...)

Stores whose publish and remove are one atomic step (Redis MULTI/EXEC) remove inside ``publish`` and say so with
``atomic = True``; ``remove`` is then a no-op for what ``publish`` moved.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from probes.dlq.model import Place, Record
from probes.errors import ConfigError
from probes.urls import BrokerTarget


@runtime_checkable
class DeadLetterStore(Protocol):
    target: BrokerTarget
    source: str  # the queue / topic / stream / list / RQ queue read from
    atomic: bool  # publish also removes (one transaction); remove() does nothing for those records

    async def __aenter__(self) -> DeadLetterStore: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...

    async def count(self) -> int | None:
        """How many messages the source holds now (for the progress bar's total), None when unknown."""
        ...

    def read(self, batch: int) -> AsyncIterator[list[Record]]:
        """Every message in the source once, oldest first, in batches of at most ``batch``. A record stays held
        (RabbitMQ: unacked) until ``publish``+``remove``, ``delete`` or ``release`` settles it; the iterator ends
        when the source has no message left that this walk has not returned (never loops over released ones)."""
        ...

    async def preflight(self, place: Place) -> list[str]:
        """Why writing to ``place`` would be wrong, one line each (it does not exist; nobody consumes it; it
        dead-letters straight back into the source; a quorum queue's delivery limit the message already
        exceeded), or [] when it looks right. Never writes."""
        ...

    def parked(self) -> Place | None:
        """Where a redrive parks a message past --max-redrives (``<source>.parked``, like the source), or None
        where the broker has no such place (it is then skipped and left where it is)."""
        ...

    async def resolve(self, name: str) -> Place:
        """The place ``--to NAME`` (or ``move SRC DST``, ``import --to``) names on this broker: a queue, a topic,
        a stream or a list (an existing key's type; else like the source)."""
        ...

    async def ensure(self, place: Place) -> None:
        """Create ``place`` when qdeck owns it (the ``<source>.parked`` queue, topic or stream), like the source."""
        ...

    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        """Write each record to its place with ``extra`` headers merged over its own (qdeck-redrive-id,
        qdeck-redrive-count), keeping every property, header, key and timestamp; return when each is confirmed by
        the broker (RabbitMQ confirms with mandatory, Kafka acks=all idempotent, Redis EXEC): per pair None, or a
        one-line reason it was not written (unroutable, rejected, too large). Atomic stores also remove the
        written ones from the source in the same transaction."""
        ...

    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        """Take confirmed records out of the source (ack; Kafka: commit the qdeck group past them); the ones
        actually taken out (Kafka cannot pass a record that failed: those after it stay, journaled as confirmed,
        and the next run removes them without sending them again)."""
        ...

    async def delete(self, records: Sequence[Record]) -> None:
        """Remove records without writing them anywhere (purge, delete)."""
        ...

    async def release(self, records: Sequence[Record]) -> None:
        """Leave records in the source as they were (not selected, skipped, failed)."""
        ...

    async def write(self, place: Place, records: Sequence[Record]) -> list[str | None]:
        """Import: write records (from an export) to ``place`` as they are, confirmed; per record None or why
        not."""
        ...


# kind -> "module:Class"; the drivers are imported only when a store of theirs is opened.
STORES: dict[str, str] = {
    "rabbitmq": "probes.dlq.rabbitmq_store:RabbitMQStore",
    "kafka": "probes.dlq.kafka_store:KafkaStore",
    "redis": "probes.dlq.redis_store:open_redis_store",  # a stream, a list, or RQ's failed registry
    "memory": "probes.dlq.memory_store:MemoryStore",
}


def open_store(target: BrokerTarget, source: str, **options: Any) -> DeadLetterStore:
    """The store for ``source`` on ``target`` (not connected yet: ``async with`` connects). ``options`` a store
    does not use are ignored (``delete_records``: Kafka's purge --force)."""
    spec = STORES.get(target.kind)
    if spec is None:
        raise ConfigError(f"dead-letter actions are not available for {target.kind} brokers ({target.display})")
    module_name, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), name)
    store: DeadLetterStore = factory(target, source, **options)
    return store
