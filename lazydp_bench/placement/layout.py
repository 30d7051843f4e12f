"""Whether a run fits, checked BEFORE allocating, and which placement `auto` means.

The placements themselves (`gpu`, `hybrid`, `cpu`: where state lives, how updates reach
the table) are the strategies in this package; here each one's memory need is estimated
from the workload and checked against the machine. `auto` picks gpu if CUDA is present
and the run fits in GPU memory, else hybrid if it fits in host RAM, else cpu.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import torch

from lazydp_bench.errors import BenchError, DoesNotFit
from lazydp_bench.measure.nvml import open_device
from lazydp_bench.placement.base import MemoryNeed
from lazydp_bench.placement.registry import PLACEMENTS
from lazydp_bench.runtime.step_scalars import schedule_bytes
from lazydp_bench.units import format_bytes
from lazydp_bench.workloads import Workload

GPU_HEADROOM = 0.92  # leave room for the CUDA context and allocator fragmentation
HOST_HEADROOM = 0.90


@dataclass(frozen=True)
class MemoryLimits:
    gpu_bytes: int | None  # None: no CUDA device
    host_bytes: int
    host_source: str
    gpu_source: str = "GPU 0's free memory"  # or "--gpu-mem": a stated GPU


def _meminfo(field: str) -> int | None:
    """A /proc/meminfo field in bytes, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_total_bytes() -> int:
    """The host's RAM as the kernel reports it now (MemTotal; on some virtual machines it
    grows as memory is touched, so a larger --host-mem-limit is warned, not refused)."""
    total = _meminfo("MemTotal")
    return total if total is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def host_available_bytes() -> int:
    available = _meminfo("MemAvailable")
    return available if available is not None else host_total_bytes()


def gpu_free_bytes() -> int | None:
    """Free memory of GPU 0, read through NVML when possible: asking CUDA would create a
    context in this process (a sweep's parent must leave the GPU to its workers)."""
    if not torch.cuda.is_available():
        return None
    dev = open_device(0)
    try:
        if isinstance(dev, str):
            raise RuntimeError(dev)
        return int(dev.lib.nvmlDeviceGetMemoryInfo(dev.handle).free)
    except Exception:  # NVML missing or failing: ask CUDA after all
        return int(torch.cuda.mem_get_info()[0])


def machine_limits(host_limit: int | None = None, gpu_free: int | None = None) -> MemoryLimits:
    """The memory runs are planned against. `gpu_free` states a GPU's free bytes (a sweep
    dry run's --gpu-mem) instead of asking this machine's GPU, which may be absent; the
    same headroom applies to both."""
    stated = gpu_free is not None
    free = gpu_free if stated else gpu_free_bytes()
    gpu = int(free * GPU_HEADROOM) if free is not None else None
    gpu_source = "--gpu-mem" if stated else "GPU 0's free memory"
    if host_limit is not None:
        return MemoryLimits(gpu, host_limit, "--host-mem-limit", gpu_source)
    host = int(host_available_bytes() * HOST_HEADROOM)
    return MemoryLimits(gpu, host, "MemAvailable", gpu_source)


GPU_HELPED_WINDOWS = 6  # roundtrip: 3 row and 3 noise windows on the GPU (streamed: 3)


def estimate_need(
    wl: Workload,
    placement: str,
    *,
    batch: int,
    pooling: int,
    elem: int,
    chunk_bytes: int,
    clipping: str,
    history_table: bool,
    steps: int = 0,
) -> MemoryNeed:
    """A deliberately simple upper-bound model of the run's memory, per side. `steps`
    sizes the per-step schedules (and LazyDP's three float64 prefix sums over steps)."""
    table = wl.table_bytes(elem)
    history = wl.total_rows * 4 + 3 * 8 * steps if history_table else 0
    lookups = batch * wl.num_tables * pooling
    # sparse path: indices, sort/segment temporaries, expanded row gradients, noise rows
    sparse = lookups * (8 * 8 + wl.dim * elem * 6)
    params = wl.mlp_param_count()
    widths = sum(wl.bottom_mlp) + sum(wl.top_mlp) + wl.interaction_features
    activations = batch * (widths + (wl.num_tables + 1) ** 2 + wl.num_tables * wl.dim) * elem * 6
    dense = params * elem * 6 + activations + schedule_bytes(steps, elem)
    if PLACEMENTS[placement].streams_table_noise:  # the GPU-helped engines' windows
        dense += GPU_HELPED_WINDOWS * chunk_bytes
    if clipping == "materialize":
        dense += batch * params * elem * 2
    elif clipping == "reweight":
        biggest = max(a * b for a, b in _layer_shapes(wl))
        dense += batch * biggest * elem * 2
    return PLACEMENTS[placement].split_need(
        table_side=table + chunk_bytes + sparse, history=history, dense=dense, sparse=sparse
    )


def _layer_shapes(wl: Workload) -> list[tuple[int, int]]:
    bottom = (wl.dense_features, *wl.bottom_mlp)
    top = (wl.interaction_features, *wl.top_mlp)
    return list(itertools.pairwise(bottom)) + list(itertools.pairwise(top))


def fits(need: MemoryNeed, limits: MemoryLimits) -> bool:
    gpu_ok = need.gpu_bytes == 0 or (
        limits.gpu_bytes is not None and need.gpu_bytes <= limits.gpu_bytes
    )
    return gpu_ok and need.host_bytes <= limits.host_bytes


def choose_placement(requested: str, needs: dict[str, MemoryNeed], limits: MemoryLimits) -> str:
    """Resolve `auto`, and refuse a placement that cannot hold the run (naming need and limit)."""
    if requested == "auto":
        order = ("gpu", "hybrid", "cpu") if limits.gpu_bytes is not None else ("cpu",)
        for name in order:
            if fits(needs[name], limits):
                return name
        requested = order[-1]
    if requested != "cpu" and limits.gpu_bytes is None:
        raise BenchError(f"placement {requested!r} needs a CUDA GPU, and none is available")
    need = needs[requested]
    if not fits(need, limits):
        raise DoesNotFit(
            explain_misfit(requested, need, limits), requested, need.gpu_bytes, need.host_bytes
        )
    return requested


def explain_misfit(placement: str, need: MemoryNeed, limits: MemoryLimits) -> str:
    parts = []
    if need.gpu_bytes and (limits.gpu_bytes is None or need.gpu_bytes > limits.gpu_bytes):
        parts.append(
            f"GPU needs ~{format_bytes(need.gpu_bytes)}, has {format_bytes(limits.gpu_bytes)} free"
        )
    if need.host_bytes > limits.host_bytes:
        parts.append(
            f"host needs ~{format_bytes(need.host_bytes)}, has {format_bytes(limits.host_bytes)} "
            f"({limits.host_source})"
        )
    return f"the run does not fit in placement {placement!r}: " + "; ".join(parts)
