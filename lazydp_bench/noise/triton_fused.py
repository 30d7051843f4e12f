"""GPU `fused` engine: one Triton kernel draws Philox normals in registers and updates the
table in place, a single read+write pass (the memory roofline: 2 x bytes / bandwidth).

Each program handles 4 x BLOCK consecutive elements with one `randn4x` call; launches are
split into row-aligned chunks of at most 2**30 elements so int32 offsets never overflow,
each chunk keyed by seed + chunk (Philox keys: independent streams). The seed, and a
scalar std, are read from device memory, so a captured CUDA graph draws step t's noise on
every replay instead of the noise of the step it was captured in.
"""

from __future__ import annotations

import torch

from lazydp_bench.noise.base import DenseNoiseEngine, SeedArg, Std
from lazydp_bench.profiling import StageTimer
from lazydp_bench.stages import Stage
from lazydp_bench.step_scalars import Scalar

try:  # Triton exists only where CUDA does; the engine registry checks `AVAILABLE`.
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - CPU-only machines
    AVAILABLE = False

_MAX_LAUNCH_ELEMS = 1 << 30
BLOCK = 1024
NUM_WARPS = 8

if AVAILABLE:

    @triton.jit
    def _noisy_update_kernel(
        w_ptr,
        std_ptr,
        seed_ptr,
        n_elements,
        cols,
        chunk,
        scale,
        STD: tl.constexpr,  # 0: scale, 1: scale * std_ptr[0], 2: scale * std_ptr[row]
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        seed = tl.load(seed_ptr) + chunk
        offs = tl.arange(0, BLOCK)
        i0 = pid * (4 * BLOCK) + offs
        i1 = i0 + BLOCK
        i2 = i1 + BLOCK
        i3 = i2 + BLOCK
        m0 = i0 < n_elements
        m1 = i1 < n_elements
        m2 = i2 < n_elements
        m3 = i3 < n_elements
        w0 = tl.load(w_ptr + i0, mask=m0)
        w1 = tl.load(w_ptr + i1, mask=m1)
        w2 = tl.load(w_ptr + i2, mask=m2)
        w3 = tl.load(w_ptr + i3, mask=m3)
        r0, r1, r2, r3 = tl.randn4x(seed, pid * BLOCK + offs)
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
    ):
        """`_noisy_update_kernel`'s element layout and Philox counters over a virtual
        [slots, cols] block whose rows live at table rows rows_ptr[slot]."""
        pid = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        i0 = pid * (4 * BLOCK) + offs
        if UNIT:
            r0 = tl.full((BLOCK,), 1.0, tl.float32)
            r1 = r0
            r2 = r0
            r3 = r0
        else:
            r0, r1, r2, r3 = tl.randn4x(tl.load(seed_ptr) + chunk, pid * BLOCK + offs)
        _add_to_rows(w_ptr, rows_ptr, std_ptr, i0, r0, n_elements, cols)
        _add_to_rows(w_ptr, rows_ptr, std_ptr, i0 + BLOCK, r1, n_elements, cols)
        _add_to_rows(w_ptr, rows_ptr, std_ptr, i0 + 2 * BLOCK, r2, n_elements, cols)
        _add_to_rows(w_ptr, rows_ptr, std_ptr, i0 + 3 * BLOCK, r3, n_elements, cols)


def _seed_tensor(seed: SeedArg, device: torch.device) -> torch.Tensor:
    """The kernels read their seed from device memory (graph replays update it there)."""
    if isinstance(seed, torch.Tensor):
        return seed
    return torch.full((), seed, dtype=torch.int64, device=device)


class TritonFusedEngine(DenseNoiseEngine):
    name = "triton-fused"
    reads_device_scalars = True

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
                    std if mode == 0 else 1.0,
                    STD=mode,
                    BLOCK=BLOCK,
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
                    num_warps=NUM_WARPS,
                )

    def describe(self, device: torch.device) -> dict[str, str]:
        return {
            "engine": "triton-fused",
            "rng": "Triton Philox4x32 randn4x, key seed + chunk per 2^30-element launch",
        }
