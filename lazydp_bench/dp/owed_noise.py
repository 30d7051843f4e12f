"""LazyDP's per-step history-table work, fused: what each input-queue row owes, and HT
updated to say it has been paid.

For the queue's unique rows r (padded slots: `valid` False) and the next step t + 1:
    last = HT[r];  HT[r] = t + 1;
    std[r] = base * sqrt(S2[t + 1] - S2[last])   (ANS: one draw per element)
    std[r] = base * (S1[t + 1] - S1[last])        (unit mode: the draws are all 1)
with S1/S2 the prefix sums of lr and lr^2 (fp64) and base = sigma C / B; padded slots owe 0.

In torch that is a dozen kernels on [N]-sized tensors (two gathers, a scatter, casts,
arithmetic), each microseconds of launch on a GPU step of ~2 ms; with Triton it is one.
Only valid slots write HT: a padded slot repeats a valid slot's row, so writing it too
could race with that slot's read.
"""

from __future__ import annotations

import torch

try:  # Triton exists only where CUDA does
    import triton
    import triton.language as tl

    AVAILABLE = True
except ImportError:  # pragma: no cover - CPU-only machines
    AVAILABLE = False

BLOCK = 1024

if AVAILABLE:

    @triton.jit
    def _owed_std_kernel(
        hist_ptr,
        rows_ptr,
        valid_ptr,
        upto_ptr,
        prefix_ptr,
        std_ptr,
        n,
        base,
        UNIT: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = (i < n) & (tl.load(valid_ptr + i, mask=i < n, other=0) != 0)
        row = tl.load(rows_ptr + i, mask=live, other=0).to(tl.int64)
        upto = tl.load(upto_ptr)
        last = tl.load(hist_ptr + row, mask=live, other=0).to(tl.int64)
        tl.store(hist_ptr + row, upto.to(hist_ptr.dtype.element_ty), mask=live)
        owed = tl.load(prefix_ptr + upto) - tl.load(prefix_ptr + last, mask=live, other=0.0)
        if not UNIT:
            owed = tl.sqrt(tl.maximum(owed, 0.0))
        std = tl.where(live, owed * base, 0.0)
        tl.store(std_ptr + i, std.to(std_ptr.dtype.element_ty), mask=i < n)


def owed_std(
    history: torch.Tensor,
    rows: torch.Tensor,
    valid: torch.Tensor,
    upto: torch.Tensor,
    prefix: torch.Tensor,
    base: float,
    unit: bool,
    dtype: torch.dtype,
    fused: bool = True,
) -> torch.Tensor:
    """Per-slot std (dtype) of the one draw each queue row owes for steps HT[r]..upto-1,
    and HT[rows] = upto. `upto` is a 0-dim int64 device tensor (a graph replay reads
    it); `prefix` is S1 (unit) or S2, fp64, on the history's device. `fused=False` takes
    the torch path (the host's, and the GPU self-check's reference)."""
    if fused and AVAILABLE and history.device.type == "cuda":
        n = rows.numel()
        std = torch.empty(n, dtype=dtype, device=history.device)
        _owed_std_kernel[(triton.cdiv(n, BLOCK),)](
            history,
            rows,
            valid.view(torch.uint8),
            upto,
            prefix,
            std,
            n,
            base,
            UNIT=unit,
            BLOCK=BLOCK,
            num_warps=4,
        )
        return std
    last = history.index_select(0, rows)
    history.scatter_(0, rows, upto.to(history.dtype).expand_as(rows))
    return (owed_sum(prefix, last, upto, unit) * base).to(dtype) * valid


def owed_sum(prefix: torch.Tensor, last: torch.Tensor, upto: torch.Tensor, unit: bool):
    """sum of lr_s (unit) or sqrt(sum of lr_s^2) over steps last..upto-1, per row (fp64)."""
    owed = prefix.index_select(0, upto.view(1)) - prefix.index_select(0, last.long())
    return owed if unit else owed.clamp_(min=0).sqrt_()
