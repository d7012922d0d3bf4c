"""Broker profiles: named broker URLs in a TOML file in the XDG config dir.

    # ~/.config/qdeck/brokers.toml
    default = "local"                       # used when --broker is not given

    [brokers.local]
    url = "amqp://guest:guest@127.0.0.1:5672/%2F"

    [brokers.prod]
    url = "amqps://ops@rabbit.example.com:5671/inference"
    password_env = "QDECK_PROD_PASSWORD"    # the password comes from the environment, not the file
    management_url = "https://rabbit.example.com:15671"   # any extra key becomes a URL query parameter
    allow_write = true                      # dead-letter actions may write here (default: read-only)

Strict (house rule 14): an unknown top-level key (``defualt``) is an error naming it, the file and the nearest
valid key; so is a value of the wrong type. Extra keys inside a profile are URL query parameters, by design.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from probes.errors import ConfigError
from probes.strict_keys import ConfigFileError, check_keys, read_toml
from probes.urls import BrokerTarget, parse_broker_url

_RESERVED = {"url", "password_env", "description", "allow_write"}
TOP_KEYS = ("default", "brokers")


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    target: BrokerTarget
    description: str | None = None


def config_path() -> Path:
    """``$QDECK_CONFIG``, else ``$XDG_CONFIG_HOME/qdeck/brokers.toml``, else ``~/.config/qdeck/brokers.toml``."""
    explicit = os.environ.get("QDECK_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "qdeck" / "brokers.toml"


def _read(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        doc = read_toml(path)
    except ConfigFileError as exc:
        raise ConfigError(f"cannot read profiles from {path}: {exc}") from None
    problem = check_keys(doc, TOP_KEYS)
    if problem:
        raise ConfigError(f"profiles {path}: {problem}")
    if "default" in doc and not isinstance(doc["default"], str):
        raise ConfigError(f"profiles {path}: default must be a profile name (a string)")
    return doc


def load_profiles(path: Path | None = None) -> tuple[dict[str, Profile], str | None]:
    """All profiles in the file and the name of the default one (``None`` when unset)."""
    path = path or config_path()
    data = _read(path)
    brokers = data.get("brokers", {})
    if not isinstance(brokers, dict):
        raise ConfigError(f"{path}: [brokers] must be a table of profiles")
    profiles: dict[str, Profile] = {}
    for name, entry in brokers.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(f"{path}: profile {name!r} needs a url = \"...\" string")
        for key in ("password_env", "description"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{path}: profile {name!r}: {key} must be a string")
        if "allow_write" in entry and not isinstance(entry["allow_write"], bool):
            raise ConfigError(f"{path}: profile {name!r}: allow_write must be true or false")
        for key, value in entry.items():
            if key not in _RESERVED and not isinstance(value, str | int | float):
                raise ConfigError(f"{path}: profile {name!r}: {key} must be a string or a number (extra keys "
                                  "become URL query parameters)")
        url = entry["url"]
        extra = {k: str(v) for k, v in entry.items() if k not in _RESERVED}
        if extra:
            url += ("&" if "?" in url else "?") + urlencode(extra)
        try:
            target = parse_broker_url(url, name=name)
        except ConfigError as exc:
            raise ConfigError(f"{path}: profile {name!r}: {exc}") from None
        env = entry.get("password_env")
        if isinstance(env, str):
            password = os.environ.get(env)
            if password is None:
                raise ConfigError(f"profile {name!r} takes its password from ${env}, which is not set")
            target = dataclasses.replace(target, password=password)
        if entry.get("allow_write") is True:
            target = dataclasses.replace(target, allow_write=True)
        description = entry.get("description")
        profiles[name] = Profile(name, target, description if isinstance(description, str) else None)
    default = data.get("default")
    return profiles, default if isinstance(default, str) else None


def resolve_broker(spec: str | None, path: Path | None = None) -> BrokerTarget:
    """Turn ``--broker`` (a URL or a profile name; None: ``$QDECK_BROKER``, then the default profile) into a target."""
    spec = spec or os.environ.get("QDECK_BROKER") or None
    if spec is not None and "://" in spec:
        return parse_broker_url(spec)
    profiles, default = load_profiles(path)
    name = spec or default
    if name is None:
        raise ConfigError("no broker given: pass --broker URL|PROFILE, set QDECK_BROKER, or set default = \"NAME\" "
                          f"in {path or config_path()}")
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none defined"
        raise ConfigError(f"unknown profile {name!r} (profiles: {known}; file: {path or config_path()}); "
                          "a broker URL needs a scheme such as amqp://")
    return profiles[name].target
