"""``--rate N/s``: a token bucket the action's loop waits on before each batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from probes.errors import ConfigError


def parse_rate(text: str | None) -> float | None:
    """``500``, ``500/s`` → 500.0; None: unlimited."""
    if text is None:
        return None
    body = text.strip().removesuffix("/s")
    try:
        value = float(body)
    except ValueError:
        raise ConfigError(f"--rate takes messages per second like 500 or 500/s, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"--rate must be a positive number of messages per second, not {text!r}")
    return value


class TokenBucket:
    """``rate`` tokens a second, bursts up to ``burst``; ``take(n)`` waits until n are there (n may exceed the
    burst: it then waits for the deficit)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate / 10, 1.0)
        self.clock = clock
        self.tokens = self.burst
        self.at = clock()

    def _fill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_s(self, n: int) -> float:
        """Seconds until ``n`` tokens are there (0 when they are), without taking them."""
        self._fill()
        return max(0.0, (n - self.tokens) / self.rate)

    async def take(self, n: int) -> None:
        delay = self.wait_s(n)
        if delay > 0:
            await asyncio.sleep(delay)
            self._fill()
        self.tokens -= n
