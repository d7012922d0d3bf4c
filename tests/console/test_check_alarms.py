"""``qdeck check``'s node_alarm rule on a RabbitMQ node of the tests' own (``private_rabbit``): a memory alarm and a
disk alarm raised with rabbitmqctl, CRITICAL (exit 2), and back to OK (exit 0). The shared broker is never alarmed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.embedded_redis import free_port
from tests.cli import qdeck
from tests.console.test_check_rabbitmq import check, exits, finding, only_rule, until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]
DEFAULT_WATERMARK = "0.4"  # RabbitMQ's defaults, restored after each alarm
DEFAULT_DISK_LIMIT = "50MB"


def _plugins(node: Any, *args: str) -> None:
    from bench._private_brokers import RABBIT_BIN

    done = subprocess.run([str(RABBIT_BIN / "rabbitmq-plugins"), "-n", node.NODE, *args], env=node.env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def managed_rabbit(private_rabbit: Any) -> Iterator[str]:
    """The private node with its management API on a port of its own (never the shared broker's 15672), for this
    test only: the plugin is disabled again afterwards, and its port is in the node's config file meanwhile, so a
    node restart by a test in between cannot take 15672."""
    node = private_rabbit
    port = free_port()
    conf = Path(node.dir) / "rabbitmq.conf"
    original = conf.read_text()
    conf.write_text(original + f"management.tcp.port = {port}\nmanagement.tcp.ip = 127.0.0.1\n")
    done = node.ctl("eval", f'application:set_env(rabbitmq_management, tcp_config, [{{port, {port}}}, '
                            f'{{ip, "127.0.0.1"}}]).')
    assert done.returncode == 0, done.stdout + done.stderr
    _plugins(node, "enable", "rabbitmq_management")
    try:
        yield f"{node.url}?management_url=http://127.0.0.1:{port}&prometheus_url=off"
    finally:
        node.ctl("set_vm_memory_high_watermark", DEFAULT_WATERMARK)
        node.ctl("set_disk_free_limit", DEFAULT_DISK_LIMIT)
        _plugins(node, "disable", "rabbitmq_management")
        conf.write_text(original)


def test_memory_and_disk_alarms_are_critical_and_clear(private_rabbit: Any, managed_rabbit: str,
                                                       tmp_path: Path) -> None:
    node, url = private_rabbit, managed_rabbit
    rules = only_rule(tmp_path, "node_alarm")

    def run() -> Any:
        return check(url, rules)

    # the agent reports the node's alarm state a few seconds after the plugin starts (UNKNOWN until then)
    ok = until(run, exits(0, "node_alarm", "OK"), "the management API and the node's alarm state", timeout=120)
    assert "no memory or disk alarm" in finding(ok, "node_alarm")["summary"]

    assert node.ctl("set_vm_memory_high_watermark", "0.0001").returncode == 0
    try:
        crit = until(run, exits(2, "node_alarm", "CRIT"), "a memory alarm")
        f = finding(crit, "node_alarm")
        assert (f["queue"], f["value"], f["threshold"]) == (None, 1, 1)
        assert f"memory alarm on {node.NODE}" in f["summary"] and "high watermark" in f["summary"]
    finally:
        node.ctl("set_vm_memory_high_watermark", DEFAULT_WATERMARK)
    until(run, exits(0, "node_alarm", "OK"), "the memory alarm to clear")

    assert node.ctl("set_disk_free_limit", "100000GB").returncode == 0
    try:
        crit = until(run, exits(2, "node_alarm", "CRIT"), "a disk alarm")
        assert f"disk alarm on {node.NODE}" in finding(crit, "node_alarm")["summary"]
        human = qdeck("check", "-b", url, "--rules", str(rules))
        assert human.code == 2 and human.out.startswith("QDECK CRITICAL - 1 critical, ")
        assert "disk alarm" in human.out.splitlines()[0]
    finally:
        node.ctl("set_disk_free_limit", DEFAULT_DISK_LIMIT)
    until(run, exits(0, "node_alarm", "OK"), "the disk alarm to clear")
