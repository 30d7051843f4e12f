"""The rows-round-trip design for a host table's dense noise, timed (GPU machine only; a
diagnostic, no records).

`streamed` (the engine) draws noise on the GPU, copies it down and adds it on the host:
host DRAM carries 4x the table (DMA write, then read noise, read row, write row). A round
trip moves each window of rows to the GPU, adds the noise there and moves it back: 2x
the table through host DRAM and both PCIe directions at once, but only if the table's
own pages are pinned (`cudaHostRegister`), since pageable copies are staged by the driver.
This prints the registration time, the pass time of pageable and registered round trips,
and the bytes/s of each, so `bench noise --placement hybrid` numbers from the same
machine can be set beside them.

    PYTHONPATH=$PWD python3 scripts/diagnostics/round_trip_probe.py 96GB [chunk MiB] [passes]
"""

from __future__ import annotations

import sys
import time

import torch

from lazydp_bench.dp.noise.triton_fused import TritonFusedEngine
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.units import parse_size

DEPTH = 3


def round_trip(table: torch.Tensor, engine: TritonFusedEngine, window_rows: int) -> float:
    """One noisy pass over `table` by windows: H2D on one stream, the fused add on the
    default stream, D2H on a third; DEPTH device buffers. Returns seconds."""
    rows, cols = table.shape
    dev = torch.device("cuda")
    bufs = [torch.empty(window_rows, cols, device=dev) for _ in range(DEPTH)]
    up, down = torch.cuda.Stream(), torch.cuda.Stream()
    freed: list[torch.cuda.Event | None] = [None] * DEPTH
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i, lo in enumerate(range(0, rows, window_rows)):
        hi, slot = min(rows, lo + window_rows), i % DEPTH
        buf = bufs[slot][: hi - lo]
        with torch.cuda.stream(up):
            if freed[slot] is not None:
                up.wait_event(freed[slot])
            buf.copy_(table[lo:hi], non_blocking=True)
            landed = torch.cuda.Event()
            landed.record(up)
        torch.cuda.current_stream().wait_event(landed)
        engine.add_noise(buf, 0.01, 1000 + i, NULL_TIMER)
        added = torch.cuda.Event()
        added.record()
        with torch.cuda.stream(down):
            down.wait_event(added)
            table[lo:hi].copy_(buf, non_blocking=True)
            freed[slot] = torch.cuda.Event()
            freed[slot].record(down)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    size = parse_size(sys.argv[1] if len(sys.argv) > 1 else "8GiB")
    chunk = int(sys.argv[2] if len(sys.argv) > 2 else 256) * 2**20
    passes = int(sys.argv[3] if len(sys.argv) > 3 else 2)
    cols = 128
    rows = size // (cols * 4)
    table = torch.zeros(rows, cols)
    engine = TritonFusedEngine(chunk, 1)
    window = chunk // (cols * 4)
    engine.add_noise(torch.zeros(window, cols, device="cuda"), 0.01, 1, NULL_TIMER)  # compile
    gb = table.nbytes / 1e9
    if table.nbytes <= 16 * 2**30:  # pageable round trip: only where it ends in bounded time
        s = round_trip(table, engine, window)
        print(f"pageable round trip {gb:.1f} GB: {s:.3f} s ({2 * gb / s:.1f} GB/s both ways)")
    cudart = torch.cuda.cudart()
    t0 = time.perf_counter()
    err = cudart.cudaHostRegister(table.data_ptr(), table.nbytes, 0)
    print(f"cudaHostRegister {gb:.1f} GB: {time.perf_counter() - t0:.2f} s (error {err})")
    for k in range(passes):
        s = round_trip(table, engine, window)
        print(f"registered round trip {k}: {s:.3f} s ({2 * gb / s:.1f} GB/s both ways)")
    t0 = time.perf_counter()
    cudart.cudaHostUnregister(table.data_ptr())
    print(f"cudaHostUnregister: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
