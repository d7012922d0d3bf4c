"""Glue between CLI commands and probes: resolve ``--broker``, run one coroutine, turn errors into one line."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import typer

from probes import BrokerTarget, Probe, ProbeError, load_profiles, open_probe, redact_text, resolve_broker

T = TypeVar("T")
P = ParamSpec("P")
EXIT_USAGE = 2  # usage, configuration and connection errors (as click uses for usage errors)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    print(f"qdeck: {message}", file=sys.stderr)
    return typer.Exit(code)


def cli_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Every ``ProbeError`` becomes one line on stderr and exit code 2; Ctrl-C exits quietly (130)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except ProbeError as exc:
            raise fail(redact_text(str(exc))) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


def run_probe(broker: str | None, action: Callable[[Probe], Awaitable[T]]) -> T:
    """Open the probe for ``broker``, run ``action`` with it, close it; errors come back scrubbed of secrets."""
    target = resolve_broker(broker)
    return asyncio.run(_with_probe(target, action))


async def _with_probe(target: BrokerTarget, action: Callable[[Probe], Awaitable[T]]) -> T:
    probe = open_probe(target)
    try:
        return await action(probe)
    except ProbeError as exc:
        raise type(exc)(redact_text(str(exc), target.secrets)) from None
    finally:
        await probe.aclose()


def complete_broker(incomplete: str) -> list[str]:
    """Shell completion for --broker: profile names."""
    try:
        profiles, _ = load_profiles()
    except ProbeError:
        return []
    return [name for name in sorted(profiles) if name.startswith(incomplete)]


def debug_enabled() -> bool:
    return os.environ.get("QDECK_DEBUG", "") not in ("", "0")


def broker_option(**extra: Any) -> Any:
    return typer.Option(None, "--broker", "-b", envvar="QDECK_BROKER", autocompletion=complete_broker,
                        help="Broker URL (amqp://, redis://, kafka://) or profile name; default: $QDECK_BROKER, "
                             "then the profile file's default.", show_envvar=False, **extra)
