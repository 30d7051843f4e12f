"""`lazydp-bench info`: the machine as the tool sees it, and what each placement can hold."""

from __future__ import annotations

from rich.table import Table

from lazydp_bench.measure.cpu_power import RatedPower, rated_power, read_host_cpu
from lazydp_bench.measure.energy import EnergyMeter
from lazydp_bench.measure.env import machine_info
from lazydp_bench.placement.layout import estimate_need, fits, machine_limits
from lazydp_bench.units import format_bytes
from lazydp_bench.workloads import Workload, load_workload, scale_to_bytes

_PROBE_WORKLOAD = "mlperf-dlrm"


def largest_fitting_bytes(wl: Workload, placement: str, limits, history_table: bool = True) -> int:
    """Bisect the table size (bytes) at which a LazyDP run of `wl` stops fitting."""
    batch, pooling = wl.batch_size, wl.pooling

    def ok(size: int) -> bool:
        scaled = scale_to_bytes(wl, size)
        need = estimate_need(
            scaled,
            placement,
            batch=batch,
            pooling=pooling,
            elem=4,
            chunk_bytes=256 * 2**20,
            clipping="ghost",
            history_table=history_table,
        )
        return fits(need, limits)

    lo, hi = wl.num_tables * wl.dim * 4, 2**44
    if not ok(lo):
        return 0
    for _ in range(60):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def rated_power_text(power: RatedPower | str) -> str:
    """What a host energy estimate would use without --cpu-tdp: watts and their source, or
    why there is none."""
    if isinstance(power, str):
        return power
    return f"{power.watts:.1f} W ({power.source}, x {power.share:.3g} of a socket)"


def machine_report(host_limit: int | None) -> Table:
    env = machine_info()
    limits = machine_limits(host_limit)
    meter = EnergyMeter(use_gpu=env["gpu_count"] > 0)
    table = Table(title="machine", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")  # a commit hash folds, never truncates
    rows = [
        ("GPU", f"{env['gpu_count']} x {env['gpu_name']}" if env["gpu_count"] else "none"),
        ("GPU memory", format_bytes(env["gpu_memory_bytes"])),
        ("driver", env["gpu_driver"] or "none (no NVIDIA driver found)"),
        ("torch / CUDA", f"{env['torch']} / {env['cuda'] or 'none (CPU build)'}"),
        ("NVML energy counter", "readable" if meter.gpu_reason is None else meter.gpu_reason),
        ("CPU", f"{env['cpu']} ({env['cpu_count']} cores)"),
        ("RAPL CPU energy", "readable" if meter._rapl.reason is None else meter._rapl.reason),
        ("CPU rated power (host estimate)", rated_power_text(rated_power(None, read_host_cpu()))),
        (
            "host RAM (total / planning limit)",
            f"{format_bytes(env['host_ram_bytes'])} / "
            f"{format_bytes(limits.host_bytes)} ({limits.host_source})",
        ),
        ("commit", f"{env['commit'] or 'unknown'}{' (dirty)' if env['dirty'] else ''}"),
    ]
    wl = load_workload(_PROBE_WORKLOAD)
    for placement in ("gpu", "hybrid", "cpu"):
        if placement != "cpu" and limits.gpu_bytes is None:
            rows.append((f"largest {_PROBE_WORKLOAD} table, {placement}", "n/a (no GPU)"))
            continue
        size = largest_fitting_bytes(wl, placement, limits)
        rows.append((f"largest {_PROBE_WORKLOAD} table, {placement} (LazyDP)", format_bytes(size)))
    for what, value in rows:
        table.add_row(what, value)
    return table
