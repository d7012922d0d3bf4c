"""The worker's GPU telemetry: NVML read on a background thread, every ``--gpu-interval`` seconds (default 1).

Per device (NVML index order): utilisation (``utilization.gpu``, % of the sample period a kernel ran), memory used
and total (MiB), power (``nvmlDeviceGetPowerUsage``, mW, reported in W) and the SM clock (MHz). The event loop never
calls NVML: a reply takes ``GpuSampler.latest`` (one attribute read per batch), and each metrics line takes the
interval's figures (``take_interval``: mean utilisation, largest memory used, mean power, mean SM clock per device).

Without NVML — ``pynvml`` (the ``nvidia-ml-py`` package) cannot be imported, ``nvmlInit`` fails (no driver), no
device — the worker's log says so in one line (``GPU telemetry off: <why>``) and nothing else changes: replies carry
no ``gpu`` field, metric lines no GPU figures. A figure a device does not give (NVML raises on its first reading:
power on some boards, utilisation on a MIG instance) is null for the whole run, and the ``on`` line names it. An NVML
error after that stops the sampling for good (one line, ``GPU telemetry stopped: <why>``): replies carry no GPU
figures from then on, rather than a stale sample. NVML enumerates every GPU of the host, whatever
``CUDA_VISIBLE_DEVICES`` says.

The NVML module is injected: ``nvml`` (an object with pynvml's functions), or ``module`` (an import path, ``pkg.mod``
or ``pkg.mod:attr``; ``qdeck worker --nvml-module``, a hidden option for tests, names a stand-in this way).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

from loadgen.gpu_sample import DeviceSums, GpuDevice, GpuFigures, GpuSample

NVML_MODULE = "pynvml"
# the figures a device may not give (memory: used and total together), with their names in the log
FIGURES = {"util_pct": "utilisation", "mem_used_mib": "memory", "power_w": "power", "sm_clock_mhz": "SM clock"}
MIB = 1 << 20
Note = Callable[[str, str], None]  # (event, sentence): MetricsReporter.note


def import_nvml(spec: str) -> Any:
    """The NVML module (or object) at ``spec``: ``pkg.mod`` or ``pkg.mod:attr``; ImportError/AttributeError else."""
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class GpuSampler:
    def __init__(self, interval_s: float, note: Note, *, nvml: Any = None, module: str = NVML_MODULE,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.interval_s, self.note, self.module, self.clock_ns = interval_s, note, module, clock_ns
        self.nvml = nvml
        self.latest: GpuSample | None = None  # what replies carry; None while off
        self._handles: list[Any] = []
        self._missing: list[set[str]] = []  # per device: the figures it does not give
        self._sums: dict[int, DeviceSums] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ms = 0
        self._probed = False  # the first reading, which finds the figures each device does not give, is done

    def start(self) -> None:
        """Start sampling on a thread of its own (NVML's import and initialisation included: they never hold up the
        worker); with ``interval_s`` 0 it says it is off and starts nothing."""
        if self.interval_s <= 0:
            self.note("gpu telemetry off", "GPU telemetry off: --gpu-interval 0")
            return
        self._thread = threading.Thread(target=self._run, name="qdeck-gpu-telemetry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def take_interval(self) -> tuple[GpuFigures, ...]:
        """Each device's figures since the last call (empty when nothing was read)."""
        with self._lock:
            sums, self._sums = self._sums, {}
        return tuple(s.figures(i) for i, s in sorted(sums.items()) if s.samples)

    def open(self) -> str | None:
        """Load and initialise NVML and take the first sample; why not, as a phrase (None: on)."""
        nvml = self.nvml
        if nvml is None:
            try:
                nvml = self.nvml = import_nvml(self.module)
            except Exception as exc:  # ImportError; AttributeError, ValueError for a bad stand-in path
                pkg = " (pip install nvidia-ml-py)" if self.module == NVML_MODULE else ""
                return f"cannot import {self.module!r}{pkg}: {_why(exc)}"
        try:
            nvml.nvmlInit()
        except Exception as exc:
            return f"NVML did not initialise: {_why(exc)}"
        try:
            count = int(nvml.nvmlDeviceGetCount())
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self._shutdown()
            return f"NVML could not list the GPUs: {_why(exc)}"
        if not self._handles:
            self._shutdown()
            return "NVML found no GPU"
        self._missing = [set() for _ in self._handles]
        self.sample()
        if all(m >= set(FIGURES) for m in self._missing):
            self._shutdown()
            self.latest, self._sums = None, {}
            return "NVML gives none of the figures on any GPU"
        return None

    def sample(self) -> GpuSample:
        """Read every device once (on the sampler's thread); the first call finds what each device does not give.
        Raises what NVML raises for a figure that was given before."""
        devices = tuple(self._read(i, h) for i, h in enumerate(self._handles))
        self._probed = True
        now_ms = max(self.clock_ns() // 1_000_000, self._last_ms + 1)  # only grows: readers count each sample once
        self._last_ms = now_ms
        sample = GpuSample(now_ms, devices)
        with self._lock:
            for i, dev in enumerate(devices):
                self._sums.setdefault(i, DeviceSums()).add(dev)
        self.latest = sample
        return sample

    def _read(self, index: int, handle: Any) -> GpuDevice:
        nvml, missing = self.nvml, self._missing[index]
        readers: dict[str, Callable[[], Any]] = {
            "util_pct": lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            "mem_used_mib": lambda: _mib(nvml.nvmlDeviceGetMemoryInfo(handle)),
            "power_w": lambda: round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000, 1),  # mW
            "sm_clock_mhz": lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        }
        got: dict[str, Any] = {}
        for name, read in readers.items():
            if name in missing:
                continue
            if self._probed:
                got[name] = read()
                continue
            try:
                got[name] = read()
            except Exception:  # the first reading: a figure this device does not give (NVMLError_NotSupported)
                missing.add(name)
        used, total = got.get("mem_used_mib", (None, None))
        return GpuDevice(got.get("util_pct"), used, total, got.get("power_w"), got.get("sm_clock_mhz"))

    def _run(self) -> None:
        why = self.open()
        if why is not None:
            self.note("gpu telemetry off", f"GPU telemetry off: {why}")
            return
        gaps = [f"{', '.join(label for f, label in FIGURES.items() if f in m)} on GPU {i}"
                for i, m in enumerate(self._missing) if m]
        self.note("gpu telemetry on", f"GPU telemetry on: {len(self._handles)} GPU"
                  f"{'s' if len(self._handles) > 1 else ''}, read every {self.interval_s:g} s"
                  + (f" (NVML does not give {'; '.join(gaps)})" if gaps else ""))
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self.sample()
                except Exception as exc:
                    self.latest = None
                    self.note("gpu telemetry stopped", f"GPU telemetry stopped: {_why(exc)}; replies carry no GPU "
                              "figures from now on")
                    return
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # already gone: nothing to release
            return


def _mib(info: Any) -> tuple[int, int]:
    """Memory used and total (MiB) of an ``nvmlDeviceGetMemoryInfo`` answer (bytes)."""
    return int(info.used) // MIB, int(info.total) // MIB


def _why(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # pynvml's NVMLError.__str__ asks the library, which may be what failed
        text = ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
