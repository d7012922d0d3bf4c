"""Which record of a dead-letter store a peeked message is: its ``Record.id``, for ``Selection(ids=...)``.

A message marked in the console's peek is acted on by id, so the id must be the one the broker's store gives the
same message when it reads it (``probes.dlq.*_store``), or the action would take another message, or none:

- Kafka: ``partition:offset`` (``kafka_records``); the peek has both.
- Redis: a stream entry's id (``redis_records.parse_entry``) or an RQ job's id (``rq_store``): the peek's
  ``message_id``. A list value has no id: the store's is a digest of the whole value (``redis_records
  .parse_value``), so a value whose body the peek cut cannot be named. Equal values share it (an action on one
  takes every equal value: they are indistinguishable).
- RabbitMQ: the ``message_id`` property (``rabbitmq.dlq_records.to_record``). Without one the store's id is a
  digest of the message as pika decodes it (property and header types the management API's JSON does not keep),
  so such a message cannot be named from a peek. Messages sharing a message_id are taken together.
- memory (tests): ``message_id``.
"""

from __future__ import annotations

from probes.errors import Unsupported
from probes.models import PeekedMessage


def store_id(kind: str, m: PeekedMessage) -> str:
    """The id ``kind``'s dead-letter store gives the record ``m`` was peeked from; Unsupported (one line, why)
    when the peek does not tell it."""
    if kind == "kafka":
        if m.partition is None or m.offset is None:
            raise Unsupported("this record has no partition and offset: it cannot be selected by id")
        return f"{m.partition}:{m.offset}"
    if kind == "redis":
        if m.message_id:  # a stream entry id or an RQ job id
            return m.message_id
        if m.body_truncated:
            raise Unsupported(f"a list value is named by a digest of its whole body, and the peek shows only "
                              f"{len(m.body):,} of its {m.size:,} bytes")
        from probes.dlq.redis_records import parse_value  # the store's own digest

        return parse_value(m.body).id
    if kind in ("rabbitmq", "memory"):
        if m.message_id:
            return m.message_id
        raise Unsupported("this message has no message_id, so it cannot be selected by id (act on the whole "
                          "queue, or select it by reason or body from the CLI)")
    raise Unsupported(f"dead-letter actions are not available for {kind} brokers")
