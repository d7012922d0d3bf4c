"""Messages the pollers and the peek workers post back to the app (results as dataclasses, never driver objects)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from console.health.model import Finding, Level
from probes.models import BrokerSnapshot, ConsumerInfo, PeekResult
from probes.urls import BrokerTarget


@dataclass
class SnapshotArrived(Message):
    broker: str
    snapshot: BrokerSnapshot
    arrived: float  # time.perf_counter() when the poll finished (for the console benchmark)


@dataclass
class PollFailed(Message):
    broker: str
    error: str


@dataclass
class DataChanged(Message):
    """Posted to the active screen after a broker's state changed."""

    broker: str
    arrived: float


@dataclass
class OpenQueue(Message):
    """A screen asks for a queue's detail (``auto_peek``: and peek it at once); the app opens it, the one place
    that does."""

    broker: str
    queue: str
    auto_peek: bool = False


@dataclass
class PeekDone(Message):
    broker: str
    queue: str
    result: PeekResult | None
    error: str | None = None


@dataclass
class ConsumersDone(Message):
    broker: str
    queue: str
    consumers: tuple[ConsumerInfo, ...]
    error: str | None = None


@dataclass
class SetScope(Message):
    """The brokers view asks the app to show one broker in every view (``target``; connected first when it is a
    profile this session has not polled yet), or every broker (None)."""

    target: BrokerTarget | None


@dataclass
class RunAction(Message):
    """The load-run view asks the app to ``start`` a run (the plan dialog), ``stop`` the one it started, or open
    the ``latest`` one."""

    what: str


@dataclass
class RunRead(Message):
    """Lines read from the followed run's feed (``path``); ``restarted``: the file was replaced or cut first."""

    path: Path
    lines: list[bytes]
    restarted: bool


@dataclass
class HealthJudged(Message):
    """A big broker's health findings, judged off the UI thread (``console.tui.health_state``)."""

    broker: str
    findings: list[Finding]
    levels: dict[str, Level]
    seconds: float
