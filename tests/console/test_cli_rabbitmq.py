"""``qdeck queues`` / ``dlq list`` / ``dlq peek`` against a real RabbitMQ, and every error path."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pika
import pytest

from console.embedded_redis import free_port
from probes import parse_broker_url
from tests.cli import qdeck
from tests.probes.test_rabbitmq_probe import _dead_letter_topology
from tests.rabbit import RabbitVhost, wait_sync

pytestmark = pytest.mark.rabbitmq
SECRET = "Sup3r-Secret-Pa55"


def test_queues_json_filter_and_sort(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    for name, n in (("emb.small", 1), ("emb.large", 5), ("other", 3)):
        ch.queue_declare(name)
        for _ in range(n):
            ch.basic_publish("", name, b"x")
    ch.close()
    wait_sync(lambda: vhost.exact_depth("emb.large") == 5)

    def depths() -> dict[str, int]:
        r = qdeck("queues", "--broker", vhost.url, "--json")
        assert r.code == 0, r.err
        return {q["name"]: q["depth"] for q in r.json()["queues"]}

    wait_sync(lambda: depths() == {"emb.small": 1, "emb.large": 5, "other": 3}, what="stats to catch up")
    r = qdeck("queues", "-b", vhost.url, "--json", "--filter", "EMB.*", "--sort", "depth")
    assert [q["name"] for q in r.json()["queues"]] == ["emb.large", "emb.small"]
    assert f":{parse_broker_url(vhost.url).password}@" not in r.out  # the broker URL is shown redacted
    human = qdeck("queues", "-b", vhost.url, "--filter", "emb.*")
    assert human.code == 0 and "emb.large" in human.out and "other" not in human.out
    assert "DEPTH" in human.out and "2 of 3 queues shown" in human.out


def test_dlq_list_and_peek(vhost: RabbitVhost) -> None:
    _dead_letter_topology(vhost)
    wait_sync(lambda: qdeck("dlq", "list", "-b", vhost.url, "--json").json()["dead_letter_queues"][0]["queue"]
              ["depth"] == 2, what="stats to show the DLQ depth")
    listed = qdeck("dlq", "list", "-b", vhost.url, "--json").json()["dead_letter_queues"]
    assert [(d["queue"]["name"], d["fed_by"]) for d in listed] == [("work.dlq", ["work"])]

    peeked = qdeck("dlq", "peek", "work.dlq", "-n", "5", "-b", vhost.url, "--json")
    assert peeked.code == 0, peeked.err
    messages = peeked.json()["messages"]
    assert sorted(m["death_reason"] for m in messages) == ["expired", "rejected"]
    assert all(m["original_queue"] == "work" and m["death_count"] == 1 for m in messages)
    assert "redelivered" in peeked.json()["side_effect"]

    human = qdeck("dlq", "peek", "work.dlq", "-b", vhost.url)
    assert human.code == 0
    assert "rejected (dead-lettered 1×)" in human.out and "expired" in human.out
    assert "queue work" in human.out and "header tenant" in human.out
    assert "marked redelivered" in human.err  # the side effect is said, on stderr
    assert vhost.exact_depth("work.dlq") == 2


def test_quorum_peek_refusal_is_one_line_exit_2(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 1})
    ch.basic_publish("", "qq", b"precious")
    ch.close()
    r = qdeck("dlq", "peek", "qq", "-b", vhost.url)
    assert r.code == 2 and r.out == ""
    assert r.err.count("\n") == 1 and "--force" in r.err
    assert vhost.exact_depth("qq") == 1


def test_payload_escape_sequences_are_shown_escaped(vhost: RabbitVhost) -> None:
    ch = vhost.channel()
    ch.queue_declare("evil")
    ch.basic_publish("", "evil", b"\x1b]0;pwned\x07\x1b[2Jhello", pika.BasicProperties(headers={"h": "\x1b[31mred"}))
    ch.close()
    r = qdeck("dlq", "peek", "evil", "-b", vhost.url)
    assert r.code == 0
    assert "\x1b" not in r.out and "\x07" not in r.out
    assert "\\x1b]0;pwned\\x07\\x1b[2Jhello" in r.out
    assert "\\x1b[31mred" in r.out


# ---- error paths: one line on stderr, exit 2, no traceback, no password ---------------------------------
def _assert_clean_failure(r, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2, (r.code, r.all)
    assert r.out == ""
    assert r.err.count("\n") == 1, r.err
    assert expected in r.err, r.err
    assert "Traceback" not in r.all
    assert SECRET not in r.all


def _url(rabbitmq_url: str, *, password: str | None = None, vhost: str = "", query: str = "",
         with_password: bool = True) -> str:
    """The test broker's URL (``QDECK_TEST_RABBITMQ_URL`` or the local one) with another password, vhost or query."""
    base = parse_broker_url(rabbitmq_url)
    auth = quote(base.username or "", safe="")
    if with_password:
        auth += ":" + quote(base.password or "" if password is None else password, safe="")
    return f"amqp://{auth}@{base.host}:{base.port}/{vhost}{query}"


