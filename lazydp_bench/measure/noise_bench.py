"""`lazydp-bench bench noise`: the dense noisy update against its two bounds (Fig. 6).

Each engine adds std * N(0, 1) to a table of the given size in place; achieved bandwidth
is 2 x table bytes / time (one read and one write of every element), compared with the
device's measured copy bandwidth (bytes read + written by a large `copy_`: the memory
bound), and, where the engine can measure it, with the rate at which its generator makes
normals with no memory traffic (the arithmetic bound). The pass can go no faster than the
lower of the two; `pct_of_bound` says how close it gets.

`--placement hybrid` noises a table in host RAM with a GPU beside it (the streamed engine,
and the host engines for comparison); its bound is the one of `hybrid_bound.py` (PCIe both
ways, the host's add, the GPU's draw, measured in the same run), recorded in `hybrid`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from lazydp_bench.dp.noise import DenseNoiseEngine, make_engine
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.env import machine_info
from lazydp_bench.measure.hybrid_bound import (
    HybridRates,
    host_add_rate,
    host_copy_rate,
    pcie_rates,
)
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.placement.layout import machine_limits
from lazydp_bench.records.schema import new_header
from lazydp_bench.units import format_bytes

_COPY_MAX = 2**30  # the copy that measures bandwidth: the table's size, at most 1 GiB
_DIM = 128


def copy_bytes(table_bytes: int) -> int:
    """Bytes of each copy buffer: as large as the table (a small table's noise pass runs
    in cache, so its copy does too) up to 1 GiB (enough to leave every cache)."""
    return min(_COPY_MAX, table_bytes)


def bench_need(size_bytes: int, placement: str, *, threads: int, chunk_bytes: int) -> int:
    """Upper bound of the bench's memory on its device (the host for cpu and hybrid): the
    table, two copy buffers, and the engines' chunk buffers (one per host thread); hybrid
    adds the pinned PCIe and threaded-copy buffers (two each) and the streamed engine's
    three pinned windows and the host add's chunk."""
    table = max(1, size_bytes // (_DIM * 4)) * _DIM * 4
    if placement == "gpu":
        return table + 2 * copy_bytes(table) + chunk_bytes
    need = table + 2 * copy_bytes(table) + chunk_bytes * threads
    if placement == "hybrid":
        need += 4 * copy_bytes(table) + 4 * chunk_bytes
    return need


def time_ms(fn: Callable[[], None], device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def arithmetic_bound(engine: DenseNoiseEngine, device: torch.device) -> float | None:
    """Normals per second the engine's generator makes with no memory traffic (median of
    5 launches), where the engine has such a launch; None elsewhere."""
    draw = engine.draw_only(device)
    if draw is None:
        return None
    launch, normals = draw
    launch()  # compile and warm
    return normals / (statistics.median(time_ms(launch, device, 5)) / 1e3)


def check_bench_fits(size_bytes: int, placement: str, *, threads: int, chunk_bytes: int) -> None:
    """Refuse a bench whose buffers exceed the free memory of its device (before anything
    is allocated or written)."""
    limits = machine_limits()
    need = bench_need(size_bytes, placement, threads=threads, chunk_bytes=chunk_bytes)
    have, where = (
        (limits.gpu_bytes, "GPU memory free")
        if placement == "gpu"
        else (limits.host_bytes, "host memory available")
    )
    if have is not None and need > have:
        raise BenchError(
            f"bench noise --size {format_bytes(size_bytes)} needs {format_bytes(need)} "
            f"(table, two copy buffers, chunk buffers); {where}: {format_bytes(have)}"
        )


def copy_bandwidth(device: torch.device, nbytes: int = _COPY_MAX, repeats: int = 10) -> float:
    """Bytes read + written per second by a device-to-device (or host) copy of `nbytes`."""
    src = torch.rand(max(1, nbytes // 4), device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = statistics.median(time_ms(lambda: dst.copy_(src), device, repeats))
    return 2 * src.numel() * 4 / (ms / 1e3)


def bench_noise(
    size_bytes: int,
    placement: str,
    impls: list[str],
    *,
    repeats: int,
    threads: int,
    chunk_bytes: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict]:
    device = torch.device("cuda" if placement == "gpu" else "cpu")
    via = torch.device("cuda") if placement == "hybrid" else None
    rows = max(1, size_bytes // (_DIM * 4))
    table = torch.empty((rows, _DIM), dtype=torch.float32, device=device)
    table.uniform_(-0.01, 0.01)  # real values, never zeros (zeros can time differently)
    progress("measuring copy bandwidth")
    copy_bps = copy_bandwidth(device, copy_bytes(table.numel() * 4))
    hybrid = None
    if via is not None:
        progress("measuring PCIe, the host's add and the GPU's draw")
        hybrid = hybrid_rates(table, via, chunk_bytes, threads).bound(table.numel() * 4)
    env = machine_info()
    records = []
    for impl in impls:
        engine = make_engine(impl, chunk_bytes, threads, stream_via=via).for_device(device)
        progress(f"{impl}: {engine.describe(device)['engine']}")
        engine.prepare(table)  # buffers, kernels, a pinned table: none of it timed
        step = iter(range(1 << 30))

        def once(engine=engine, step=step) -> None:
            engine.add_noise(table, 1e-3, next(step), NULL_TIMER)

        once()
        times = time_ms(once, device, repeats)
        bound = arithmetic_bound(engine, device)
        records.append(
            _record(
                engine,
                device,
                times,
                size_bytes=size_bytes,
                rows=rows,
                placement=placement,
                impl=impl,
                copy_bps=copy_bps,
                env=env,
                threads=threads,
                chunk=chunk_bytes,
                arithmetic_bound=bound,
                hybrid=hybrid,
            )
        )
    return records


def hybrid_rates(
    table: torch.Tensor, gpu: torch.device, chunk_bytes: int, threads: int
) -> HybridRates:
    """The rates that bound a host table's noisy update with `gpu`'s help (see
    `hybrid_bound.py`): PCIe both ways, the host's add over `table`, the GPU's draw."""
    h2d, d2h, duplex = pcie_rates(gpu, copy_bytes(table.numel() * table.element_size()))
    fused = make_engine("fused", chunk_bytes, threads).for_device(gpu)
    return HybridRates(
        h2d_bytes_per_s=h2d,
        d2h_bytes_per_s=d2h,
        duplex_bytes_per_s=duplex,
        host_add_bytes_per_s=host_add_rate(table, chunk_bytes, threads),
        host_copy_bytes_per_s=host_copy_rate(copy_bytes(table.numel() * 4), threads),
        gpu_draw_samples_per_s=arithmetic_bound(fused, gpu) or float("inf"),
    )


def _record(
    engine: DenseNoiseEngine,
    device: torch.device,
    times: list[float],
    *,
    size_bytes: int,
    rows: int,
    placement: str,
    impl: str,
    copy_bps: float,
    env: dict,
    threads: int,
    chunk: int,
    arithmetic_bound: float | None,
    hybrid: dict | None,
) -> dict:
    median = statistics.median(times)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [median] * 3
    table_bytes = rows * _DIM * 4
    achieved = 2 * table_bytes / (median / 1e3)
    samples = rows * _DIM / (median / 1e3)
    memory_bound = copy_bps / 8  # float32 samples per second for one read + write each
    bound = min(memory_bound, arithmetic_bound or memory_bound)
    pct_of_bound = 100 * samples / bound
    if hybrid is not None:  # the host table's bound: PCIe, the host's add, the GPU's draw
        pct_of_bound = 100 * hybrid["bound_ms"] / median
    return {
        "kind": "bench_noise",
        **new_header("ok"),
        "config": {
            "algo": f"noise:{impl}",
            "bench": "noise",
            "noise_impl": impl,
            "placement": placement,
            "table_size_requested_bytes": size_bytes,
            "table_bytes": table_bytes,
            "dim": _DIM,
            "dtype": "float32",
            "repeats": len(times),
            "host_threads": threads if device.type == "cpu" else None,
            "chunk_bytes": chunk,
        },
        "noise": engine.describe(device),
        "env": env,
        "timing": {
            "mode": "cuda_events" if device.type == "cuda" else "sync_wall",
            "step_median_ms": median,
            "step_p25_ms": q[0],
            "step_p75_ms": q[2],
            "step_ms_raw": times,
        },
        "bench": {
            "achieved_bytes_per_s": achieved,
            "copy_bytes_per_s": copy_bps,
            "pct_of_copy": 100 * achieved / copy_bps,
            "samples_per_s": samples,
            "memory_bound_samples_per_s": memory_bound,
            "arithmetic_bound_samples_per_s": arithmetic_bound,
            "pct_of_bound": pct_of_bound,
            "hybrid": hybrid,
        },
    }
