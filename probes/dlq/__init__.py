"""Dead-letter actions: redrive, move, purge, delete, export and import, on RabbitMQ, Kafka, Redis and RQ.

The one loop (``engine.run_action``) is broker-free: it reads ``Record``s from a ``DeadLetterStore``, selects them
(``selection``), decides each one's destination (``provenance``: where it came from, or ``--to``; past the loop
guard, ``<source>.parked``), publishes them confirmed, journals that (``journal``), and only then removes them from
the source. Each broker's store (``rabbitmq_store``, ``kafka_store``, ``redis_store``, ``rq_store``) does the
broker's part in its fastest exact way. Every write passes ``writes.require_write`` first: a profile is read-only
unless it says ``allow_write = true``.
"""
