"""The Textual console (``qdeck console``): live queues, lag and dead letters across brokers."""
