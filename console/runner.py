"""Glue between CLI commands and probes: resolve ``--broker``, run one coroutine, turn errors into one line."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar

import typer

from console.safe_text import safe
from loadgen.errors import LoadgenError
from probes import BrokerTarget, Probe, ProbeError, load_profiles, open_probe, redact_text, resolve_broker

T = TypeVar("T")
P = ParamSpec("P")
EXIT_USAGE = 2  # usage, configuration and connection errors (as click uses for usage errors)
MAX_ERROR_CHARS = 2000
MAX_BACKOFF_S = 60.0  # the longest wait between failed polls, in --watch and the console


def error_line(message: str, secrets: Iterable[str] = ()) -> str:
    """``qdeck: MESSAGE`` as one terminal-safe line: secrets masked, whitespace runs (newlines too) folded to one
    space, control characters escaped by the one sanitiser."""
    text = " ".join(redact_text(str(message), secrets).split())
    return f"qdeck: {safe(text, MAX_ERROR_CHARS)}"


def print_error(message: str, secrets: Iterable[str] = ()) -> None:
    print(error_line(message, secrets), file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``message`` as qdeck's one error line; raise the returned ``typer.Exit``."""
    print_error(message)
    return typer.Exit(code)


def finite(value: float | None) -> float | None:
    """A typer callback for float options, which take ``inf`` and ``nan`` as numbers: refuse both."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def finite_at_most(limit: float) -> Callable[[float | None], float | None]:
    """A typer callback for float options: finite (see ``finite``) and at most ``limit`` (a longer interval or wait
    is a typo, and ``inf`` would sleep for ever)."""

    def check(value: float | None) -> float | None:
        finite(value)
        if value is not None and value > limit:
            raise typer.BadParameter(f"{value:g} is more than the limit of {limit:g}")
        return value

    return check


def host_port(value: str, what: str) -> str:
    """``HOST:PORT`` (``*`` or an IPv6 literal in brackets as host) or a one-line usage error naming ``what``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(f"{what} {value!r} is not HOST:PORT (a port from 1 to 65535)")
    return value


def cli_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Every ``ProbeError`` and ``LoadgenError`` becomes one line on stderr and exit code 2; Ctrl-C exits quietly
    (130)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (ProbeError, LoadgenError) as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


def run_probe(broker: str | None, action: Callable[[Probe], Awaitable[T]], *, read_only: bool = False) -> T:
    """Open the probe for ``broker``, run ``action`` with it, close it; errors come back scrubbed of secrets.
    ``read_only`` (``--read-only``): the probe refuses anything with a side effect (a RabbitMQ peek requeues)."""
    target = resolve_broker(broker)
    if read_only:
        target = dataclasses.replace(target, read_only=True)
    return asyncio.run(_with_probe(target, action))


def run_probes(brokers: Sequence[str], action: Callable[[Probe], Awaitable[T]]) -> list[T]:
    """``run_probe`` for every ``--broker`` given (none: the default one), all at once, results in the given order."""

    async def each(probes: list[Probe]) -> list[T]:
        return list(await asyncio.gather(*(action(p) for p in probes)))

    return run_with_probes(brokers, each)


def run_with_probes(brokers: Sequence[str], action: Callable[[list[Probe]], Awaitable[T]]) -> T:
    """Open a probe for every ``--broker`` given (none: the default one), run ``action`` with all of them, close
    them; the same broker twice is a usage error (as in the console); errors come back scrubbed of secrets."""
    specs: list[str | None] = [*brokers] or [None]
    targets = [resolve_broker(spec) for spec in specs]
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise fail("the same broker was given twice")
    return asyncio.run(_with_probes(targets, action))


async def _with_probes(targets: list[BrokerTarget], action: Callable[[list[Probe]], Awaitable[T]]) -> T:
    probes = [open_probe(t) for t in targets]
    try:
        return await action(probes)
    except ProbeError as exc:
        secrets = [s for t in targets for s in t.secrets]
        raise type(exc)(redact_text(str(exc), secrets)) from None
    finally:
        for probe in probes:
            await probe.aclose()


def backoff(interval: float, failures: int, cap: float = MAX_BACKOFF_S) -> float:
    """Seconds until the next poll after ``failures`` consecutive failed polls: the interval, doubled per failure,
    at most ``cap`` (or the interval, when that is longer). ``qdeck queues --watch`` and the console both use it."""
    return min(interval * (2 ** min(failures, 16)), max(cap, interval)) if failures > 0 else interval


def one_broker(brokers: Sequence[str], command: str) -> str | None:
    """The single ``--broker`` of a command that reads one broker (none: the default)."""
    if len(brokers) > 1:
        raise fail(f"{command} reads one broker; --broker was given {len(brokers)} times")
    return brokers[0] if brokers else None


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


def brokers_option() -> Any:
    """``--broker``/``-b`` for the read commands: repeat it for several brokers, as ``qdeck console`` takes them."""
    return typer.Option([], "--broker", "-b", autocompletion=complete_broker,
                        help="Broker URL (amqp://, redis://, kafka://) or profile name; repeat for several brokers "
                             "(each row is labelled with its broker). Default: $QDECK_BROKER, then the profile "
                             "file's default.")
