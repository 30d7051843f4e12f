"""The per-example clipping arithmetic, fused into few GPU kernels.

On the GPU the clipping of a DLRM is launch-bound: its tensors are [B, width] blocks that
take the GPU microseconds, and torch spends several kernels on each step of the math.
Here, with Triton (fp32 on a GPU), each function is one kernel; anywhere else (fp64 in
tests and verify, the host) it is the torch code written next to it, which the GPU
self-check compares the kernels with.

- `add_linear_sq_norms`: ghost norm of a Linear layer, ||a_i||^2 ||d_i||^2 + ||d_i||^2
  (seven torch kernels -> one); `add_all_linear_sq_norms` does every layer of the model
  in one launch (up to `LAYERS_PER_LAUNCH` layers; a program per example), adding the
  layers in the same order (on the H200, 8 launches for the MLPerf DLRM took 39 us per
  step of batch 2048, one launch 23 us);
- `finish_clip`: adds the embedding bags' norm, turns the norms into clip factors and,
  for book-keeping, scales the pooled gradient by them, in one pass over the pooled
  gradient (torch: square, two sums, add, sqrt, add, divide, clamp, multiply);
- `scale_rows`: c_i * x_i. torch's row-broadcast multiply takes the non-vectorized
  elementwise path; this kernel loads contiguous row blocks. `scale_rows_many` scales
  every layer's tensor in one launch.
"""

from __future__ import annotations

import torch

try:  # Triton exists only where CUDA does
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - CPU-only machines
    AVAILABLE = False

