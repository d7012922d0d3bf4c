"""confluent-kafka AdminClient behind ``async def``s with bounded timeouts and ``ProbeError``s only.

librdkafka retries forever and logs to stderr by default: every call here has a deadline, and its log goes
to a silent Python logger so the CLI's one-line errors stay one line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from probes.errors import AuthFailed, BrokerUnreachable, NotFound, ProbeError
from probes.redact import redact_text
from probes.urls import BrokerTarget

T = TypeVar("T")
_SILENT = logging.getLogger("qdeck.librdkafka")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False
_AUTH_CODES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
               KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED,
               KafkaError.GROUP_AUTHORIZATION_FAILED}
_UNREACHABLE_CODES = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
                      KafkaError._RESOLVE, KafkaError._SSL, KafkaError.REQUEST_TIMED_OUT}


def client_config(target: BrokerTarget, timeout: float) -> dict[str, Any]:
    """bootstrap.servers from the URL's hosts; query parameters become client settings (``_`` → ``.``)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(f"{h}:{p}" for h, p in target.hosts),
        "socket.connection.setup.timeout.ms": int(min(timeout, 5.0) * 1000),
        "socket.timeout.ms": int(timeout * 1000),
        "logger": _SILENT,
        "log_level": 3,
    }
    for key, value in target.params:
        if key in ("dlq_patterns",):
            continue
        conf[key.replace("_", ".")] = value
    if target.username and "sasl.username" not in conf:
        conf["sasl.username"] = target.username
    if target.password and "sasl.password" not in conf:
        conf["sasl.password"] = target.password
    return conf


class KafkaAdmin:
    def __init__(self, target: BrokerTarget, timeout: float = 5.0) -> None:
        self.target = target
        self.timeout = timeout
        self.where = ",".join(f"{h}:{p}" for h, p in target.hosts)
        self.last_error: KafkaError | None = None  # what librdkafka reported in the background (error_cb)
        self.admin = self._build()

    def _build(self) -> AdminClient:
        conf = client_config(self.target, self.timeout)
        conf["error_cb"] = self._on_error
        try:
            return AdminClient(conf)
        except KafkaException as exc:
            raise ProbeError(self._scrub(f"bad Kafka client settings in the broker URL: {exc}")) from None

    def rebuild(self) -> None:
        """A fresh AdminClient after a failed call: after a broker restart a long-lived client's group
        requests (``describe_consumer_groups``) can time out for good while a new client works at once."""
        self.last_error = None
        self.admin = self._build()

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err

    def _scrub(self, text: str) -> str:
        return redact_text(text, self.target.secrets)

    def translate(self, exc: BaseException, what: str = "") -> ProbeError:
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        text = err.str() if isinstance(err, KafkaError) else str(exc)
        background = self.last_error
        if code not in _AUTH_CODES and background is not None and background.code() in _AUTH_CODES:
            code, text = background.code(), background.str()  # a timeout whose real cause was authentication
        if code in _AUTH_CODES:
            return AuthFailed(self._scrub(f"authentication failed at Kafka {self.where}: {text}"))
        if code in _UNREACHABLE_CODES or isinstance(exc, TimeoutError):
            return BrokerUnreachable(f"broker unreachable: Kafka at {self.where} did not answer "
                                     f"({what or 'request'}) within {self.timeout:g} s")
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.GROUP_ID_NOT_FOUND):
            return NotFound(self._scrub(f"{what or 'object'} not found at Kafka {self.where}"))
        return ProbeError(self._scrub(f"Kafka error at {self.where}{f' ({what})' if what else ''}: {text}"))

    async def call(self, fn: Any, *args: Any, what: str = "", **kwargs: Any) -> Any:
        """Run a blocking client call in a thread, bounded by the timeout."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), self.timeout + 2)
        except (KafkaException, TimeoutError) as exc:
            raise self.translate(exc, what) from None

    async def results(self, futures: Mapping[T, Future[Any]], what: str = "") -> dict[T, Any]:
        """Await a dict of AdminClient futures; one failing key fails the call. They are collected in one
        worker thread: a thread-to-loop hop per future (wrap_future) costs more than the requests themselves
        when a snapshot holds thousands of partitions."""
        deadline = time.monotonic() + self.timeout + 2

        def collect() -> dict[T, Any]:
            return {k: f.result(max(0.0, deadline - time.monotonic())) for k, f in futures.items()}

        try:
            return await asyncio.wait_for(asyncio.to_thread(collect), self.timeout + 3)
        except (KafkaException, TimeoutError) as exc:
            raise self.translate(exc, what) from None

    async def result(self, future: Future[Any], what: str = "") -> Any:
        return (await self.results({0: future}, what))[0]
