"""A GPU telemetry sample as a reply carries it: the envelope's optional ``gpu`` field.

The worker reads NVML (``loadgen.worker.gpu_telemetry``) and puts its latest sample on each reply and on each streamed
reply's final chunk; the load generator aggregates them per interval (``loadgen.results.gpu_intervals``). On the wire
(compact JSON)::

    "gpu": [at_ms, [util_pct, mem_used_mib, mem_total_mib, power_w, sm_clock_mhz], ...]

``at_ms``: when the worker read it (wall clock, ms; it only grows, so a reader counts each sample once however many
replies carry it); then one list per device, in NVML's index order. A figure NVML does not give on a device is null.
A device list of more than five entries is read for its first five (room for later figures). A reply without a GPU
has no ``gpu`` field at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

MAX_DEVICES = 256
PROBLEM = "field 'gpu' must be [at_ms, [util_pct, mem_used_mib, mem_total_mib, power_w, sm_clock_mhz], ...]"


class GpuDevice(NamedTuple):
    util_pct: float | None  # NVML utilisation.gpu: % of the sample period a kernel ran
    mem_used_mib: float | None
    mem_total_mib: float | None
    power_w: float | None
    sm_clock_mhz: float | None


class GpuSample(NamedTuple):
    at_ms: int
    devices: tuple[GpuDevice, ...]

    def wire(self) -> list[Any]:
        """The field's JSON value (orjson writes plain lists, not named tuples), made once per sample: a batch's
        replies all carry the same one."""
        global _last_wire
        last, value = _last_wire
        if last is not self:
            value = [self.at_ms, *map(list, self.devices)]
            _last_wire = (self, value)
        return value


_last_wire: tuple[GpuSample | None, list[Any]] = (None, [])  # the last sample encoded and its JSON value


def gpu_from_wire(value: Any) -> GpuSample:
    """The sample a decoded ``gpu`` field holds; ``ValueError(PROBLEM)`` when it is not one. The load generator reads
    one per reply: every check is a type test or a comparison (a NaN or an infinity fails the range test)."""
    if type(value) is not list or not 1 <= len(value) <= MAX_DEVICES + 1:
        raise ValueError(PROBLEM)
    at_ms = value[0]
    if type(at_ms) is not int or at_ms < 0:
        raise ValueError(PROBLEM)
    out = []
    for dev in value[1:]:
        if type(dev) is not list or len(dev) < 5:
            raise ValueError(PROBLEM)
        device = GpuDevice._make(dev if len(dev) == 5 else dev[:5])
        for x in device:
            if type(x) is float:
                if not -1e18 < x < 1e18:
                    raise ValueError(PROBLEM)
            elif type(x) is not int and x is not None:
                raise ValueError(PROBLEM)
        out.append(device)
    return GpuSample(at_ms, tuple(out))


@dataclass(frozen=True, slots=True)
class GpuFigures:
    """One device's figures over an interval (None: no reading in it had that figure): the worker's metric lines
    and the run's summary both give these."""

    index: int
    samples: int
    util_pct: float | None  # mean
    mem_used_mib: float | None  # largest
    mem_total_mib: float | None
    power_w: float | None  # mean
    sm_clock_mhz: float | None  # mean


@dataclass(slots=True)
class DeviceSums:
    """One device's readings over an interval, added up: the figures the worker's metric lines and the run's
    summary both give (mean utilisation, largest memory used, mean power, mean SM clock), each over the readings
    that have it."""

    samples: int = 0
    util: float = 0.0
    util_n: int = 0
    mem_max: float | None = None
    mem_total: float | None = None
    power: float = 0.0
    power_n: int = 0
    clock: float = 0.0
    clock_n: int = 0

    def add(self, dev: GpuDevice) -> None:
        self.samples += 1
        if dev.util_pct is not None:
            self.util += dev.util_pct
            self.util_n += 1
        if dev.mem_used_mib is not None:
            self.mem_max = dev.mem_used_mib if self.mem_max is None else max(self.mem_max, dev.mem_used_mib)
        if dev.mem_total_mib is not None:
            self.mem_total = dev.mem_total_mib
        if dev.power_w is not None:
            self.power += dev.power_w
            self.power_n += 1
        if dev.sm_clock_mhz is not None:
            self.clock += dev.sm_clock_mhz
            self.clock_n += 1

    def figures(self, index: int) -> GpuFigures:
        """The interval's figures of the device at ``index``."""
        return GpuFigures(index, self.samples, round(self.util / self.util_n, 1) if self.util_n else None,
                          self.mem_max, self.mem_total, round(self.power / self.power_n, 1) if self.power_n else None,
                          round(self.clock / self.clock_n) if self.clock_n else None)
