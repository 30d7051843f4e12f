"""Machine and code provenance stored beside every result (as pytest-benchmark does)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from lazydp_bench import __version__
from lazydp_bench.measure.nvml import open_device
from lazydp_bench.model.huge_pages import thp_mode
from lazydp_bench.placement.layout import host_available_bytes


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _host_total_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def commit_info() -> dict:
    """The git commit of the tool's checkout and whether it had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    if env_commit := os.environ.get("LAZYDP_BENCH_COMMIT"):
        return {"commit": env_commit, "dirty": os.environ.get("LAZYDP_BENCH_DIRTY") == "1"}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return {"commit": commit or None, "dirty": bool(status) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_info() -> dict:
    """GPU facts through NVML (no CUDA context is created); torch as the fallback."""
    if not torch.cuda.is_available():
        return {"gpu_name": None, "gpu_count": 0, "gpu_driver": None, "gpu_memory_bytes": None}
    dev = open_device(0)
    try:
        if isinstance(dev, str):
            raise RuntimeError(dev)
        lib, handle = dev.lib, dev.handle
        return {
            "gpu_name": _text(lib.nvmlDeviceGetName(handle)),
            "gpu_count": int(lib.nvmlDeviceGetCount()),
            "gpu_driver": _text(lib.nvmlSystemGetDriverVersion()),
            "gpu_memory_bytes": int(lib.nvmlDeviceGetMemoryInfo(handle).total),
        }
    except Exception:  # NVML missing or failing: torch's view (no driver version)
        props = torch.cuda.get_device_properties(0)
        return {
            "gpu_name": props.name,
            "gpu_count": torch.cuda.device_count(),
            "gpu_driver": None,
            "gpu_memory_bytes": props.total_memory,
        }


def machine_info() -> dict:
    return {
        **gpu_info(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "host_ram_bytes": _host_total_bytes(),
        "host_available_bytes": host_available_bytes(),
        "hostname": platform.node(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "transparent_hugepage": thp_mode(),
        "tool_version": __version__,
        **commit_info(),
    }
