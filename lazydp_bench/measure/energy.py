"""Energy over the measured steps: NVML's total-energy counter for the GPU, RAPL for the CPU,
and where RAPL is unreadable an estimate of the host CPU's energy from its busy time and
rated power (`cpu_power.py`), labelled `cpu_source: "estimate (TDP x utilisation)"`.

Like Zeus' begin_window/end_window: the meter never crashes a run. When a counter cannot
be read (no GPU, no NVML, a GPU older than Volta, no readable powercap files) its fields
are None and `reason` says why; a measurement is never reported as 0 for lack of a counter.
NVML's counter (mJ since driver load) updates every 20-100 ms, so windows under ~1 s get
a warning.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lazydp_bench.measure.cpu_power import CPU_ESTIMATE, RatedPower
from lazydp_bench.measure.host_cpu import busy_cpu_seconds, cpu_times
from lazydp_bench.measure.nvml import open_device

MIN_RELIABLE_WINDOW_S = 1.0
NO_RATED_POWER = "no rated CPU power given"


@dataclass(frozen=True)
class EnergyResult:
    source: str  # "nvml" | "unavailable"
    gpu_j_per_step: float | None
    gpu_j_per_sample: float | None
    gpu_avg_w: float | None
    gpu_idle_w: float | None
    cpu_source: str  # "rapl" | "estimate (TDP x utilisation)" | "unavailable"
    cpu_j_per_step: float | None
    window_s: float | None
    reason: str | None
    warning: str | None
    # The host estimate's inputs (None where RAPL was read or no estimate was made):
    # rated W for this machine's CPUs, "table: <model>" | "--cpu-tdp", the share of the
    # table's socket TDP that is; and the machine's busy CPU-seconds over the window.
    cpu_tdp_w: float | None = None
    cpu_tdp_source: str | None = None
    cpu_tdp_share: float | None = None
    cpu_busy_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Nvml:
    """The GPU counter, or the reason it is unreadable."""

    def __init__(self, index: int, nvml_module=None) -> None:
        self.handle = None
        self.reason: str | None = None
        dev = open_device(index, nvml_module)
        if isinstance(dev, str):
            self.reason = dev
            return
        try:
            dev.lib.nvmlDeviceGetTotalEnergyConsumption(dev.handle)
        except Exception as exc:  # NVMLError_*: unsupported before Volta
            self.reason = f"NVML energy counter unreadable: {exc}"
            return
        self.nvml, self.handle = dev.lib, dev.handle

    def energy_mj(self) -> int:
        return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def power_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0


class _Rapl:
    """CPU package energy from Linux powercap (intel-rapl:N package domains)."""

    def __init__(self, root: str = "/sys/class/powercap") -> None:
        self.files: list[tuple[Path, int]] = []
        self.reason: str | None = None
        for domain in sorted(glob.glob(f"{root}/intel-rapl:[0-9]*")):
            if ":" in Path(domain).name.split("intel-rapl:", 1)[1]:
                continue  # a sub-domain (core/uncore/dram), counted in its package
            path = Path(domain) / "energy_uj"
            try:
                int(path.read_text())
                wrap = int((Path(domain) / "max_energy_range_uj").read_text())
                self.files.append((path, wrap))
            except (OSError, ValueError):
                continue
        if not self.files:
            self.reason = "no readable RAPL package counters under /sys/class/powercap"

    def read_uj(self) -> list[int]:
        return [int(p.read_text()) for p, _ in self.files]

    def delta_j(self, before: list[int], after: list[int]) -> float:
        total = 0
        for (_, wrap), b, a in zip(self.files, before, after, strict=True):
            total += a - b if a >= b else a + wrap - b
        return total / 1e6


class EnergyMeter:
    """`host_power`: the rated power a host estimate uses where RAPL is unreadable, or the
    reason there is none; `host_times`: the /proc/stat sampler (replaced in tests)."""

    def __init__(
        self,
        use_gpu: bool,
        gpu_index: int = 0,
        nvml_module=None,
        rapl_root=None,
        *,
        host_power: RatedPower | str = NO_RATED_POWER,
        host_times: Callable[[], list[int] | None] = cpu_times,
    ):
        self._gpu = _Nvml(gpu_index, nvml_module) if use_gpu else None
        self._rapl = _Rapl(rapl_root) if rapl_root else _Rapl()
        self._host_power = host_power
        self._host_times = host_times
        self._start: tuple | None = None
        self._paused: tuple | None = None
        self._excluded = [0.0, 0.0, 0.0, 0.0]  # seconds, GPU J, CPU J, busy CPU-s paused
        self.idle_w: float | None = None

    @property
    def gpu_reason(self) -> str | None:
        if self._gpu is None:
            return "no GPU in this run"
        return self._gpu.reason

    def measure_idle(self, seconds: float = 0.5, samples: int = 5) -> float | None:
        """Mean board power over a short pause before the run (instantaneous readings)."""
        if self._gpu is None or self._gpu.handle is None:
            return None
        readings = []
        for _ in range(samples):
            readings.append(self._gpu.power_w())
            time.sleep(seconds / samples)
        self.idle_w = sum(readings) / len(readings)
        return self.idle_w

    def _sync(self) -> None:
        if self._gpu is not None and torch.cuda.is_available():
            torch.cuda.synchronize()

    def _read(self) -> tuple:
        self._sync()
        gpu = self._gpu.energy_mj() if self._gpu and self._gpu.handle else None
        cpu = self._rapl.read_uj() if self._rapl.files else None
        return (time.perf_counter(), gpu, cpu, self._host_times())

    def begin(self) -> None:
        self._start = self._read()
        self._excluded = [0.0, 0.0, 0.0, 0.0]

    def pause(self) -> None:
        """Leave what follows out of the window until `resume()` (work between measured
        steps that is not theirs, e.g. a held-out evaluation)."""
        self._paused = self._read()

    def resume(self) -> None:
        if self._paused is None:
            raise RuntimeError("EnergyMeter.resume() without pause()")
        (t0, gpu0, cpu0, host0), (t1, gpu1, cpu1, host1) = self._paused, self._read()
        self._excluded[0] += t1 - t0
        if gpu0 is not None:
            self._excluded[1] += (gpu1 - gpu0) / 1e3
        if cpu0 is not None:
            self._excluded[2] += self._rapl.delta_j(cpu0, cpu1)
        self._excluded[3] += busy_cpu_seconds(host0, host1) or 0.0
        self._paused = None

    def end(self, steps: int, batch_size: int) -> EnergyResult:
        self._sync()
        if self._start is None:
            raise RuntimeError("EnergyMeter.end() without begin()")
        t0, gpu0, cpu0, host0 = self._start
        skip_s, skip_gpu, skip_cpu, skip_busy = self._excluded
        host1 = self._host_times()
        busy = busy_cpu_seconds(host0, host1)
        busy = max(0.0, busy - skip_busy) if busy is not None else None
        window = time.perf_counter() - t0 - skip_s
        gpu_j = (self._gpu.energy_mj() - gpu0) / 1e3 - skip_gpu if gpu0 is not None else None
        cpu_j = (
            self._rapl.delta_j(cpu0, self._rapl.read_uj()) - skip_cpu if cpu0 is not None else None
        )
        reasons = [r for r in (self.gpu_reason, self._rapl.reason) if r]
        unread = host0 is None or host1 is None
        host = host_energy(cpu_j, busy, self._host_power, unread=unread, window_s=window)
        if host.reason:
            reasons.append(host.reason)
        if gpu_j is not None and gpu_j <= 0:
            # The counter did not tick inside the window: unknown, not zero.
            reasons.append(f"NVML counter did not advance in a {window:.3f} s window")
            gpu_j = None
        warning = None
        if gpu_j is not None and window < MIN_RELIABLE_WINDOW_S:
            warning = (
                f"energy window {window:.2f} s is under ~10 NVML counter updates; "
                "raise --iterations for a reliable figure"
            )
        elif host.source == CPU_ESTIMATE and window < MIN_RELIABLE_WINDOW_S:
            warning = (
                f"energy window {window:.2f} s is under ~100 ticks of the host CPU clock "
                "(10 ms); raise --iterations for a reliable estimate"
            )
        return EnergyResult(
            source="nvml" if gpu_j is not None else "unavailable",  # per window
            gpu_j_per_step=gpu_j / steps if gpu_j is not None else None,
            gpu_j_per_sample=gpu_j / (steps * batch_size) if gpu_j is not None else None,
            gpu_avg_w=gpu_j / window if gpu_j is not None and window > 0 else None,
            gpu_idle_w=self.idle_w,
            cpu_source=host.source,
            cpu_j_per_step=host.joules / steps if host.joules is not None else None,
            window_s=window,
            reason="; ".join(reasons) or None,
            warning=warning,
            cpu_tdp_w=host.rated.watts if host.rated else None,
            cpu_tdp_source=host.rated.source if host.rated else None,
            cpu_tdp_share=host.rated.share if host.rated else None,
            cpu_busy_s=busy,
        )


@dataclass(frozen=True)
class HostEnergy:
    """The host CPU's energy over a window: what it is, where it came from, and why there
    is none."""

    source: str  # "rapl" | CPU_ESTIMATE | "unavailable"
    joules: float | None
    rated: RatedPower | None = None  # the rated power an estimate used
    reason: str | None = None


def host_energy(
    rapl_j: float | None,
    busy_cpu_s: float | None,
    power: RatedPower | str,
    *,
    unread: bool = False,
    window_s: float = 0.0,
) -> HostEnergy:
    """RAPL's reading where there is one; else rated power x utilisation over the window
    (`cpu_power.py`) where the rated power and the busy time are known; else none, with
    the reason (`unread`: /proc/stat could not be read, else its clock did not tick)."""
    if rapl_j is not None:
        return HostEnergy("rapl", rapl_j)
    if isinstance(power, str):
        return HostEnergy("unavailable", None, reason=power)
    if busy_cpu_s is None:
        why = (
            "host CPU time not readable (/proc/stat)"
            if unread
            else f"host CPU clock did not advance in a {window_s:.3f} s window"
        )
        return HostEnergy("unavailable", None, reason=why)
    return HostEnergy(CPU_ESTIMATE, power.joules(busy_cpu_s), rated=power)
