"""Times the candidate noise generators on the machine it runs on, one table per side.

Host: threads noise a float32 array in place (`x += std * z`) with each candidate drawer,
one generator per 16 MiB task keyed by (seed, task), at 1 / half / all cores; prints
G samples/s and the in-place add bandwidth of the same threads as the memory bound.
GPU (when CUDA and Triton exist): the copy bandwidth, the fused kernel with the libdevice
and the fast-math Box-Muller (and a few launch shapes), the same draws with no memory
traffic (the arithmetic bound), and the largest difference between the two math paths.

Run: PYTHONPATH=$PWD python3 scripts/diagnostics/noise_options.py [--size-gib 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

TASK = 1 << 22  # elements per task (16 MiB of fp32)
PIECE = 1 << 16  # elements drawn per piece (256 KiB: stays in L2)
STD = np.float32(1e-3)


def _bits(seed: int, task: int, kind):
    return kind(np.random.SeedSequence([seed, task]))


def torch_mt(piece_elems: int):
    def draw(arr, seed, task, scratch):
        gen = torch.Generator().manual_seed((seed * 1_000_003 + task) & 0xFFFFFFFF)
        if scratch.size < piece_elems:
            scratch = np.empty(piece_elems, np.float32)
        buf = torch.from_numpy(scratch)
        for s in range(0, arr.size, piece_elems):
            n = min(piece_elems, arr.size - s)
            buf[:n].normal_(0.0, float(STD), generator=gen)
            np.add(arr[s : s + n], scratch[:n], out=arr[s : s + n])

    return draw


def zig(kind):
    def draw(arr, seed, task, scratch):
        gen = np.random.Generator(_bits(seed, task, kind))
        for s in range(0, arr.size, PIECE):
            n = min(PIECE, arr.size - s)
            z = scratch[:n]
            gen.standard_normal(dtype=np.float32, out=z)
            np.multiply(z, STD, out=z)
            np.add(arr[s : s + n], z, out=arr[s : s + n])

    return draw


def box_muller(kind):
    def draw(arr, seed, task, scratch):
        bits = _bits(seed, task, kind)
        half = PIECE // 2
        u = scratch[:half]
        v = scratch[half:PIECE]
        r = np.empty(half, np.float32)
        for s in range(0, arr.size, PIECE):
            n = min(PIECE, arr.size - s)
            raw = bits.random_raw(half)  # 64 bits: two 32-bit uniforms
            lo = (raw & np.uint64(0xFFFFFFFF)).astype(np.float32)
            hi = (raw >> np.uint64(32)).astype(np.float32)
            np.multiply(lo, np.float32(2.0**-32), out=u)
            np.add(u, np.float32(2.0**-33), out=u)
            np.log(u, out=u)
            np.multiply(u, np.float32(-2.0), out=u)
            np.sqrt(u, out=r)
            r *= STD
            np.multiply(hi, np.float32(2 * np.pi * 2.0**-32), out=v)
            c = np.cos(v)
            np.sin(v, out=v)
            c *= r
            v *= r
            a = arr[s : s + n]
            a[: min(half, n)] += c[: min(half, n)]
            if n > half:
                a[half:n] += v[: n - half]

    return draw


HOST_OPTIONS = {
    "torch normal_ (mt19937) + add": torch_mt(PIECE),
    "torch normal_ + add, 1 MiB pieces": torch_mt(1 << 18),
    "torch normal_ + add, 4 MiB pieces": torch_mt(1 << 20),
    "torch normal_ + add, 16 MiB (one task)": torch_mt(1 << 22),
    "numpy ziggurat PCG64DXSM": zig(np.random.PCG64DXSM),
    "numpy ziggurat SFC64": zig(np.random.SFC64),
    "numpy ziggurat Philox": zig(np.random.Philox),
    "numpy Box-Muller PCG64DXSM": box_muller(np.random.PCG64DXSM),
}


def host_rate(draw, arr: np.ndarray, threads: int) -> float:
    tasks = range((arr.size + TASK - 1) // TASK)

    def work(t: int) -> None:
        local = np.empty(PIECE, np.float32)
        draw(arr[t * TASK : (t + 1) * TASK], 7, t, local)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, tasks[: 2 * threads]))  # warm
        t0 = time.perf_counter()
        list(pool.map(work, tasks))
        dt = time.perf_counter() - t0
    return arr.size / dt / 1e9


def add_bandwidth(arr: np.ndarray, threads: int) -> float:
    one = np.float32(1e-9)

    def work(t: int) -> None:
        a = arr[t * TASK : (t + 1) * TASK]
        np.add(a, one, out=a)

    tasks = range((arr.size + TASK - 1) // TASK)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, tasks))
        t0 = time.perf_counter()
        list(pool.map(work, tasks))
        dt = time.perf_counter() - t0
    return 2 * arr.nbytes / dt / 1e9


def host_side(size_gib: float, only: str = "") -> None:
    arr = np.random.default_rng(0).random(int(size_gib * 2**28), dtype=np.float32)
    cores = os.cpu_count() or 1
    counts = sorted({1, max(1, cores // 4), max(1, cores // 2), max(1, 3 * cores // 4), cores})
    print(f"host: {cores} cores, target {arr.nbytes / 2**30:.1f} GiB")
    for th in counts:
        print(f"  add bandwidth {th:>2} threads: {add_bandwidth(arr, th):7.1f} GB/s (read+write)")
    for name, draw in HOST_OPTIONS.items():
        if only not in name:
            continue
        line = "  ".join(f"{th}t {host_rate(draw, arr, th):6.3f}" for th in counts)
        print(f"  {name:<34} G samples/s: {line}")


def gpu_side(size_gib: float) -> None:
    import triton
    import triton.language as tl

    from lazydp_bench.dp.noise.triton_fused import TritonFusedEngine
    from lazydp_bench.measure.noise_bench import arithmetic_bound, time_ms
    from lazydp_bench.measure.profiling import NULL_TIMER

    @triton.jit
    def _old_add(w_ptr, i, r, n_elements, scale):
        m = i < n_elements
        w = tl.load(w_ptr + i, mask=m)
        tl.store(w_ptr + i, w + r * scale, mask=m)

    @triton.jit
    def old_kernel(w_ptr, seed_ptr, n_elements, scale, BLOCK: tl.constexpr):
        """The engine's kernel before the keyed counters and the angle path (randn4x)."""
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        i0 = pid * (4 * BLOCK) + offs
        r0, r1, r2, r3 = tl.randn4x(tl.load(seed_ptr), pid * BLOCK + offs)
        _old_add(w_ptr, i0, r0, n_elements, scale)
        _old_add(w_ptr, i0 + BLOCK, r1, n_elements, scale)
        _old_add(w_ptr, i0 + 2 * BLOCK, r2, n_elements, scale)
        _old_add(w_ptr, i0 + 3 * BLOCK, r3, n_elements, scale)

    dev = torch.device("cuda")

    def bench(fn, reps=10):
        fn()
        return statistics.median(time_ms(fn, dev, reps))

    n = int(size_gib * 2**28)
    src = torch.rand(1 << 30, device=dev)
    dst = torch.empty_like(src)
    copy = 2 * src.nbytes / (bench(lambda: dst.copy_(src)) / 1e3)
    print(f"gpu: {torch.cuda.get_device_name()}, copy {copy / 1e12:.3f} TB/s (read+write)")
    table = torch.empty(n // 128, 128, device=dev).uniform_(-0.01, 0.01)
    flat = table.view(-1)[: 1 << 30]
    seed = torch.full((), 5, dtype=torch.int64, device=dev)
    grid = (triton.cdiv(flat.numel(), 4096),)
    ms = bench(lambda: old_kernel[grid](flat, seed, flat.numel(), 1e-3, BLOCK=1024, num_warps=8))
    bw = 2 * flat.nbytes / (ms / 1e3)
    print(f"  Triton randn4x (2^30 elements): {100 * bw / copy:5.1f} % of copy")
    import lazydp_bench.dp.noise.triton_fused as tf

    for math_path in (0, 1, 2):
        eng = TritonFusedEngine(256 << 20, 1, math=math_path)
        ms = bench(lambda eng=eng: eng.add_noise(table, 1e-3, 5, NULL_TIMER))
        bw = 2 * table.nbytes / (ms / 1e3)
        print(
            f"  fused math={math_path} ({eng.describe(dev)['rng'][-34:]}): {ms:7.2f} ms "
            f"{100 * bw / copy:5.1f} % of copy, {table.numel() / ms / 1e6:6.1f} G normals/s; "
            f"draw alone {arithmetic_bound(eng, dev) / 1e9:6.1f} G normals/s"
        )
    for block, warps in ((512, 4), (1024, 4), (2048, 8), (2048, 16)):
        tf.BLOCK, tf.NUM_WARPS = block, warps
        eng = TritonFusedEngine(256 << 20, 1)
        ms = bench(lambda eng=eng: eng.add_noise(table, 1e-3, 5, NULL_TIMER))
        bw = 2 * table.nbytes / (ms / 1e3)
        print(
            f"  default math, BLOCK {block:>4} warps {warps:>2}: {100 * bw / copy:5.1f} % of copy"
        )
    tf.BLOCK, tf.NUM_WARPS = 1024, 8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--gpu-size-gib", type=float, default=8.0)
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--only", default="", help="run only host options whose name has this")
    args = ap.parse_args()
    if not args.skip_host:
        host_side(args.size_gib, args.only)
    if torch.cuda.is_available() and not args.only:
        gpu_side(args.gpu_size_gib)


if __name__ == "__main__":
    main()
