"""Dead-letter actions on a RabbitMQ queue (classic or quorum), over one pika asyncio connection.

Reading is one walk of what the queue holds at the start (a passive declare's count), each message once and held
(unacked) until it is settled; those left in place (a dry run, an export, what a selection did not take, failures)
stay unacked until the walk ends, so none comes back during it, and are then requeued, marked redelivered
(``probes.rabbitmq.dlq_walk``). Side effects, listed in ``side_effects`` for the front ends: every message read is
delivered once per walk; the ones left in place are redelivered later, and on a quorum queue each such requeue
raises x-delivery-count by one. With a delivery limit that can drop (or dead-letter) a message, so such a queue
is read only with ``force`` (as peek does). A strict read-only target (``--read-only``) refuses the read itself.

Writing: publisher confirms and ``mandatory`` on a channel of its own; a message goes to a queue through the
default exchange, routing key = the queue (never its original exchange, which may fan out to other queues); a
returned (unroutable) or nacked message fails alone and stays in the source. Taking a message out is a basic.ack
after its confirm. Records (what is kept, what is not): ``probes.rabbitmq.dlq_records``.

Options (``open_store(target, source, **options)``): ``force`` (read a quorum queue with a delivery limit),
``idle_s`` (a walk ends when nothing arrives for this long), ``linger_s`` (a batch waits this long to fill).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import pika.exceptions as pexc
from pika import spec

from probes.dlq.model import Place, Record
from probes.dlq.provenance import parked_name
from probes.dlq.writes import ReadOnly, require_write
from probes.errors import ConfigError, NotFound, ProbeError, UnsafeOperation
from probes.rabbitmq.amqp_link import AmqpConnection, ConfirmChannel, QueueState
from probes.rabbitmq.deadletter import dead_letter_config, delivery_limit, message_ttl, routed_queues
from probes.rabbitmq.dlq_records import Delivered, basic_properties, raw_properties, to_record, user_id_problem
from probes.rabbitmq.dlq_walk import Walk
from probes.rabbitmq.http import ManagementClient, vhost_path
from probes.urls import BrokerTarget

IDLE_S = 1.0  # nothing delivered for this long: the walk ends (someone else took the rest)
LINGER_S = 0.02  # a batch not full yet waits this long for more deliveries
HOLD_BYTES = 16 << 20  # a quorum walk's first consumer may be sent this many body bytes at once (see read)
HOLD_MESSAGES = 20_000  # and this many messages
REQUEUE_NOTE = ("reading requeues the messages it leaves in place when it ends (a dry run or export: all of them), "
                "marked redelivered")


class RabbitMQStore:
    atomic = False

    def __init__(self, target: BrokerTarget, source: str, *, force: bool = False, idle_s: float = IDLE_S,
                 linger_s: float = LINGER_S, **_options: Any) -> None:
        self.target, self.source = target, source
        self.force, self.idle_s, self.linger_s = force, idle_s, linger_s
        self.link: AmqpConnection | None = None
        self.http: ManagementClient | None = None
        self.queue_info: dict[str, Any] | None = None  # the management API's view of the source, once read
        self.side_effects: list[str] = [REQUEUE_NOTE]
        self._confirm: ConfirmChannel | None = None
        self._walk: Walk | None = None
        self._version: str | None = None

    # ---- connecting --------------------------------------------------------------------------------------------
    async def __aenter__(self) -> RabbitMQStore:
        self.link = await AmqpConnection.open(self.target)
        try:
            await self._state(self.source)
        except BaseException:
            await self.link.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if self._walk is not None:
                with contextlib.suppress(ProbeError):
                    await self._walk.finish()
        finally:
            if self._confirm is not None:
                self._confirm.close()
            if self.link is not None:
                await self.link.aclose()
            if self.http is not None:
                await self.http.aclose()

    def _link(self) -> AmqpConnection:
        if self.link is None:
            raise ProbeError("the RabbitMQ store is not connected (use it with async with)")
        return self.link

    async def _state(self, queue: str) -> QueueState:
        try:
            return await self._link().queue_state(queue)
        except NotFound:
            raise NotFound(f"queue {queue!r} not found in vhost {self.target.path or '/'!r} on "
                           f"{self.target.label}") from None

    async def _management(self, queue: str) -> dict[str, Any] | None:
        """The management API's record of ``queue``, or None when the API cannot say (off, no permission)."""
        if self.http is None:
            self.http = ManagementClient(self.target)
        vhost = vhost_path(self.target.path or "/")
        try:
            if self._version is None:
                overview = await self.http.get("/overview", what="overview")
                self._version = str(overview.get("rabbitmq_version") or "")
            info: dict[str, Any] = await self.http.get(f"/queues/{vhost}/{vhost_path(queue)}",
                                                      what=f"queue {queue!r}")
            return info
        except ProbeError:
            return None

    async def _source_info(self) -> dict[str, Any] | None:
        if self.queue_info is None:
            self.queue_info = await self._management(self.source)
        return self.queue_info

    async def count(self) -> int | None:
        return int((await self._state(self.source)).ready)

    # ---- reading -------------------------------------------------------------------------------------------------
    async def read(self, batch: int) -> AsyncIterator[list[Record]]:
        if self.target.read_only:
            raise ReadOnly(f"refusing to read {self.source} on {self.target.label}: --read-only is set, and reading "
                           "a RabbitMQ queue requeues what it reads (redelivered; a quorum queue counts a delivery)")
        await self._check_delivery_limit()
        start = (await self._state(self.source)).ready
        if start == 0:
            return
        info = self.queue_info or {}
        first = None
        ready, nbytes = info.get("messages_ready"), info.get("message_bytes_ready")
        if info.get("type") == "quorum" and isinstance(ready, int) and isinstance(nbytes, int) and ready > 0:
            # A quorum queue requeues in order only what one consumer held (dlq_walk): one consumer with room for
            # the whole walk, as far as HOLD_BYTES of bodies allow (the management API's average size; without
            # it, the usual window).
            first = min(HOLD_MESSAGES, HOLD_BYTES // max(nbytes // ready, 1))
        link = self._link()
        walk = Walk(link, await link.channel(), self.source, start, max(batch, 1), to_record, first_prefetch=first,
                    classic=info.get("type") == "classic", idle_s=self.idle_s, linger_s=self.linger_s)
        self._walk = walk
        try:
            await walk.begin()
            while True:
                taken = await walk.next_batch()
                if not taken:
                    return
                yield taken
        finally:
            await walk.finish()
            self._walk = None

    async def _check_delivery_limit(self) -> None:
        info = await self._source_info()
        if info is None:
            note = "the management API did not answer: whether this is a quorum queue with a delivery limit is unknown"
            if note not in self.side_effects:
                self.side_effects.append(note)
            return
        if info.get("type") != "quorum":
            return
        limit = delivery_limit(info, self._version)
        note = ("on this quorum queue each requeue also raises the message's x-delivery-count by one"
                + (f" (delivery limit {limit})" if limit is not None else ""))
        if note not in self.side_effects:
            self.side_effects.append(note)
        if limit is not None and not self.force:
            raise UnsafeOperation(
                f"refusing to read quorum queue {self.source!r}: it has a delivery limit of {limit}, and every "
                "message a walk leaves in place (a dry run, an export, messages not selected) is requeued and "
                "counts a delivery, so repeated walks drop or dead-letter them; pass --force to read it anyway")

    async def release(self, records: Sequence[Record]) -> None:
        if self._walk is not None and records:
            await self._walk.hold(len(records))

    # ---- places -------------------------------------------------------------------------------------------------
    def parked(self) -> Place | None:
        return Place("queue", parked_name(self.source))

    async def resolve(self, name: str) -> Place:
        if not name or len(name.encode("utf-8", "surrogatepass")) > 255:
            raise ConfigError(f"{name!r} cannot name a RabbitMQ queue (1 to 255 bytes of UTF-8)")
        return Place("queue", name)

    async def ensure(self, place: Place) -> None:
        """Declare ``place`` (qdeck's ``<source>.parked``) durable, of the source's queue type, unless it exists."""
        require_write(self.target, f"create queue {place.name}")
        with contextlib.suppress(NotFound):
            await self._link().queue_state(place.name)
            return
        info = await self._source_info()
        kind = (info or {}).get("type")
        arguments = {"x-queue-type": kind} if kind in ("quorum", "classic") else None
        await self._link().declare(place.name, durable=True, arguments=arguments)

    async def preflight(self, place: Place) -> list[str]:
        problems: list[str] = []
        if place.kind == "exchange":  # the default exchange always exists
            exists = not place.name or await self._link().exchange_exists(place.name)
            return [] if exists else ["it does not exist (an exchange)"]
        if place.kind != "queue":
            return [f"RabbitMQ has no {place.kind}s: name a queue"]
        if place.name == self.source:
            problems.append("it is the source itself: every message would come straight back")
        try:
            state = await self._link().queue_state(place.name)
        except NotFound:
            return [*problems, "it does not exist (declare it first; qdeck creates only <source>.parked)"]
        if state.consumers == 0:
            problems.append("nobody consumes it (0 consumers)")
        info = await self._management(place.name)
        if info is not None:
            back = await self._straight_back(info, state.consumers)
            if back:
                problems.append(back)
        return problems

    async def _straight_back(self, info: dict[str, Any], consumers: int) -> str | None:
        """Whether ``info``'s queue dead-letters what it gets straight back into the source: its dead-letter route
        leads here, and nothing can consume a message first (a message TTL of 0, or a TTL and no consumer)."""
        config = dead_letter_config(info)
        ttl, _where = message_ttl(info)
        if config is None or ttl is None or (ttl > 0 and consumers):
            return None
        key = config.routing_key if config.routing_key is not None else str(info.get("name", ""))
        if not config.exchange:
            targets = [key]
        else:
            assert self.http is not None
            base = f"/exchanges/{vhost_path(self.target.path or '/')}/{vhost_path(config.exchange)}"
            try:
                exchange = await self.http.get(base, what=f"exchange {config.exchange!r}")
                bindings = await self.http.get(base + "/bindings/source", what="bindings")
            except ProbeError:
                return None
            targets = routed_queues(str(exchange.get("type", "direct")), bindings, key)
        if self.source not in targets:
            return None
        why = "a message TTL of 0 ms" if ttl == 0 else f"a message TTL of {ttl} ms and no consumer"
        return (f"it dead-letters straight back into {self.source} ({why}; dead-letter exchange "
                f"{config.exchange or '(default)'!r}, {config.source})")

    # ---- writing ------------------------------------------------------------------------------------------------
    async def _publisher(self) -> ConfirmChannel:
        if self._confirm is None or not self._confirm.usable:
            if self._confirm is not None:
                self._confirm.close()
            self._confirm = await ConfirmChannel.open(self._link())
        return self._confirm

    async def _send(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        user = self.target.username or "guest"
        out: list[str | None] = [None] * len(pairs)
        messages: list[tuple[str, str, bytes, spec.BasicProperties | bytes]] = []
        where: list[int] = []
        for i, (r, place, extra) in enumerate(pairs):
            why = user_id_problem(r, user) if "user_id" in r.properties else None
            if why is None and place.kind not in ("queue", "exchange"):
                why = f"RabbitMQ cannot write to a {place.kind}"
            if why is None:
                try:
                    props: spec.BasicProperties | bytes | None = raw_properties(r, extra)  # as it came, or encoded
                    if props is None:
                        props = basic_properties(r, extra)
                except (TypeError, ValueError, pexc.AMQPError) as exc:
                    why = f"not publishable: {type(exc).__name__}: {exc}"[:300]
            if why is not None:
                out[i] = why
                continue
            exchange, key = ("", place.name) if place.kind == "queue" else (place.name, place.routing_key or "")
            messages.append((exchange, key, r.body, props))
            where.append(i)
        if messages:
            results = await (await self._publisher()).publish(messages)
            for i, result in zip(where, results, strict=True):
                out[i] = result
        return out

    async def publish(self, pairs: Sequence[tuple[Record, Place, dict[str, Any]]]) -> list[str | None]:
        require_write(self.target, f"write to {', '.join(sorted({p.name for _r, p, _h in pairs}))}")
        return await self._send(pairs)

    async def write(self, place: Place, records: Sequence[Record]) -> list[str | None]:
        require_write(self.target, f"import into {place.name}")
        return await self._send([(r, place, {}) for r in records])

    async def remove(self, records: Sequence[Record]) -> Sequence[Record]:
        if records:
            await self._settling().ack(_tags(records))
        return records

    async def delete(self, records: Sequence[Record]) -> None:
        require_write(self.target, f"delete messages in {self.source}")
        if records:
            await self._settling().ack(_tags(records))

    def _settling(self) -> Walk:
        if self._walk is None:
            raise ProbeError(f"cannot settle messages of {self.source}: they were not read by this walk")
        return self._walk


def _tags(records: Sequence[Record]) -> list[int]:
    """The delivery tags of records this walk read (their handles)."""
    tags = []
    for r in records:
        if not isinstance(r.handle, Delivered):
            raise ProbeError(f"cannot settle message {r.id}: it was not read by this walk")
        tags.append(r.handle.tag)
    return tags
