"""What a run is asked to do (``RunSpec``) and the facts about it that its results carry (``RunSpec.facts()``)."""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from loadgen.errors import PlanError
from loadgen.run.schedules import AnySchedule, ClosedLoop, params

COALESCE_S = 0.001  # default: arrivals due within this of the oldest unwritten one share its write
MAX_COALESCE_S = 0.1
MAX_DURATION_S = 7 * 24 * 3600.0  # a week: longer runs are typos (1e400s), and the schedule's ns offsets stay exact
MAX_TIMEOUT_S = 3600.0  # the histograms hold 1 µs to 1 h
MAX_REQUESTS = 10**12
MAX_PAYLOAD = 64 * 1024 * 1024


def new_run_id() -> str:
    return secrets.token_hex(4)


@functools.lru_cache(maxsize=64)
def payload_text(size: int) -> str:
    base = "the quick brown fox jumps over the lazy dog; inference request payload. "
    return (base * (size // len(base) + 1))[:size]


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise PlanError(f"{name} must be a finite number, not {value}")


@dataclass(frozen=True, slots=True)
class RunSpec:
    queue: str
    schedule: AnySchedule
    duration_s: float | None = 10.0
    requests: int | None = None
    warmup_s: float = 0.0
    timeout_s: float = 10.0
    workload: str = "default"
    payload_size: int = 64
    payload: str | None = None
    interval_s: float = 1.0
    coalesce_s: float = COALESCE_S
    seed: int = 1
    max_outage_s: float = 60.0  # a broker away longer than this aborts the run
    confirm: bool = False  # RabbitMQ: the request channel in publisher-confirm mode (counted, never waited for)
    persistent: bool = False  # RabbitMQ: requests published persistent (delivery mode 2); replies mirror it
    run_id: str = field(default_factory=new_run_id)

    def __post_init__(self) -> None:
        if not self.queue:
            raise PlanError("the queue name is empty")
        if self.duration_s is None and self.requests is None:
            raise PlanError("give a duration or a request count")
        for name, value in (("duration", self.duration_s), ("warm-up", self.warmup_s),
                            ("timeout", self.timeout_s), ("interval", self.interval_s),
                            ("coalescing window", self.coalesce_s)):
            if value is not None:
                _finite(name, value)
        if self.duration_s is not None and not 0 < self.duration_s <= MAX_DURATION_S:
            raise PlanError(f"duration must be above zero and at most {MAX_DURATION_S / 86400:g} days, "
                            f"not {self.duration_s:g} s")
        if self.requests is not None and not 0 < self.requests <= MAX_REQUESTS:
            raise PlanError(f"the request count must be between 1 and {MAX_REQUESTS:.0e}, not {self.requests}")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise PlanError(f"timeout must be above zero and at most 1 h, not {self.timeout_s:g} s")
        if not 0 <= self.warmup_s <= MAX_DURATION_S:
            raise PlanError(f"warm-up must be between 0 and {MAX_DURATION_S / 86400:g} days, not {self.warmup_s:g} s")
        if not (math.isfinite(self.max_outage_s) and 0 <= self.max_outage_s <= MAX_DURATION_S):
            raise PlanError(f"the longest outage must be between 0 and a week, not {self.max_outage_s:g} s")
        if not 0 < self.interval_s <= 3600:
            raise PlanError("the interval must be above zero and at most 1 h")
        if not 0 <= self.payload_size <= MAX_PAYLOAD:
            raise PlanError(f"payload size must be between 0 and {MAX_PAYLOAD} characters, not {self.payload_size}")
        if not 0 <= self.coalesce_s <= MAX_COALESCE_S:
            raise PlanError(f"the coalescing window must be between 0 and {MAX_COALESCE_S * 1000:g}ms")

    @property
    def closed_loop(self) -> bool:
        return isinstance(self.schedule, ClosedLoop)

    def facts(self) -> dict[str, Any]:
        """What the results say about the run that made them (what ``compare`` checks for comparability)."""
        return {
            "run_id": self.run_id,
            "queue": self.queue,
            "workload": self.workload,
            "schedule": {"kind": self.schedule.kind, "description": self.schedule.describe(),
                         "params": params(self.schedule)},
            "payload": ({"text_chars": len(self.payload)} if self.payload is not None
                        else {"size": self.payload_size}),
            "warmup_s": self.warmup_s,
            "timeout_s": self.timeout_s,
            "coalesce_s": self.coalesce_s,
            "confirm": self.confirm,
            "persistent": self.persistent,
            "closed_loop": self.closed_loop,
        }
