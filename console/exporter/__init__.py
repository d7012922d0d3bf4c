"""``qdeck exporter``: the brokers' latest polls as Prometheus metrics (``metrics``), what the poller's results
leave (``state``), and the HTTP side with ``/metrics`` and ``/healthz`` (``server``)."""
