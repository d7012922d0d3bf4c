from __future__ import annotations

from pathlib import Path

import pytest

from probes import ConfigError, load_profiles, parse_broker_url, redact_text, redact_url, resolve_broker


def test_parse_rabbitmq_url_defaults_and_vhost() -> None:
    t = parse_broker_url("amqp://user:p%40ss@rabbit:5673/%2F")
    assert (t.kind, t.host, t.port, t.username, t.password, t.path) == ("rabbitmq", "rabbit", 5673, "user", "p@ss", "/")
    assert parse_broker_url("amqp://rabbit").path == "/" and parse_broker_url("amqp://rabbit").port == 5672
    assert parse_broker_url("amqps://rabbit/prod").port == 5671
    assert parse_broker_url("amqp://h/inference").path == "inference"


def test_parse_redis_and_kafka() -> None:
    r = parse_broker_url("redis://:pw@cache:6380/2")
    assert (r.kind, r.port, r.path, r.password) == ("redis", 6380, "2", "pw")
    k = parse_broker_url("kafka://a:9092,b:9093?security_protocol=SASL_SSL&sasl_password=zzz")
    assert k.hosts == (("a", 9092), ("b", 9093)) and k.param("security_protocol") == "SASL_SSL"
    assert "zzz" in k.secrets


@pytest.mark.parametrize("url, reason", [
    ("amqp://h:99999/", "port"), ("amqp://:x@/", "no host"), ("nats://h", "unknown scheme"),
    ("redis://h/abc", "database must be a number"), ("amqp://a:1,b:2/", "only kafka"), ("justaname://", "scheme"),
])
def test_malformed_urls_raise_config_error(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_broker_url(url)


def test_password_never_in_repr_or_display() -> None:
    t = parse_broker_url("amqp://u:hunter2@h/?management_url=http://u:hunter2@h:15672")
    assert "hunter2" not in repr(t) and "hunter2" not in t.display
    assert redact_url("kafka://h?sasl.password=abc&x=1") == "kafka://h?sasl.password=***&x=1"
    text = redact_text("failed amqp://u:hunter2@h and token hunter2", ["hunter2"])
    assert text == "failed amqp://u:***@h and token ***"


def test_profiles_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "brokers.toml"
    path.write_text('default = "a"\n[brokers.a]\nurl = "amqp://u@h/"\npassword_env = "PW_A"\n'
                    'management_url = "http://h:1"\n[brokers.b]\nurl = "redis://h/1"\ndescription = "cache"\n')
    monkeypatch.setenv("PW_A", "s3")
    profiles, default = load_profiles(path)
    assert default == "a" and profiles["a"].target.password == "s3"
    assert profiles["a"].target.param("management_url") == "http://h:1"
    assert profiles["b"].description == "cache"
    monkeypatch.delenv("QDECK_BROKER", raising=False)
    assert resolve_broker(None, path).name == "a"
    assert resolve_broker("b", path).kind == "redis"
    assert resolve_broker("redis://x/3", path).path == "3"
    with pytest.raises(ConfigError, match=r"unknown profile 'c'.*a, b"):
        resolve_broker("c", path)


def test_no_broker_and_bad_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QDECK_BROKER", raising=False)
    with pytest.raises(ConfigError, match="no broker given"):
        resolve_broker(None, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[brokers\n")
    with pytest.raises(ConfigError, match="cannot read profiles"):
        load_profiles(bad)
