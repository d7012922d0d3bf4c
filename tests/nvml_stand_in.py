"""A stand-in for NVML (``pynvml``, from nvidia-ml-py) for tests on machines without a GPU.

``StandInNvml`` has the functions qdeck's GPU sampler calls, over made-up devices, with faults to inject. The module
itself is such an NVML, over ``two_gpus()``: ``qdeck worker --nvml-module tests.nvml_stand_in`` (a hidden option,
for tests) samples it instead of pynvml.
"""

from __future__ import annotations

from types import SimpleNamespace

GIB = 1 << 30
NVML_CLOCK_SM = 1


class NVMLError(Exception):
    pass


def two_gpus() -> list[dict[str, float]]:
    return [{"util": 87, "used_gib": 30, "total_gib": 80, "mw": 312_400, "mhz": 1980},
            {"util": 12, "used_gib": 2.5, "total_gib": 80, "mw": 75_040, "mhz": 1410}]


class StandInNvml:
    """``init_error``: nvmlInit raises it; ``fail_after``: the utilisation readings after that many raise (a GPU that
    fell off the bus); ``unsupported``: (device, figure) pairs whose readings always raise (util, memory, power,
    clock), as NVMLError_NotSupported does."""

    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVMLError = NVMLError

    def __init__(self, devices: list[dict[str, float]], *, init_error: str | None = None,
                 fail_after: int | None = None, unsupported: frozenset[tuple[int, str]] = frozenset()) -> None:
        self.devices, self.init_error, self.fail_after, self.unsupported = devices, init_error, fail_after, unsupported
        self.util_reads = self.shutdowns = 0

    def _device(self, handle: int, figure: str) -> dict[str, float]:
        if (handle, figure) in self.unsupported:
            raise NVMLError("Not Supported")
        return self.devices[handle]

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        self.util_reads += 1
        if self.fail_after is not None and self.util_reads > self.fail_after:
            raise NVMLError("GPU is lost")
        return SimpleNamespace(gpu=self._device(handle, "util")["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        d = self._device(handle, "memory")
        return SimpleNamespace(used=int(d["used_gib"] * GIB), total=int(d["total_gib"] * GIB), free=0)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # mW
        return int(self._device(handle, "power")["mw"])

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        if clock != NVML_CLOCK_SM:
            raise NVMLError("Invalid Argument")
        return int(self._device(handle, "clock")["mhz"])


_MODULE = StandInNvml(two_gpus())
nvmlInit = _MODULE.nvmlInit
nvmlShutdown = _MODULE.nvmlShutdown
nvmlDeviceGetCount = _MODULE.nvmlDeviceGetCount
nvmlDeviceGetHandleByIndex = _MODULE.nvmlDeviceGetHandleByIndex
nvmlDeviceGetUtilizationRates = _MODULE.nvmlDeviceGetUtilizationRates
nvmlDeviceGetMemoryInfo = _MODULE.nvmlDeviceGetMemoryInfo
nvmlDeviceGetPowerUsage = _MODULE.nvmlDeviceGetPowerUsage
nvmlDeviceGetClockInfo = _MODULE.nvmlDeviceGetClockInfo
