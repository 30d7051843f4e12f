"""Sync-free coalescing of sparse row updates.

`torch.unique` must copy its output size to the host (a device sync). Here the output
keeps the input's length N: the first `count` slots hold the sorted unique rows, the
rest repeat the last row with zero values (and `valid` = False), so a following
`index_add_` adds exact zeros there. No step ever waits for the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparseRows:
    rows: torch.Tensor  # [N] int64, unique among valid slots, padded with the last row
    values: torch.Tensor | None  # [N, D], zero in padded slots
    valid: torch.Tensor  # [N] bool


def unique_rows(rows: torch.Tensor) -> tuple[SparseRows, torch.Tensor]:
    """Sorted unique rows (padded) and, for each input position, its slot in the output."""
    flat = rows.reshape(-1)
    n = flat.numel()
    sorted_rows, perm = torch.sort(flat)
    is_new = torch.ones(n, dtype=torch.bool, device=flat.device)
    is_new[1:] = sorted_rows[1:] != sorted_rows[:-1]
    seg_sorted = torch.cumsum(is_new, 0) - 1
    uniq = sorted_rows[-1:].expand(n).clone()
    uniq.scatter_(0, seg_sorted, sorted_rows)
    valid = torch.arange(n, device=flat.device) <= seg_sorted[-1]
    slot = torch.empty_like(seg_sorted)
    slot[perm] = seg_sorted
    return SparseRows(rows=uniq, values=None, valid=valid), slot


def coalesce(rows: torch.Tensor, values: torch.Tensor) -> SparseRows:
    """Sum the values of duplicate rows: rows [N], values [N, D] -> unique rows, summed values."""
    uniq, slot = unique_rows(rows)
    summed = torch.zeros_like(values)
    summed.index_add_(0, slot, values)
    return SparseRows(rows=uniq.rows, values=summed, valid=uniq.valid)


def bag_row_gradients(rows: torch.Tensor, pooled_grad: torch.Tensor) -> SparseRows:
    """Row gradients of sum-pooled bags, coalesced.

    rows [B, T, L] global ids, pooled_grad [B, T, D] on the same device: each row of a bag
    receives its bag's pooled gradient, once per occurrence.
    """
    _pooling, dim = rows.shape[-1], pooled_grad.shape[-1]
    values = pooled_grad.unsqueeze(2).expand(*rows.shape, dim).reshape(-1, dim)
    return coalesce(rows.reshape(-1), values)
