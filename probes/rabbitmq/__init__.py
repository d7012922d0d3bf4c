"""RabbitMQ probe: the management HTTP API (httpx) for state, AMQP (pika) only where a count must be exact."""
