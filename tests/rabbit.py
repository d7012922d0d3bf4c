"""Test helpers for a real RabbitMQ: a throwaway vhost per test, AMQP channels, authoritative counts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pika

from probes import parse_broker_url
from probes.rabbitmq.http import management_base_url

T = TypeVar("T")


class RabbitVhost:
    """A fresh vhost (deleted afterwards, with every queue in it) and the URL that scopes a probe to it."""

    def __init__(self, base_url: str) -> None:
        self.base = parse_broker_url(base_url)
        self.name = f"qdeck-test-{uuid.uuid4().hex[:10]}"
        self.url = f"amqp://{self.base.username}:{self.base.password}@{self.base.host}:{self.base.port}/{self.name}"
        self.api = httpx.Client(base_url=management_base_url(self.base) + "/api",
                                auth=(self.base.username or "guest", self.base.password or "guest"), timeout=120)
        self.path = quote(self.name, safe="")
        self._conn: pika.BlockingConnection | None = None

    def create(self) -> None:
        self.api.put(f"/vhosts/{self.path}").raise_for_status()
        self.api.put(f"/permissions/{self.path}/{self.base.username}",
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()

    def delete(self) -> None:
        if self._conn is not None and self._conn.is_open:
            self._conn.close()
        self.api.delete(f"/vhosts/{self.path}")
        self.api.close()

    def channel(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            params = pika.ConnectionParameters(self.base.host, self.base.port, self.name,
                                               pika.PlainCredentials(self.base.username or "guest",
                                                                     self.base.password or "guest"))
            self._conn = pika.BlockingConnection(params)
        return self._conn.channel()

    def exact_depth(self, queue: str) -> int:
        """The authoritative ready count (passive queue.declare), unlike the 5 s management statistics."""
        ch = self.channel()
        try:
            return int(ch.queue_declare(queue, passive=True).method.message_count)
        finally:
            ch.close()

    def fill(self, queue: str, bodies: list[bytes], *, durable: bool = False,
             arguments: dict[str, Any] | None = None) -> None:
        """Declare ``queue``, publish ``bodies`` to it and wait until the broker holds them all."""
        ch = self.channel()
        ch.queue_declare(queue, durable=durable, arguments=arguments)
        for body in bodies:
            ch.basic_publish("", queue, body)
        ch.close()
        wait_sync(lambda: self.exact_depth(queue) == len(bodies), what=f"{len(bodies)} messages in {queue}")

    def put_policy(self, name: str, pattern: str, definition: dict[str, Any], apply_to: str = "queues") -> None:
        self.api.put(f"/policies/{self.path}/{name}",
                     json={"pattern": pattern, "definition": definition, "apply-to": apply_to}).raise_for_status()

    def import_queues(self, names: list[str]) -> None:
        defs = {"queues": [{"name": n, "vhost": self.name, "durable": False, "auto_delete": False, "arguments": {}}
                           for n in names]}
        self.api.post(f"/definitions/{self.path}", json=defs).raise_for_status()


@contextmanager
def rabbit_vhost(base_url: str) -> Iterator[RabbitVhost]:
    vhost = RabbitVhost(base_url)
    vhost.create()
    try:
        yield vhost
    finally:
        vhost.delete()


def wait_sync(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


async def wait_async(fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 20.0,
                     what: str = "condition") -> T:
    """Re-fetch until ``ok`` holds (management statistics lag the broker by up to 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}"[:2000])
        await asyncio.sleep(0.25)
