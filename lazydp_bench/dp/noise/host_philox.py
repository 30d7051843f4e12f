"""Host `host-philox` engine: compiled C draws Philox normals and adds them in one pass.

`host_philox.c` computes, for each program of 4096 elements, the Philox-4x32-10 words in
SIMD registers (AVX-512 or AVX2 where the CPU has them), turns them into normals in an
L1-sized buffer and adds std * z to the target while it is read: one read and one write
of every element, no noise buffer in memory. The stream is the Triton fused kernel's
(same 64-bit key, same counters (group, launch chunk, 0, 0), same element layout, same
Box-Muller mapping of words to normals), so a host table and a GPU table noised with one
key get the same noise up to float32 rounding of ln, sin and cos (here Cephes-style
polynomials, there libdevice and sin/cos.approx).

The library is built at first use by the C compiler ($CC, else gcc or cc on PATH) with
-O3 -march=native, once per machine and source (cached under $LAZYDP_BENCH_CACHE, else
~/.cache/lazydp_bench; `lazydp_bench/native.py`); a build takes ~1 s. It is loaded
through ctypes, which releases the GIL for every call, so a thread pool splits the
programs of a call and scales with cores. Philox is counter-based: every element's
noise depends on (key, launch, position) only, never on the thread count or the task
split. Where no compiler works, the engine falls back to `HostThreadedEngine` (torch
mt19937) and says why in `describe()`.

Measured on one core of a 2-core EPYC 9004 VM (CPU seconds, 64 Mi-element float32 target):
0.78 G samples/s, against 0.24 for `HostThreadedEngine` and 0.09 for NumPy's float32
ziggurat + add; scripts/diagnostics/host_noise_options.py measures every option per
thread count against the in-place add bound.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.noise.host_threaded import HostThreadedEngine
from lazydp_bench.dp.seeds import MASK64
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.native import NativeBuildError, find_compiler, load

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared")
PROGRAM = 4096  # elements per program: the Triton kernel's 4 x BLOCK
LAUNCH_ELEMS = 1 << 30  # the Triton engine's launch bound: the counter's chunk word changes here
_TASK_PROGRAMS = 256  # 1 Mi elements (4 MiB of fp32) per pool task: ~1 ms of one core's work
DRAW_ONLY_PROGRAMS = 16  # 64 Ki elements (256 KiB of fp32) per thread: in its L2, off DRAM
DRAW_ONLY_REPEATS = 64  # passes over it per launch: ~16 ms of one core's work
_SIMD = {16: "AVX-512", 8: "AVX2", 1: "scalar"}
_c_ptr, _c_i64, _c_u32, _c_u64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint64
_ADD_ARGS = [_c_ptr, _c_i64, _c_i64, _c_ptr, ctypes.c_double, _c_u64, _c_u32, _c_i64, _c_i64]


@dataclass(frozen=True)
class Kernels:
    """The loaded library (None where it could not be built, and why)."""

    lib: ctypes.CDLL | None
    simd: str = ""  # the Philox vectors' instruction set
    lanes: int = 0  # Philox groups drawn per block (4 normals each)
    reason: str = ""

    def add_fn(self, dtype: torch.dtype):
        return {torch.float32: self.lib.philox_add_f32, torch.float64: self.lib.philox_add_f64}[
            dtype
        ]

    def spin_fn(self) -> Callable[..., None]:
        """`philox_spin_f32(w, n, std, repeats)`: the add over one block, repeated."""
        return self.lib.philox_spin_f32


@functools.cache
def load_kernels(compiler: str | None, defines: tuple[str, ...] = ()) -> Kernels:
    """Build (once per machine) and load the library; a `Kernels` with `lib=None` and the
    reason where that fails. Cached per process: every engine shares one load. `defines`:
    macros such as "SUB=64" (lanes drawn at a time; the diagnostics compare them)."""
    if compiler is None:
        return Kernels(None, reason="no C compiler ($CC, gcc or cc) found")
    flags = (*FLAGS, *(f"-D{d}" for d in defines))
    try:
        lib = load(SOURCE, compiler, flags, name="host_philox")
    except NativeBuildError as err:
        return Kernels(None, reason=f"building with {compiler} failed ({err})")
    for fn in (lib.philox_add_f32, lib.philox_add_f64):
        fn.argtypes, fn.restype = _ADD_ARGS, None
    lib.philox_spin_f32.argtypes = [_c_ptr, _c_i64, ctypes.c_double, _c_i64]
    lib.philox_spin_f32.restype = None
    lib.philox_words.argtypes = [_c_u64, _c_u32, _c_u32, _c_i64, _c_ptr]
    lib.philox_words.restype = None
    lib.philox_simd_width.restype = lib.philox_sub_lanes.restype = ctypes.c_int
    return Kernels(lib, simd=_SIMD[lib.philox_simd_width()], lanes=lib.philox_sub_lanes())


def _call(add, args: tuple, keep: torch.Tensor | None) -> None:
    """One library call; `keep` holds the per-row stds its raw pointer reads alive."""
    add(*args)


def philox_words(kernels: Kernels, key: int, chunk: int, group0: int, count: int) -> torch.Tensor:
    """The Philox words of counters (group0 + g, chunk, 0, 0), g < count: [count, 4] uint32
    as int64 (for comparisons with a reference)."""
    out = torch.empty((count, 4), dtype=torch.int32)
    kernels.lib.philox_words(key & MASK64, chunk, group0, count, out.data_ptr())
    return out.to(torch.int64) & 0xFFFFFFFF


class HostPhiloxEngine(DenseNoiseEngine):
    name = "host-philox"

    def __init__(
        self,
        chunk_bytes: int,
        threads: int,
        *,
        compiler: str | None = "",
        launch_elems: int = LAUNCH_ELEMS,
        defines: tuple[str, ...] = (),
    ) -> None:
        """`compiler`: "" finds one (`find_compiler`), None means none (the fallback).
        `launch_elems`: elements per counter chunk (the Triton engine's; tests shrink it).
        `defines`: the library's build macros (`load_kernels`)."""
        super().__init__(chunk_bytes, threads)
        self.compiler = find_compiler() if compiler == "" else compiler
        self.defines = defines
        self.launch_elems = launch_elems
        self._pool: ThreadPoolExecutor | None = None
        self._fallback = HostThreadedEngine(chunk_bytes, threads)

    def kernels(self) -> Kernels:
        return load_kernels(self.compiler, self.defines)

    def prepare(self, target: torch.Tensor) -> None:
        """Build or load the library now, so no timed call pays for it."""
        self.kernels()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        return self._pool

    def _add_gaussian(
        self, target: torch.Tensor, std: float | torch.Tensor, seed: int, timer: StageTimer
    ) -> None:
        kernels = self.kernels()
        if kernels.lib is None:
            self._fallback._add_gaussian(target, std, seed, timer)
            return
        if target.device.type != "cpu" or not target.is_contiguous():
            raise ValueError("host engine needs a contiguous CPU tensor")
        if target.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"host-philox noises float32 or float64 tables, not {target.dtype}")
        if target.numel() == 0:
            return
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            jobs = self._jobs(kernels, target, std, int(seed) & MASK64)
            if self.threads == 1 or len(jobs) == 1:
                for job in jobs:
                    job()
            else:
                for fut in [self._executor().submit(job) for job in jobs]:
                    fut.result()

    def _jobs(self, kernels: Kernels, target: torch.Tensor, std, key: int) -> list:
        """One call of the library per task: a run of programs inside one launch."""
        add = kernels.add_fn(target.dtype)
        rows, cols = target.shape
        rows_per_launch = max(1, self.launch_elems // cols)
        if not isinstance(std, torch.Tensor) or std.dim() == 0:
            std = float(std)
        # the C code reads the stds through a host pointer
        per_row = None if isinstance(std, float) else std.to("cpu", target.dtype).contiguous()
        scalar = std if isinstance(std, float) else 0.0
        jobs = []
        for chunk, start in enumerate(range(0, rows, rows_per_launch)):
            stop = min(rows, start + rows_per_launch)
            ptr = target[start:stop].data_ptr()
            std_ptr = None if per_row is None else per_row[start:stop].data_ptr()
            n = (stop - start) * cols
            programs = -(-n // PROGRAM)
            for lo in range(0, programs, _TASK_PROGRAMS):
                hi = min(programs, lo + _TASK_PROGRAMS)
                args = (ptr, n, cols, std_ptr, scalar, key, chunk, lo, hi)
                jobs.append(functools.partial(_call, add, args, per_row))
        return jobs

    def draw_only(self, device: torch.device) -> tuple[Callable[[], None], int] | None:
        """Each pool thread noising its own cache-resident block over and over: the
        generator (and the add, in cache) with no DRAM traffic, the host's arithmetic
        bound, which `bench noise` sets beside its memory bound. The passes run inside one
        library call per thread: a call per pass runs Python between passes under the
        interpreter lock, and 16 threads waiting on it measured a bound below the engine's
        own pass over a whole table. None where the library did not build (the fallback's
        rate is not this engine's)."""
        kernels = self.kernels()
        if kernels.lib is None or device.type != "cpu":
            return None
        spin = kernels.spin_fn()
        n = DRAW_ONLY_PROGRAMS * PROGRAM
        blocks = [torch.zeros(n) for _ in range(self.threads)]

        def launch() -> None:
            pool = self._executor()
            jobs = [pool.submit(spin, b.data_ptr(), n, 1e-30, DRAW_ONLY_REPEATS) for b in blocks]
            for job in jobs:
                job.result()

        return launch, self.threads * n * DRAW_ONLY_REPEATS

    def describe(self, device: torch.device) -> dict[str, str]:
        kernels = self.kernels()
        if kernels.lib is None:
            info = self._fallback.describe(device)
            return {
                **info,
                "engine": f"{info['engine']}; host-philox unavailable: {kernels.reason}",
            }
        return {
            "engine": f"host-philox ({self.threads} threads, {kernels.simd})",
            "rng": "Philox4x32-10 (C), Box-Muller, polynomial ln/sin/cos on a quadrant "
            "reduced on the bits: the Triton fused kernel's stream",
            "key_bits": "64-bit key = the call's seed; counter (group, launch chunk, 0, 0)",
        }
