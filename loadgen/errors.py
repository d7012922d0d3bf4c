"""The load generator's one error hierarchy (as ``probes/errors.py`` is the probes'): each message is one line for
the user, and the CLI catches ``LoadgenError`` alone.

    LoadgenError ─┬─ PlanError       a plan file or options that cannot make a run
                  ├─ ScheduleError   a schedule that cannot be built (rates, steps, traces)
                  ├─ SloError        an SLO expression that cannot be parsed
                  ├─ ReportError     a summary file that cannot be read, or two runs that should not be compared
                  ├─ ShareError      a plan that cannot be split over agents
                  ├─ ModelError      a worker model that cannot be built
                  └─ NodeError       a distributed run that cannot go on

Broker failures stay ``probes.errors.ProbeError``: transports and worker sources translate driver errors into those.
"""

from __future__ import annotations


class LoadgenError(ValueError):
    """Bad input to the load generator or the worker; ``str()`` is one line, with no secret in it."""


class PlanError(LoadgenError):
    """A plan (file or options) that cannot be used."""


class ScheduleError(LoadgenError):
    """A schedule that cannot be built."""


class SloError(LoadgenError):
    """An SLO expression that cannot be parsed."""


class ReportError(LoadgenError):
    """A summary file that cannot be read, or runs that cannot be compared."""


class ShareError(LoadgenError):
    """A plan that cannot be split over the agents."""


class ModelError(LoadgenError):
    """A model that cannot be built (bad spec, missing extra)."""


class NodeError(LoadgenError):
    """Something that ends a distributed run."""
