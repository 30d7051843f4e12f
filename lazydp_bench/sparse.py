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


class SparseOps:
    """Sparse coalescing and row updates, picked per device.

    On a GPU the sync-free functions above are used. On the host there is no device to
    wait for, so exact `torch.unique` is free, but PyTorch's CPU `index_add_` runs on one
    core; here the coalesced rows (unique, sorted) are split into contiguous parts that a
    thread pool updates in parallel (torch releases the GIL), which is race-free because
    the parts touch disjoint rows.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._pool = None

    def _map(self, fn, parts: int) -> None:
        if parts == 1:
            fn(0)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        list(self._pool.map(fn, range(parts)))

    def _parts(self, n: int) -> list[int]:
        parts = max(1, min(self.threads, n // 4096))
        return [n * k // parts for k in range(parts + 1)]

    def unique(self, rows: torch.Tensor) -> SparseRows:
        if rows.device.type != "cpu":
            return unique_rows(rows)[0]
        uniq = torch.unique(rows.reshape(-1))
        return SparseRows(uniq, None, torch.ones_like(uniq, dtype=torch.bool))

    def coalesce(self, rows: torch.Tensor, values: torch.Tensor) -> SparseRows:
        if rows.device.type != "cpu":
            return coalesce(rows, values)
        uniq, inverse = torch.unique(rows.reshape(-1), return_inverse=True)
        order = torch.argsort(inverse)
        slots = inverse[order]
        summed = torch.zeros((uniq.numel(), values.shape[1]), dtype=values.dtype)
        cuts = torch.searchsorted(slots, torch.tensor(self._parts(uniq.numel()))).tolist()

        def add(k: int) -> None:
            lo, hi = cuts[k], cuts[k + 1]
            summed.index_add_(0, slots[lo:hi], values[order[lo:hi]])

        self._map(add, len(cuts) - 1)
        return SparseRows(uniq, summed, torch.ones_like(uniq, dtype=torch.bool))

    def bag_row_gradients(self, rows: torch.Tensor, pooled_grad: torch.Tensor) -> SparseRows:
        """Coalesced row gradients on the table's device (where `rows` live).

        In hybrid placement the pooled gradient is still on the GPU: the bag rows go there
        (small), the GPU coalesces exactly, and only unique rows cross PCIe. The copy back
        synchronizes, as the transfer of the gradient to the host had to anyway.
        """
        if rows.device.type == "cpu" and pooled_grad.device.type == "cuda":
            on_gpu = rows.to(pooled_grad.device, non_blocking=True).reshape(-1)
            dim = pooled_grad.shape[-1]
            values = pooled_grad.unsqueeze(2).expand(*rows.shape, dim).reshape(-1, dim)
            uniq, inverse = torch.unique(on_gpu, return_inverse=True)
            summed = torch.zeros((uniq.numel(), dim), dtype=values.dtype, device=values.device)
            summed.index_add_(0, inverse, values)
            ones = torch.ones(uniq.numel(), dtype=torch.bool)
            return SparseRows(uniq.cpu(), summed.cpu(), ones)
        pooled_grad = pooled_grad.to(rows.device)
        if rows.device.type != "cpu":
            return bag_row_gradients(rows, pooled_grad)
        dim = pooled_grad.shape[-1]
        values = pooled_grad.unsqueeze(2).expand(*rows.shape, dim).reshape(-1, dim)
        return self.coalesce(rows.reshape(-1), values)

    def merge(
        self, grads: SparseRows, grad_scale: float, rows: torch.Tensor, values: torch.Tensor
    ) -> SparseRows:
        """grad_scale * grads plus (rows, values), as one update with unique rows.

        On the device: one padded coalesce of both. On the host both inputs are already
        unique and `grads.rows` is sorted, so a binary search finds the shared rows: their
        values are added in place and the rest appended, with no second sort of 2N rows.
        """
        if grads.rows.device.type != "cpu":
            return coalesce(
                torch.cat([grads.rows, rows]), torch.cat([grads.values * grad_scale, values])
            )
        summed = grads.values * grad_scale
        pos = torch.searchsorted(grads.rows, rows).clamp_(max=grads.rows.numel() - 1)
        shared = grads.rows[pos] == rows
        summed.index_add_(0, pos[shared], values[shared])
        fresh = ~shared
        out_rows = torch.cat([grads.rows, rows[fresh]])
        return SparseRows(
            out_rows,
            torch.cat([summed, values[fresh]]),
            torch.ones_like(out_rows, dtype=torch.bool),
        )

    def add_rows(self, table: torch.Tensor, update: SparseRows, alpha: float = 1.0) -> None:
        """table[rows] += alpha * values (rows coalesced; device padding adds zeros)."""
        if table.device.type != "cpu":
            table.index_add_(0, update.rows, update.values, alpha=alpha)
            return
        cuts = self._parts(update.rows.numel())

        def add(k: int) -> None:
            lo, hi = cuts[k], cuts[k + 1]
            table.index_add_(0, update.rows[lo:hi], update.values[lo:hi], alpha=alpha)

        self._map(add, len(cuts) - 1)
