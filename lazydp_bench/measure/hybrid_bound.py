"""The fastest a dense noisy update of a table in host RAM can be on this machine.

With the table in host RAM and a GPU beside it, two designs exist:
- noise down (`--noise-impl streamed`): the GPU draws every normal, pinned device-to-host
  copies carry them, host threads add them in place. Its time is bounded by the slowest of
  the D2H copy of the table's bytes, the host's add (read the table and the noise, write
  the table), the GPU's draw, and the host's DRAM, which serves all of it at once: the
  copies write N bytes into it while the add moves 3N, so 4N bytes at the host's measured
  memory throughput (the higher of the add's 3N bytes per add time and a threaded copy's);
- rows round trip (`--noise-impl roundtrip`): each table window goes up, gets its noise
  on the GPU, comes back. The table's pages are pinned (`cudaHostRegister`), so both
  copies are DMA straight from and into the table: bounded by both copies at once
  (duplex), each direction alone, the GPU's draw, and the host's DRAM, which the two
  copies cross once each (2N bytes).
These are models built from measured rates, not proofs: copies that land in the last-level
cache and are consumed there move less DRAM traffic than the shared term counts (an engine
can beat it), and the add's noise chunk is reused across windows (read from DRAM only when
it is larger than the cache, as the default 256 MiB is). The each-resource-alone figure
(`bound_unshared_ms`) is the strict lower bound of the two designs. The machine's bound is
the lower of the two; `bench noise --placement hybrid` measures the rates here, in the
same process as the engines it compares with it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class HybridRates:
    """Measured rates (bytes per second unless named otherwise)."""

    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    duplex_bytes_per_s: float  # both directions at once, bytes moved per second in total
    host_add_bytes_per_s: float  # table bytes noised per second by the host's add
    gpu_draw_samples_per_s: float
    host_copy_bytes_per_s: float | None = None  # threaded host copy, bytes read + written

    @property
    def host_dram_bytes_per_s(self) -> float:
        """The host's memory throughput: the higher of what the add moves (3 bytes per
        table byte) and what a threaded copy moves (read + write)."""
        return max(3 * self.host_add_bytes_per_s, self.host_copy_bytes_per_s or 0.0)

    def noise_down_s(self, table_bytes: int, *, shared_dram: bool = True) -> float:
        alone = max(
            table_bytes / self.d2h_bytes_per_s,
            table_bytes / self.host_add_bytes_per_s,
            table_bytes / (4 * self.gpu_draw_samples_per_s),
        )
        return max(alone, 4 * table_bytes / self.host_dram_bytes_per_s) if shared_dram else alone

    def round_trip_s(self, table_bytes: int, *, shared_dram: bool = True) -> float:
        alone = max(
            2 * table_bytes / self.duplex_bytes_per_s,
            table_bytes / self.h2d_bytes_per_s,
            table_bytes / self.d2h_bytes_per_s,
            table_bytes / (4 * self.gpu_draw_samples_per_s),
        )
        return max(alone, 2 * table_bytes / self.host_dram_bytes_per_s) if shared_dram else alone

    def bound(self, table_bytes: int) -> dict:
        """The record's `hybrid` section: rates, each design's bound and the lower one."""
        down, trip = self.noise_down_s(table_bytes), self.round_trip_s(table_bytes)
        alone = min(
            self.noise_down_s(table_bytes, shared_dram=False),
            self.round_trip_s(table_bytes, shared_dram=False),
        )
        return {
            **asdict(self),
            "host_dram_bytes_per_s": self.host_dram_bytes_per_s,
            "bound_noise_down_ms": down * 1e3,
            "bound_round_trip_ms": trip * 1e3,
            "bound_ms": min(down, trip) * 1e3,
            "bound_design": "noise down" if down <= trip else "rows round trip",
            "bound_unshared_ms": alone * 1e3,
        }


def _fastest_s(fn: Callable[[], None], repeats: int) -> float:
    """Fewest wall seconds of `repeats` (>= 1) calls of `fn` (which synchronizes what it
    launches). A bound is what the machine reaches, so its rates take the fastest call, as
    STREAM does: on a shared host a median can fold other traffic into the bound, and a
    bound below what an engine moves says nothing about the engine."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def pcie_rates(gpu: torch.device, nbytes: int, repeats: int = 10) -> tuple[float, float, float]:
    """(H2D, D2H, duplex) bytes per second between pinned host buffers and `gpu`."""
    n = max(1, nbytes // 4)
    host = [torch.empty(n, pin_memory=True) for _ in range(2)]
    dev = [torch.empty(n, device=gpu) for _ in range(2)]
    up, down = torch.cuda.Stream(gpu), torch.cuda.Stream(gpu)

    def h2d() -> None:
        dev[0].copy_(host[0], non_blocking=True)
        torch.cuda.synchronize(gpu)

    def d2h() -> None:
        host[1].copy_(dev[1], non_blocking=True)
        torch.cuda.synchronize(gpu)

    def duplex() -> None:
        with torch.cuda.stream(up):
            dev[0].copy_(host[0], non_blocking=True)
        with torch.cuda.stream(down):
            host[1].copy_(dev[1], non_blocking=True)
        torch.cuda.synchronize(gpu)

    h2d(), d2h(), duplex()  # warm
    moved = 4 * n
    return (
        moved / _fastest_s(h2d, repeats),
        moved / _fastest_s(d2h, repeats),
        2 * moved / _fastest_s(duplex, repeats),
    )


def host_add_rate(table: torch.Tensor, chunk_bytes: int, threads: int) -> float:
    """Table bytes per second that `threads` host threads noise by adding a pinned
    chunk-sized buffer into every window of `table` once (the streamed engine's host
    work, over the whole table)."""
    rows, cols = table.shape
    window = max(1, min(rows, chunk_bytes // (cols * table.element_size())))
    noise = torch.full((window, cols), 1e-9, dtype=table.dtype, pin_memory=True).numpy()
    arr = table.numpy()

    def add(lo: int, hi: int, start: int) -> None:
        part = arr[lo:hi]
        part += noise[lo - start : hi - start]

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def one_pass() -> None:
            jobs = []
            for start in range(0, rows, window):
                stop = min(rows, start + window)
                cuts = [start + (stop - start) * k // threads for k in range(threads + 1)]
                jobs += [pool.submit(add, lo, hi, start) for lo, hi in itertools.pairwise(cuts)]
            for j in jobs:
                j.result()

        one_pass()  # warm (pages touched, threads started)
        seconds = _fastest_s(one_pass, 3)
    return rows * cols * table.element_size() / seconds


def host_copy_rate(nbytes: int, threads: int, repeats: int = 3) -> float:
    """Bytes read + written per second by `threads` host threads copying disjoint slices
    of an `nbytes` buffer into another (a STREAM-style copy: the host DRAM's throughput)."""
    n = max(threads, nbytes // 4)
    src = torch.ones(n).numpy()
    dst = torch.zeros(n).numpy()
    cuts = [n * k // threads for k in range(threads + 1)]

    def copy(lo: int, hi: int) -> None:
        dst[lo:hi] = src[lo:hi]

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def one_pass() -> None:
            for job in [pool.submit(copy, lo, hi) for lo, hi in itertools.pairwise(cuts)]:
                job.result()

        one_pass()  # pages touched
        seconds = _fastest_s(one_pass, repeats)
    return 2 * 4 * n / seconds