def test_wrong_password(rabbitmq_url: str) -> None:
    r = qdeck("queues", "-b", _url(rabbitmq_url, password=SECRET))
    _assert_clean_failure(r, "authentication failed")


def test_nothing_listening() -> None:
    url = f"amqp://ops:{SECRET}@127.0.0.1:{free_port()}/?management_url=http://127.0.0.1:{free_port()}"
    _assert_clean_failure(qdeck("queues", "-b", url), "broker unreachable")


def test_management_plugin_off(rabbitmq_url: str) -> None:
    # AMQP answers on 5672; the management URL points where no plugin listens, as when it is disabled.
    url = _url(rabbitmq_url, password=SECRET, query=f"?management_url=http://127.0.0.1:{free_port()}")
    _assert_clean_failure(qdeck("dlq", "list", "-b", url), "rabbitmq-plugins enable rabbitmq_management")


@pytest.mark.parametrize("url", [f"amqp://ops:{SECRET}@127.0.0.1:notaport/", f"ftp://ops:{SECRET}@host/",
                                 f"amqp://ops:{SECRET}@/"])
def test_malformed_url(url: str) -> None:
    _assert_clean_failure(qdeck("queues", "-b", url), "malformed broker URL")


def test_unknown_profile(tmp_path: Path) -> None:
    config = tmp_path / "brokers.toml"
    config.write_text(f'[brokers.prod]\nurl = "amqp://ops:{SECRET}@rabbit.example:5672/"\n')
    _assert_clean_failure(qdeck("queues", "-b", "staging", config=config), "unknown profile 'staging'")
    listed = qdeck("brokers", "--json", config=config)
    assert listed.code == 0 and listed.json()["brokers"][0]["url"] == "amqp://ops:***@rabbit.example:5672/"
    assert SECRET not in listed.all


def test_missing_vhost_is_not_found(rabbitmq_url: str) -> None:
    _assert_clean_failure(qdeck("queues", "-b", _url(rabbitmq_url, vhost="no-such-vhost")),
                          "vhost 'no-such-vhost' not found")


def test_profile_with_password_from_env(tmp_path: Path, rabbitmq_url: str) -> None:
    config = tmp_path / "brokers.toml"
    password = parse_broker_url(rabbitmq_url).password or ""
    config.write_text(f'default = "local"\n[brokers.local]\nurl = "{_url(rabbitmq_url, with_password=False)}"\n'
                      'password_env = "QDECK_T_PW"\n')
    ok = qdeck("brokers", "--check", "--json", config=config, env={"QDECK_T_PW": password})
    assert ok.json()["brokers"][0]["status"] == "up", ok.all
    assert qdeck("queues", "--json", config=config, env={"QDECK_T_PW": password}).code == 0  # the default profile
    bad = qdeck("queues", config=config, env={"QDECK_T_PW": SECRET})
    _assert_clean_failure(bad, "authentication failed")
    unset = qdeck("queues", config=config)
    _assert_clean_failure(unset, "$QDECK_T_PW, which is not set")