EPS = 1e-6  # c_i = min(1, C / (||g_i|| + EPS))
BLOCK = 256
SCALE_ROWS, SCALE_COLS = 16, 128
LAYERS_PER_LAUNCH = 8

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

    @triton.jit
    def _layer_sq(a_ptr, d_ptr, row, a_cols, d_cols, a_stride, d_stride, BLOCK: tl.constexpr):
        a2 = _row_sq(a_ptr, row, a_stride, a_cols, BLOCK)
        d2 = _row_sq(d_ptr, row, d_stride, d_cols, BLOCK)
        return a2 * d2 + d2

    @triton.jit
    def _ghost_layers_kernel(
        sq_ptr,
        a0, d0, ac0, dc0, as0, ds0,
        a1, d1, ac1, dc1, as1, ds1,
        a2, d2, ac2, dc2, as2, ds2,
        a3, d3, ac3, dc3, as3, ds3,
        a4, d4, ac4, dc4, as4, ds4,
        a5, d5, ac5, dc5, as5, ds5,
        a6, d6, ac6, dc6, as6, ds6,
        a7, d7, ac7, dc7, as7, ds7,
        LAYERS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """`_ghost_layer_kernel` for LAYERS layers in one program per row, the layers
        added in order."""
        row = tl.program_id(0).to(tl.int64)
        ty = sq_ptr.dtype.element_ty
        acc = tl.load(sq_ptr + row)
        acc += _layer_sq(a0, d0, row, ac0, dc0, as0, ds0, BLOCK).to(ty)
        if LAYERS > 1:
            acc += _layer_sq(a1, d1, row, ac1, dc1, as1, ds1, BLOCK).to(ty)
        if LAYERS > 2:
            acc += _layer_sq(a2, d2, row, ac2, dc2, as2, ds2, BLOCK).to(ty)
        if LAYERS > 3:
            acc += _layer_sq(a3, d3, row, ac3, dc3, as3, ds3, BLOCK).to(ty)
        if LAYERS > 4:
            acc += _layer_sq(a4, d4, row, ac4, dc4, as4, ds4, BLOCK).to(ty)
        if LAYERS > 5:
            acc += _layer_sq(a5, d5, row, ac5, dc5, as5, ds5, BLOCK).to(ty)
        if LAYERS > 6:
            acc += _layer_sq(a6, d6, row, ac6, dc6, as6, ds6, BLOCK).to(ty)
        if LAYERS > 7:
            acc += _layer_sq(a7, d7, row, ac7, dc7, as7, ds7, BLOCK).to(ty)
        tl.store(sq_ptr + row, acc)

    @triton.jit
    def _finish_kernel(
        sq_ptr,
        g_ptr,
        c_ptr,
        out_ptr,
        cols,
        g_stride,
        clip_norm,
        eps,
        NORM: tl.constexpr,
        SCALE: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        sq = tl.load(sq_ptr + row)
        if NORM:
            sq += _row_sq(g_ptr, row, g_stride, cols, BLOCK)
            tl.store(sq_ptr + row, sq)
        c = tl.minimum(clip_norm / (tl.sqrt(sq) + eps), 1.0)
        tl.store(c_ptr + row, c)
        if SCALE:
            for start in range(0, cols, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                mask = offs < cols
                x = tl.load(g_ptr + row * g_stride + offs, mask=mask)
                tl.store(out_ptr + row * cols + offs, x * c, mask=mask)

    @triton.jit
    def _scale_rows_kernel(
        x_ptr, c_ptr, out_ptr, rows, cols, stride, BR: tl.constexpr, BC: tl.constexpr
    ):
        _scale_block(x_ptr, c_ptr, out_ptr, rows, cols, stride, BR, BC)


if AVAILABLE:

    @triton.jit
    def _scale_block(x_ptr, c_ptr, out_ptr, rows, cols, stride, BR: tl.constexpr, BC: tl.constexpr):
        r = tl.program_id(0) * BR + tl.arange(0, BR)
        k = tl.program_id(1) * BC + tl.arange(0, BC)
        rmask = r < rows
        mask = rmask[:, None] & (k[None, :] < cols)
        c = tl.load(c_ptr + r, mask=rmask, other=0.0)
        x = tl.load(x_ptr + r[:, None].to(tl.int64) * stride + k[None, :], mask=mask)
        tl.store(out_ptr + r[:, None].to(tl.int64) * cols + k[None, :], x * c[:, None], mask=mask)

    @triton.jit
    def _scale_many_kernel(
        c_ptr, rows,
        x0, o0, n0, s0, x1, o1, n1, s1, x2, o2, n2, s2, x3, o3, n3, s3,
        x4, o4, n4, s4, x5, o5, n5, s5, x6, o6, n6, s6, x7, o7, n7, s7,
        BR: tl.constexpr,
        BC: tl.constexpr,
    ):  # fmt: skip
        """`_scale_rows_kernel` of up to 8 tensors, one per grid z index (a column block
        past a tensor's width does nothing)."""
        z = tl.program_id(2)
        if z == 0:
            _scale_block(x0, c_ptr, o0, rows, n0, s0, BR, BC)
        elif z == 1:
            _scale_block(x1, c_ptr, o1, rows, n1, s1, BR, BC)
        elif z == 2:
            _scale_block(x2, c_ptr, o2, rows, n2, s2, BR, BC)
        elif z == 3:
            _scale_block(x3, c_ptr, o3, rows, n3, s3, BR, BC)
        elif z == 4:
            _scale_block(x4, c_ptr, o4, rows, n4, s4, BR, BC)
        elif z == 5:
            _scale_block(x5, c_ptr, o5, rows, n5, s5, BR, BC)
        elif z == 6:
            _scale_block(x6, c_ptr, o6, rows, n6, s6, BR, BC)
        elif z == 7:
            _scale_block(x7, c_ptr, o7, rows, n7, s7, BR, BC)


def _on_triton(*tensors: torch.Tensor) -> bool:
    """fp32 CUDA tensors whose rows are contiguous (what the kernels index)."""
    return AVAILABLE and all(
        t.device.type == "cuda" and t.dtype == torch.float32 and t.stride(-1) == 1 for t in tensors
    )


def clip_factors(sq_norms: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """c_i = min(1, C / (||g_i|| + EPS)) from squared norms (torch; `finish_clip` fuses it)."""
    return (clip_norm / (sq_norms.sqrt() + EPS)).clamp(max=1.0)


def add_linear_sq_norms(sq: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> None:
    """sq[i] += ||a_i||^2 ||d_i||^2 + ||d_i||^2 for a [B, in], d [B, out], sq [B]
    (fp32 accumulation on the GPU, as torch's reductions)."""
    if _on_triton(sq, a, d) and sq.is_contiguous():
        _ghost_layer_kernel[(a.shape[0],)](
            a, d, sq, a.shape[1], d.shape[1], a.stride(0), d.stride(0), BLOCK=BLOCK, num_warps=4
        )
        return
    d_sq = d.square().sum(1)
    sq += a.square().sum(1) * d_sq + d_sq


def add_all_linear_sq_norms(
    sq: torch.Tensor, inputs: list[torch.Tensor], deltas: list[torch.Tensor]
) -> None:
    """`add_linear_sq_norms` of every (a, d) pair, in order, in as few launches as
    `LAYERS_PER_LAUNCH` allows (the same fp32 sums; the compiler may contract their
    multiply-adds differently from the one-layer kernel, so the last bit may differ)."""
    pairs = list(zip(inputs, deltas, strict=True))
    if not all(_on_triton(sq, a, d) for a, d in pairs) or not sq.is_contiguous():
        for a, d in pairs:
            add_linear_sq_norms(sq, a, d)
        return
    for start in range(0, len(pairs), LAYERS_PER_LAUNCH):
        group = pairs[start : start + LAYERS_PER_LAUNCH]
        args: list = []
        for a, d in group + [group[0]] * (LAYERS_PER_LAUNCH - len(group)):  # unused slots
            args += [a, d, a.shape[1], d.shape[1], a.stride(0), d.stride(0)]
        _ghost_layers_kernel[(sq.shape[0],)](sq, *args, LAYERS=len(group), BLOCK=BLOCK, num_warps=4)


def finish_on_triton(sq: torch.Tensor, d_pooled: torch.Tensor) -> bool:
    """Whether `finish_clip` runs as one kernel: fp32 CUDA, each example's block contiguous."""
    return _on_triton(sq, d_pooled) and d_pooled[0].is_contiguous() and sq.is_contiguous()


def finish_clip(
    sq: torch.Tensor,
    d_pooled: torch.Tensor,
    multiplicity: torch.Tensor | None,
    clip_norm: float,
    scale_pooled: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Complete the squared norms with the bags' part, sq[i] += sum_t ||d_it||^2 * m_it
    (m: sum of squared row multiplicities per bag; None when pooling is 1), and return the
    clip factors c and, if `scale_pooled`, c_i * d_pooled_i (the book-keeping pooled
    gradient). `sq` is updated in place. Each example's block d_pooled[i] must be
    contiguous for the kernel, not the whole tensor: the DLRM's pooled gradient is a slice
    of the interaction's input gradient ([B, T + 1, D] -> [B, T, D]); the torch path takes
    four passes over it (square, two sums, scale: 59 us per step on the H200 at batch
    2048, the kernel 16 us)."""
    triton_path = finish_on_triton(sq, d_pooled)
    if multiplicity is not None:  # per-bag weights: torch adds this part
        sq.add_((d_pooled.square().sum(-1) * multiplicity).sum(-1))
    if triton_path:
        c = torch.empty_like(sq)
        shape, dtype, device = d_pooled.shape, d_pooled.dtype, d_pooled.device
        out = torch.empty(shape, dtype=dtype, device=device) if scale_pooled else d_pooled
        _finish_kernel[(d_pooled.shape[0],)](
            sq,
            d_pooled,
            c,
            out,
            d_pooled[0].numel(),
            d_pooled.stride(0),
            float(clip_norm),
            EPS,
            NORM=multiplicity is None,
            SCALE=scale_pooled,
            BLOCK=1024,
            num_warps=4,
        )
        return c, out if scale_pooled else None
    if multiplicity is None:
        sq.add_(d_pooled.square().sum(-1).sum(-1))
    c = clip_factors(sq, clip_norm)
    return c, d_pooled * c.view(-1, *([1] * (d_pooled.dim() - 1))) if scale_pooled else None


def scale_rows_many(xs: list[torch.Tensor], c: torch.Tensor) -> list[torch.Tensor]:
    """`scale_rows` of each tensor ([B, n_k], c [B]) in one launch per 8 tensors (on the
    H200, 8 launches for the MLPerf DLRM's layers took 21 us per step of batch 2048, one
    launch 13 us); one product per element, so bitwise `scale_rows`."""
    if not all(_on_triton(x, c) and x.dim() == 2 for x in xs) or not c.is_contiguous():
        return [scale_rows(x, c) for x in xs]
    outs = [torch.empty(x.shape, dtype=x.dtype, device=x.device) for x in xs]
    rows = c.shape[0]
    for start in range(0, len(xs), LAYERS_PER_LAUNCH):
        group = list(zip(xs[start : start + LAYERS_PER_LAUNCH], outs[start:], strict=False))
        args: list = []
        for x, out in group + [group[0]] * (LAYERS_PER_LAUNCH - len(group)):
            args += [x, out, x.shape[1], x.stride(0)]
        widest = max(x.shape[1] for x, _ in group)
        grid = (triton.cdiv(rows, SCALE_ROWS), triton.cdiv(widest, SCALE_COLS), len(group))
        _scale_many_kernel[grid](c, rows, *args, BR=SCALE_ROWS, BC=SCALE_COLS, num_warps=4)
    return outs


def scale_rows(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """c_i * x_i for x [B, n], c [B], as a new contiguous tensor."""
    if _on_triton(x, c) and x.dim() == 2 and c.is_contiguous():
        rows, cols = x.shape
        out = torch.empty((rows, cols), dtype=x.dtype, device=x.device)
        grid = (triton.cdiv(rows, SCALE_ROWS), triton.cdiv(cols, SCALE_COLS))
        _scale_rows_kernel[grid](
            x, c, out, rows, cols, x.stride(0), BR=SCALE_ROWS, BC=SCALE_COLS, num_warps=4
        )
        return out
    return x * c.view(-1, 1)
