"""GPU `fused` engine: one Triton kernel draws Philox normals in registers and updates the
table in place, a single read+write pass (the memory roofline: 2 x bytes / bandwidth).

Keying (see `lazydp_bench/dp/seeds.py` for where the keys come from): every call's 64-bit
seed is the Philox-4x32-10 key, read from device memory, so a captured CUDA graph draws
step t's noise on every replay. The 128-bit counter is (element group, launch chunk, 0, 0):
each program handles 4 x BLOCK consecutive elements, one Philox call per 4 elements, and
launches are split into row-aligned chunks of at most 2**30 elements (int32 offsets never
overflow, so a group index is < 2**28); no two elements of one call share a counter.

Normals: Box-Muller on the 32-bit words, two normals from two words. The radius comes from
u = (c + 1/2) / 2**32, never 0 or 1, so |z| reaches 6.7 (Triton's own `randn` clamps u at
1e-7, cutting the tails at 5.68) and ln u is accurate near u = 1 as well (`_log_uniform`).
The angle (c + 1/2) / 2**32 of a turn is reduced exactly on its bits (quadrant from the
top two, phi in (-pi/4, pi/4) from the rest, never 0) and goes through the hardware's
sin/cos.approx (absolute error 2**-20.9), small phi through a series, so no normal is
ever an exact 0. libdevice's sinf/cosf, with their general range reduction, made the pass
arithmetic-bound on the H200 (62 % of copy, against 92 % with this path); sin/cos.approx on the
unreduced angle returned exact zeros near its roots (7 in 64 M draws). `MATH` keeps
libdevice (0) and polynomials on the reduced angle (2: 7e-7 from float64 Box-Muller, but
87 % of copy) for `scripts/diagnostics/noise_options.py`, which times all three;
`tests/test_gpu.py` measures each against float64 Box-Muller on the same words.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lazydp_bench.dp.noise.base import DenseNoiseEngine, SeedArg, Std
from lazydp_bench.dp.seeds import as_int64
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.runtime.step_scalars import Scalar

try:  # Triton exists only where CUDA does; the engine registry checks `AVAILABLE`.
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import libdevice

    AVAILABLE = True
except ImportError:  # pragma: no cover - CPU-only machines
    AVAILABLE = False

_MAX_LAUNCH_ELEMS = 1 << 30
BLOCK = 1024
NUM_WARPS = 8
MATH = 1  # 0: libdevice sin/cos, 1: bit-reduced sin/cos.approx, 2: bit-reduced polynomials

if AVAILABLE:

    @triton.jit
    def _log_uniform(c):
        """ln u for u = (c + 1/2) / 2**32, c a uint32: u is in (0, 1), never 0 or 1.

        Near u = 1 a float32 u would be quantized to 2**-24 (so |z| < 5e-4 would come out
        on a coarse grid); there w = 1 - u is exact from the bits (~c) and ln u = log1p(-w)
        is a series (w < 1/16: 7 terms, truncation < 1e-9 relative). Elsewhere libdevice's
        log (1 ulp) of u, or of 1 - w (rounding 2**-25 over |ln u| > 0.064)."""
        u = c.to(tl.float32) * 2.3283064365386963e-10 + 1.1641532182693481e-10
        w = (~c).to(tl.float32) * 2.3283064365386963e-10 + 1.1641532182693481e-10
        upper = c >= 0x80000000
        ln = tl.log(tl.where(upper, 1.0 - w, u))
        p = 1.0 / 7.0
        p = p * w + 1.0 / 6.0
        p = p * w + 0.2
        p = p * w + 0.25
        p = p * w + 1.0 / 3.0
        p = p * w + 0.5
        p = p * w + 1.0
        return tl.where(upper & (w < 0.0625), -(p * w), ln)

    @triton.jit
    def _sincos_turn(c, APPROX: tl.constexpr):
        """(sin, cos) of the angle (c + 1/2) / 2**32 of a turn, starting at -pi/4, reduced
        exactly on the bits: quadrant q = the top 2 bits, phi in (-pi/4, pi/4) from the
        other 30, centred so that phi is never 0. APPROX: the hardware's sin/cos.approx
        (absolute error 2**-20.9), with sin phi = phi - phi**3 / 6 for |phi| < 2**-6 so it
        never rounds to an exact 0 (an atom in the distribution); else Taylor polynomials
        of degree 9 / 10 (truncation < 2e-9)."""
        q = c >> 30
        d = (c & 0x3FFFFFFF).to(tl.int32) - 0x20000000
        phi = (d.to(tl.float32) + 0.5) * 1.4629180792671596e-09  # (pi / 2) / 2**30
        x2 = phi * phi
        if APPROX:
            series = phi - phi * x2 * (1.0 / 6.0)
            sn = tl.where(tl.abs(phi) < 0.015625, series, libdevice.fast_sinf(phi))
            cs = libdevice.fast_cosf(phi)
        else:
            sp = 1.0 / 362880.0
            sp = sp * x2 - 1.0 / 5040.0
            sp = sp * x2 + 1.0 / 120.0
            sp = sp * x2 - 1.0 / 6.0
            sn = phi + phi * x2 * sp
            cp = -1.0 / 3628800.0
            cp = cp * x2 + 1.0 / 40320.0
            cp = cp * x2 - 1.0 / 720.0
            cp = cp * x2 + 1.0 / 24.0
            cp = cp * x2 - 0.5
            cs = 1.0 + x2 * cp
        swap = (q & 1) == 1
        s0 = tl.where(swap, cs, sn)
        c0 = tl.where(swap, sn, cs)
        sin = tl.where(q >= 2, -s0, s0)
        cos = tl.where((q == 1) | (q == 2), -c0, c0)
        return sin, cos

    @triton.jit
    def _box_muller(c1, c2, MATH: tl.constexpr):
        r = tl.sqrt(-2.0 * _log_uniform(c1))
        if MATH == 0:
            # (c + 1/2) / 2**32 of a turn starting at -pi, centred on the bits
            d = (c2 ^ 0x80000000).to(tl.int32, bitcast=True)
            theta = (d.to(tl.float32) + 0.5) * 1.4629180792671596e-09
            sin, cos = tl.sin(theta), tl.cos(theta)
        else:
            sin, cos = _sincos_turn(c2, MATH == 1)
        return r * cos, r * sin

    @triton.jit
    def normals4(seed, group, chunk, MATH: tl.constexpr):
        """Four standard normals per element of `group` (uint32 counters) under the 64-bit
        key `seed`; `chunk` is the counter's second word (see the module docstring)."""
        zero = group * 0
        c0, c1, c2, c3 = tl.philox(seed, group, (zero + chunk).to(tl.uint32), zero, zero)
        z0, z1 = _box_muller(c0, c1, MATH)
        z2, z3 = _box_muller(c2, c3, MATH)
        return z0, z1, z2, z3

    @triton.jit
    def _noisy_update_kernel(
        w_ptr,
        std_ptr,
        seed_ptr,
        n_elements,
        cols,
        chunk,
        group0,
        scale,
        STD: tl.constexpr,  # 0: scale, 1: scale * std_ptr[0], 2: scale * std_ptr[row]
        STORE: tl.constexpr,  # 0: w += noise; 1: w = noise (a window of a larger call)
        BLOCK: tl.constexpr,
        MATH: tl.constexpr,
    ):
        """w[i] += std * z_i over n_elements, z_i Philox normals whose counters start at
        element group `group0` (0 for a whole launch; a window at element e of a launch
        starts at group e / 4 and draws exactly that launch's numbers)."""
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        i0 = pid * (4 * BLOCK) + offs
        i1 = i0 + BLOCK
        i2 = i1 + BLOCK
        i3 = i2 + BLOCK
        m0 = i0 < n_elements
        m1 = i1 < n_elements
        m2 = i2 < n_elements
        m3 = i3 < n_elements
        if STORE:
            w0 = tl.zeros((BLOCK,), w_ptr.dtype.element_ty)
            w1 = w0
            w2 = w0
            w3 = w0
        else:
            w0 = tl.load(w_ptr + i0, mask=m0)
            w1 = tl.load(w_ptr + i1, mask=m1)
            w2 = tl.load(w_ptr + i2, mask=m2)
            w3 = tl.load(w_ptr + i3, mask=m3)
        group = (group0 + pid * BLOCK + offs).to(tl.uint32)
        r0, r1, r2, r3 = normals4(tl.load(seed_ptr), group, chunk, MATH)
        if STD == 2:
            s0 = tl.load(std_ptr + i0 // cols, mask=m0) * scale
            s1 = tl.load(std_ptr + i1 // cols, mask=m1) * scale
            s2 = tl.load(std_ptr + i2 // cols, mask=m2) * scale
            s3 = tl.load(std_ptr + i3 // cols, mask=m3) * scale
        else:
            if STD == 1:  # noqa: SIM108 (constexpr branch: one variant compiled)
                s0 = tl.load(std_ptr).to(tl.float32) * scale
            else:
                s0 = scale
            s1 = s0
            s2 = s0
            s3 = s0
        tl.store(w_ptr + i0, w0 + (r0 * s0).to(w0.dtype), mask=m0)
        tl.store(w_ptr + i1, w1 + (r1 * s1).to(w1.dtype), mask=m1)
        tl.store(w_ptr + i2, w2 + (r2 * s2).to(w2.dtype), mask=m2)
        tl.store(w_ptr + i3, w3 + (r3 * s3).to(w3.dtype), mask=m3)

    @triton.jit
    def _add_to_rows(w_ptr, rows_ptr, std_ptr, i, z, n_elements, cols):
        """Element i of the [slots, cols] noise block, z * std[slot], added to its table row.
        Slots with std 0 (padding, whose rows repeat valid ones) are not touched at all."""
        mask = i < n_elements
        slot = i // cols
        s = tl.load(std_ptr + slot, mask=mask, other=0.0)
        mask = mask & (s != 0)
        row = tl.load(rows_ptr + slot, mask=mask, other=0).to(tl.int64)
        ptr = w_ptr + row * cols + i % cols
        w = tl.load(ptr, mask=mask)
        tl.store(ptr, w + (z * s).to(w.dtype), mask=mask)

    @triton.jit
    def _noisy_rows_kernel(
        w_ptr,
        rows_ptr,
        std_ptr,
        seed_ptr,
        n_elements,
        cols,
        chunk,
        UNIT: tl.constexpr,
        BLOCK: tl.constexpr,
        MATH: tl.constexpr,
    ):
        """`_noisy_update_kernel`'s element layout and Philox counters over a virtual
        [slots, cols] block whose rows live at table rows rows_ptr[slot]. A program whose
        slots all have std 0 (the padding at the end of a unique-rows queue: most slots
        of a small table's queue) returns before drawing; the draws of every other
        program are unchanged (counters come from the element index)."""
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        i0 = pid * (4 * BLOCK) + offs
        if _any_std(std_ptr, i0, n_elements, cols, BLOCK):
            if UNIT:
                r0 = tl.full((BLOCK,), 1.0, tl.float32)
                r1 = r0
                r2 = r0
                r3 = r0
            else:
                group = (pid * BLOCK + offs).to(tl.uint32)
                r0, r1, r2, r3 = normals4(tl.load(seed_ptr), group, chunk, MATH)
            _add_to_rows(w_ptr, rows_ptr, std_ptr, i0, r0, n_elements, cols)
            _add_to_rows(w_ptr, rows_ptr, std_ptr, i0 + BLOCK, r1, n_elements, cols)
            _add_to_rows(w_ptr, rows_ptr, std_ptr, i0 + 2 * BLOCK, r2, n_elements, cols)
            _add_to_rows(w_ptr, rows_ptr, std_ptr, i0 + 3 * BLOCK, r3, n_elements, cols)

    @triton.jit
    def _any_std(std_ptr, i0, n_elements, cols, BLOCK: tl.constexpr):
        """Whether any slot of the program's 4 x BLOCK elements has a nonzero std."""
        top = tl.zeros((BLOCK,), tl.float32)
        for k in tl.static_range(4):
            i = i0 + k * BLOCK
            s = tl.load(std_ptr + i // cols, mask=i < n_elements, other=0.0)
            top = tl.maximum(top, tl.abs(s.to(tl.float32)))
        return tl.max(top, 0) != 0


_MATH_NAMES = {
    0: "libdevice sin/cos",
    1: "sin/cos.approx on a quadrant reduced on the bits",
    2: "polynomial sin/cos on a quadrant reduced on the bits",
}


if AVAILABLE:

    @triton.jit
    def _draw_only_kernel(out_ptr, seed_ptr, iters, BLOCK: tl.constexpr, MATH: tl.constexpr):
        """The engine's draws with no memory traffic (summed in registers, one store per
        lane): how fast this GPU can make the normals at all."""
        pid = tl.program_id(0)
        acc = tl.zeros((BLOCK,), tl.float32)
        for it in range(iters):
            group = ((pid * iters + it) * BLOCK + tl.arange(0, BLOCK)).to(tl.uint32)
            z0, z1, z2, z3 = normals4(tl.load(seed_ptr), group, 0, MATH)
            acc += z0 + z1 + z2 + z3
        tl.store(out_ptr + pid * BLOCK + tl.arange(0, BLOCK), acc)


def _seed_tensor(seed: SeedArg, device: torch.device) -> torch.Tensor:
    """The kernels read their seed from device memory (graph replays update it there)."""
    if isinstance(seed, torch.Tensor):
        return seed
    return torch.full((), as_int64(seed), dtype=torch.int64, device=device)


class TritonFusedEngine(DenseNoiseEngine):
    name = "triton-fused"
    reads_device_scalars = True

    def __init__(self, chunk_bytes: int, threads: int, *, math: int = MATH) -> None:
        super().__init__(chunk_bytes, threads)
        self.math = math

    def _add_gaussian(
        self, target: torch.Tensor, std: Std, seed: SeedArg, timer: StageTimer
    ) -> None:
        if not target.is_contiguous():
            raise ValueError("fused engine needs a contiguous tensor")
        rows, cols = target.shape
        rows_per_launch = max(1, _MAX_LAUNCH_ELEMS // cols)
        seed = _seed_tensor(seed, target.device)
        mode = 0 if isinstance(std, float) else (1 if std.dim() == 0 else 2)
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            for chunk, start in enumerate(range(0, rows, rows_per_launch)):
                stop = min(rows, start + rows_per_launch)
                part = target[start:stop]
                n = part.numel()
                std_arg = std[start:stop] if mode == 2 else (std if mode == 1 else part)
                grid = (triton.cdiv(n, 4 * BLOCK),)
                _noisy_update_kernel[grid](
                    part,
                    std_arg,
                    seed,
                    n,
                    cols,
                    chunk,
                    0,
                    std if mode == 0 else 1.0,
                    STD=mode,
                    STORE=0,
                    BLOCK=BLOCK,
                    MATH=self.math,
                    num_warps=NUM_WARPS,
                )

    # ----- windows of a call: the streamed host-table engine draws through these ----------
    @staticmethod
    def launch_rows(cols: int) -> int:
        """Rows per launch of `_add_gaussian` on a table with `cols` columns."""
        return max(1, _MAX_LAUNCH_ELEMS // cols)

    @staticmethod
    def align_rows(cols: int) -> int:
        """A window must start on a program's first element (4 * BLOCK): a multiple of
        this many rows from its launch's start."""
        return 4 * BLOCK // math.gcd(cols, 4 * BLOCK)

    def draw_window(
        self, out: torch.Tensor, std: Std, seed: SeedArg, *, first_row: int, unit: bool = False
    ) -> None:
        """out = the noise `add_noise` on a whole table would add to its rows
        first_row .. first_row + len(out) (same key, same Philox counters): the window must
        start at a multiple of `align_rows` from its launch's start and stay in that launch.
        `std`: a float, a 0-dim tensor or one std per row of the window, on out's device."""
        rows, cols = out.shape
        per_launch = self.launch_rows(cols)
        chunk, local = divmod(first_row, per_launch)
        if local % self.align_rows(cols) or local + rows > per_launch:
            raise ValueError(f"window at row {first_row} is not aligned to a program of its launch")
        per_row = isinstance(std, torch.Tensor) and std.dim() == 1
        if unit:
            if per_row:
                out.copy_(std.view(-1, 1).expand_as(out))
            else:
                out.fill_(float(std))
            return
        if isinstance(std, float):
            std = abs(std)
        elif per_row:
            std = std.abs()
        mode = 0 if isinstance(std, float) else (2 if per_row else 1)
        n = out.numel()
        _noisy_update_kernel[(triton.cdiv(n, 4 * BLOCK),)](
            out,
            std if mode else out,
            _seed_tensor(seed, out.device),
            n,
            cols,
            chunk,
            local * cols // 4,
            std if mode == 0 else 1.0,
            STD=mode,
            STORE=1,
            BLOCK=BLOCK,
            MATH=self.math,
            num_warps=NUM_WARPS,
        )

    def add_noise_rows(
        self,
        table: torch.Tensor,
        rows: torch.Tensor,
        std: torch.Tensor,
        seed,
        timer: StageTimer,
        unit: bool = False,
    ) -> None:
        """One pass over the rows: draw in registers, add to the table row in place (no
        [slots, D] buffer, no index_add); the base class's draws, equal up to rounding (FMA)."""
        if table.device.type != "cuda" or not table.is_contiguous():
            super().add_noise_rows(table, rows, std, seed, timer, unit)
            return
        seed = _seed_tensor(Scalar.resolve(seed, use_tensor=True), table.device)
        std = std if unit else std.abs()
        cols = table.shape[1]
        slots_per_launch = max(1, _MAX_LAUNCH_ELEMS // cols)
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            for chunk, start in enumerate(range(0, rows.numel(), slots_per_launch)):
                stop = min(rows.numel(), start + slots_per_launch)
                n = (stop - start) * cols
                _noisy_rows_kernel[(triton.cdiv(n, 4 * BLOCK),)](
                    table,
                    rows[start:stop],
                    std[start:stop],
                    seed,
                    n,
                    cols,
                    chunk,
                    UNIT=unit,
                    BLOCK=BLOCK,
                    MATH=self.math,
                    num_warps=NUM_WARPS,
                )

    def draw_only(self, device: torch.device) -> tuple[Callable[[], None], int]:
        """A launch of the engine's draws with no memory traffic, and the normals it makes
        (the arithmetic bound: `bench noise` times it)."""
        progs, iters = 64 * torch.cuda.get_device_properties(device).multi_processor_count, 64
        out = torch.empty(progs * BLOCK, device=device)
        seed = _seed_tensor(1, device)

        def launch() -> None:
            _draw_only_kernel[(progs,)](out, seed, iters, BLOCK=BLOCK, MATH=self.math)

        return launch, progs * iters * BLOCK * 4

    def describe(self, device: torch.device) -> dict[str, str]:
        return {
            "engine": "triton-fused",
            "rng": "Philox4x32-10 (Triton), Box-Muller, " + _MATH_NAMES[self.math],
            "key_bits": "64-bit key = the call's seed; counter (group, launch chunk, 0, 0)",
        }
