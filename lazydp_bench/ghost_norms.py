"""Per-example squared gradient norms of Linear layers without materializing them (ghost
norms): for layer input a_i and output gradient d_i, ||grad W_i||^2 + ||grad b_i||^2 =
||a_i||^2 ||d_i||^2 + ||d_i||^2.

In torch that is seven small kernels per layer (two squares, two row sums, a multiply,
two adds), each on a [B, width] block that takes the GPU microseconds: on the GPU the
clipping of a DLRM is launch-bound. On a GPU with Triton one kernel per layer reads a_i
and d_i once, one program per example, and accumulates into `sq`.
"""

from __future__ import annotations

import torch

try:  # Triton exists only where CUDA does
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - CPU-only machines
    AVAILABLE = False

BLOCK = 256

if AVAILABLE:

    @triton.jit
    def _row_sq(ptr, row, stride, cols, BLOCK: tl.constexpr):
        acc = tl.zeros((BLOCK,), tl.float32)
        for start in range(0, cols, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(ptr + row * stride + offs, mask=offs < cols, other=0.0).to(tl.float32)
            acc += x * x
        return tl.sum(acc, 0)

    @triton.jit
    def _ghost_layer_kernel(
        a_ptr, d_ptr, sq_ptr, a_cols, d_cols, a_stride, d_stride, BLOCK: tl.constexpr
    ):
        row = tl.program_id(0).to(tl.int64)
        a2 = _row_sq(a_ptr, row, a_stride, a_cols, BLOCK)
        d2 = _row_sq(d_ptr, row, d_stride, d_cols, BLOCK)
        ptr = sq_ptr + row
        tl.store(ptr, tl.load(ptr) + (a2 * d2 + d2).to(sq_ptr.dtype.element_ty))


def _fused(a: torch.Tensor, d: torch.Tensor, sq: torch.Tensor) -> bool:
    return (
        AVAILABLE
        and sq.device.type == "cuda"
        and a.dtype == d.dtype == sq.dtype == torch.float32
        and a.stride(1) == 1
        and d.stride(1) == 1
        and sq.is_contiguous()
    )


def add_linear_sq_norms(sq: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> None:
    """sq[i] += ||a_i||^2 ||d_i||^2 + ||d_i||^2 for a [B, in], d [B, out], sq [B].

    fp32 on a GPU: one Triton kernel (fp32 accumulation, as torch's reductions); anything
    else (fp64 in tests and verify, the host): torch."""
    if _fused(a, d, sq):
        _ghost_layer_kernel[(a.shape[0],)](
            a, d, sq, a.shape[1], d.shape[1], a.stride(0), d.stride(0), BLOCK=BLOCK, num_warps=4
        )
        return
    d_sq = d.square().sum(1)
    sq += a.square().sum(1) * d_sq + d_sq
