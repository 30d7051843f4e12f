"""Sync-free coalescing of sparse row updates.

`torch.unique` must copy its output size to the host (a device sync). Here the output
keeps the input's length N: the first `count` slots hold the sorted unique rows, the
rest (`valid` = False) hold the input's duplicate rows with zero values, so a following
`index_add_` adds exact zeros there, spread over rows that the update touches anyway
(padding with one repeated row made every padded slot's atomic adds collide on that
row). No step ever waits for the host.

Row ids below 2**31 are sorted as 32-bit keys (`narrow`): half the radix-sort passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lazydp_bench.runtime.host_rows import HostRowAdder
from lazydp_bench.runtime.host_work import HostWork
from lazydp_bench.runtime.step_scalars import Scalar

# At most this many threads update a host table's rows at once (`apply_rows`; host
# coalescing is not capped): the updates are bound by host memory bandwidth, which fewer
# threads already reach. Measured on the H200's 16-core host (53,000 rows of 128 float32
# into a 9.6 GB table, host_rows.c): 2.86 ms on 1 thread, 0.88 on 4, 0.86 on 8, 1.23 on
# 13, 1.55 on 16; a copy of 1 GiB reached 71 GB/s.
ROW_PARTS = 8


@dataclass(frozen=True)
class SparseRows:
    rows: torch.Tensor  # [N] int64, unique among valid slots, padded with duplicate rows
    values: torch.Tensor | None  # [N, D], zero in padded slots
    valid: torch.Tensor  # [N] bool


def unique_rows(rows: torch.Tensor, narrow: bool = False) -> tuple[SparseRows, torch.Tensor]:
    """Sorted unique rows (padded) and, for each input position, its slot in the output.
    `narrow`: every id is below 2**31, so the sort may use 32-bit keys."""
    flat = rows.reshape(-1)
    n = flat.numel()
    sorted_rows, perm = torch.sort(flat.to(torch.int32) if narrow else flat)
    sorted_rows = sorted_rows.to(flat.dtype)
    is_new = torch.ones(n, dtype=torch.bool, device=flat.device)
    is_new[1:] = sorted_rows[1:] != sorted_rows[:-1]
    seg_sorted = torch.cumsum(is_new, 0) - 1
    uniq = sorted_rows.clone()  # slots past the unique count keep duplicate rows
    uniq.scatter_(0, seg_sorted, sorted_rows)
    valid = torch.arange(n, device=flat.device) <= seg_sorted[-1]
    slot = torch.empty_like(seg_sorted)
    slot[perm] = seg_sorted
    return SparseRows(rows=uniq, values=None, valid=valid), slot


def coalesce(
    rows: torch.Tensor,
    values: torch.Tensor,
    narrow: bool = False,
    known: tuple[SparseRows, torch.Tensor] | None = None,
) -> SparseRows:
    """Sum the values of duplicate rows: rows [N], values [N, D] -> unique rows, summed values.
    `known`: `unique_rows(rows)` already computed (no second sort)."""
    uniq, slot = known if known is not None else unique_rows(rows, narrow)
    summed = torch.zeros_like(values)
    summed.index_add_(0, slot, values)
    return SparseRows(rows=uniq.rows, values=summed, valid=uniq.valid)


def bag_row_gradients(
    rows: torch.Tensor,
    pooled_grad: torch.Tensor,
    narrow: bool = False,
    known: tuple[SparseRows, torch.Tensor] | None = None,
) -> SparseRows:
    """Row gradients of sum-pooled bags, coalesced.

    rows [B, T, L] global ids, pooled_grad [B, T, D] on the same device: each row of a bag
    receives its bag's pooled gradient, once per occurrence.
    """
    _pooling, dim = rows.shape[-1], pooled_grad.shape[-1]
    values = pooled_grad.unsqueeze(2).expand(*rows.shape, dim).reshape(-1, dim)
    return coalesce(rows.reshape(-1), values, narrow, known)


class CarriedUnique:
    """The unique rows (and slots) of the next batch, computed in step t (LazyDP's input
    queue; `Algorithm.sort_ahead` for the others) and reused by step t + 1's gradient
    coalescing, which needs exactly those: one sort per step instead of two, off the path
    to step t's update. The step contract makes `next_batch` the batch of step t + 1
    (LazyDP's history table relies on it too).

    `put` only notes the new queue; `commit`, once this step's gradient rows (which may
    be the held buffers) are consumed, copies it into fixed buffers, so a CUDA graph
    replay reads what the previous replay wrote."""

    def __init__(self) -> None:
        self._held: tuple[torch.Tensor, ...] | None = None
        self._pending: tuple[torch.Tensor, ...] | None = None

    def put(self, uniq: SparseRows, slot: torch.Tensor) -> None:
        self._pending = (uniq.rows, uniq.valid, slot)

    def commit(self) -> None:
        if self._pending is None:
            return
        if self._held is None:
            self._held = tuple(x.clone() for x in self._pending)
        else:
            for dst, src in zip(self._held, self._pending, strict=True):
                dst.copy_(src)
        self._pending = None

    def get(self) -> tuple[SparseRows, torch.Tensor] | None:
        if self._held is None:
            return None
        rows, valid, slot = self._held
        return SparseRows(rows, None, valid), slot


def valid_first(update: SparseRows) -> SparseRows:
    """The same update with its valid slots first (in their order) and the rest after, as
    a masked update (valid slots anywhere) must be before `to_device` or `ship_async`
    moves it: they carry only the valid prefix. A stable sort of the slots: sync-free."""
    order = torch.sort((~update.valid).to(torch.uint8), stable=True).indices
    values = None if update.values is None else update.values[order]
    return SparseRows(update.rows[order], values, update.valid[order])


class ShippedRows:
    """A row update on its way to another device (`SparseOps.ship_async`): its valid slots
    are a prefix, `count` of them. `wait()` may be called once per replay when the copy
    was captured in a CUDA graph."""

    def __init__(self, source, host, done, count: torch.Tensor) -> None:
        self._source, self._host, self._done, self._count = source, host, done, count

    def wait(self) -> SparseRows:
        """The valid slots on the destination; waits for the copy only."""
        if self._host is None:  # nothing crossed a device boundary
            n = int(self._count)
            update = self._source
            return SparseRows(update.rows[:n], update.values[:n], update.valid[:n])
        self._done.synchronize()
        rows, values, count = self._host
        n = int(count)
        return SparseRows(rows[:n], values[:n], torch.ones(n, dtype=torch.bool))


def _arrived(update: SparseRows | ShippedRows) -> SparseRows:
    return update.wait() if isinstance(update, ShippedRows) else update


class SparseOps:
    """Sparse coalescing and row updates, picked per device.

    On a GPU the sync-free functions above are used. On the host there is no device to
    wait for, so exact `torch.unique` is free; a table's row updates run in the C kernel of
    `host_rows.py` (PyTorch's CPU `index_add_` costs per row and runs on one core), with
    the coalesced rows (unique, sorted) split into contiguous parts that a thread pool
    updates in parallel (ctypes and torch release the GIL), which is race-free because
    the parts touch disjoint rows. `device_paths_on_host` runs the device code on the host
    (tests check it there, where no GPU is).
    """

    def __init__(
        self,
        threads: int,
        device_paths_on_host: bool = False,
        table_rows: int | None = None,
        host: HostWork | None = None,
        row_adder: HostRowAdder | None = None,
    ) -> None:
        self.device_paths_on_host = device_paths_on_host
        self.row_adder = row_adder or HostRowAdder()  # host tables' row updates
        self.narrow = table_rows is not None and table_rows <= 2**31
        self.threads = max(1, threads)
        self.host = host or HostWork()  # the session's host table work (see host_work.py)
        self._pool = None
        self._pinned: dict[str, torch.Tensor] = {}

    def _map(self, fn, parts: int) -> None:
        if parts == 1:
            fn(0)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        list(self._pool.map(fn, range(parts)))

    def device_path(self, tensor: torch.Tensor) -> bool:
        """Whether work on `tensor` takes the sync-free device code (GPU, or forced)."""
        return tensor.device.type != "cpu" or self.device_paths_on_host

    def _parts(self, n: int, cap: int | None = None) -> list[int]:
        """Cut points of n items into parts of at least 4096, one per thread (at most
        `cap` parts)."""
        parts = max(1, min(self.threads, cap or self.threads, n // 4096))
        return [n * k // parts for k in range(parts + 1)]

    def unique(self, rows: torch.Tensor, carry: CarriedUnique | None = None) -> SparseRows:
        """Unique rows (padded on the device path, where `carry` keeps them and their slots
        for the next step's `bag_row_gradients`)."""
        if self.device_path(rows):
            uniq, slot = unique_rows(rows, self.narrow)
            if carry is not None:
                carry.put(uniq, slot)
            return uniq
        uniq = torch.unique(rows.reshape(-1))
        return SparseRows(uniq, None, torch.ones_like(uniq, dtype=torch.bool))

    def coalesce(self, rows: torch.Tensor, values: torch.Tensor) -> SparseRows:
        if self.device_path(rows):
            return coalesce(rows, values, self.narrow)
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

    def bag_row_gradients(
        self,
        rows: torch.Tensor,
        pooled_grad: torch.Tensor,
        out: torch.device,
        carried: CarriedUnique | None = None,
    ) -> SparseRows:
        """Coalesced row gradients, delivered on device `out`.

        They are computed where the pooled gradient is when that is a GPU (sync-free,
        padded), else on the host. In hybrid placement the bag rows go to the GPU (small),
        the GPU coalesces, and only the unique rows cross PCIe when `out` is the host.
        `carried`: these rows' unique rows and slots, if an earlier step computed them.
        """
        if self.device_path(pooled_grad):
            rows = rows.to(pooled_grad.device, non_blocking=True)
            known = carried.get() if carried is not None else None
            return self.to_device(bag_row_gradients(rows, pooled_grad, self.narrow, known), out)
        dim = pooled_grad.shape[-1]
        values = pooled_grad.unsqueeze(2).expand(*rows.shape, dim).reshape(-1, dim)
        return self.to_device(self.coalesce(rows.reshape(-1), values), out)

    def to_device(self, update: SparseRows, out: torch.device) -> SparseRows:
        """`update` on device `out`. GPU -> host ships only the valid prefix, through pinned
        staging buffers (reused: the result is valid until the next call), and waits for
        it: the one intended device-to-host copy of a hybrid step."""
        if update.rows.device.type == out.type:
            return update
        if out.type != "cpu":
            return SparseRows(update.rows.to(out), update.values.to(out), update.valid.to(out))
        count = int(update.valid.sum())
        rows = self._staging("rows", update.rows.dtype, (count,))
        values = self._staging("values", update.values.dtype, (count, update.values.shape[1]))
        rows.copy_(update.rows[:count], non_blocking=True)
        values.copy_(update.values[:count], non_blocking=True)
        torch.cuda.current_stream(update.rows.device).synchronize()
        return SparseRows(rows, values, torch.ones(count, dtype=torch.bool))

    def ship_async(self, update: SparseRows, out: torch.device, tag: str) -> ShippedRows:
        """Start moving a padded device update to `out` without waiting: on a GPU, all
        slots and the valid count are copied into pinned buffers named by `tag` (reused by
        the next call with that tag, so wait on this one first), on the current stream,
        which must not rewrite the update's tensors before the copy (it is
        stream-ordered). In a capture the copy's event becomes a graph node that each
        replay records, so the host can wait for it while the rest of the graph runs."""
        count = update.valid.sum().reshape(1)
        if update.rows.device.type != "cuda" or out.type != "cpu":
            return ShippedRows(update, None, None, count)
        done = torch.cuda.Event(external=torch.cuda.is_current_stream_capturing())
        rows = self._staging(f"{tag}_rows", update.rows.dtype, tuple(update.rows.shape))
        values = self._staging(f"{tag}_values", update.values.dtype, tuple(update.values.shape))
        pinned_count = self._staging(f"{tag}_count", count.dtype, (1,))
        rows.copy_(update.rows, non_blocking=True)
        values.copy_(update.values, non_blocking=True)
        pinned_count.copy_(count, non_blocking=True)
        done.record()
        return ShippedRows(None, (rows, values, pinned_count), done, count)

    def _staging(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= n
        buf = self._pinned.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            buf = torch.empty(max(numel, 1), dtype=dtype, pin_memory=True)
            self._pinned[name] = buf
        return buf[:numel].view(shape)

    def merge(
        self,
        grads: SparseRows,
        grad_scale: float | Scalar,
        rows: torch.Tensor,
        values: torch.Tensor,
    ) -> SparseRows:
        """grad_scale * grads plus (rows, values), as one update with unique rows.

        On a GPU: one padded coalesce of both (the scale read from device memory). On the
        host both inputs are already unique and `grads.rows` is sorted, so a binary search
        finds the shared rows: their values are added in place and the rest appended, with
        no second sort of 2N rows.
        """
        device_path = self.device_path(grads.rows)
        scale = Scalar.resolve(grad_scale, device_path)
        if device_path:
            both = torch.cat([grads.values * scale, values])
            return coalesce(torch.cat([grads.rows, rows]), both, self.narrow)
        summed = grads.values * scale
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

    def add_rows(
        self, table: torch.Tensor, update: SparseRows, alpha: float | Scalar = 1.0
    ) -> None:
        """table[rows] += alpha * values (rows coalesced; device padding adds zeros).

        On a GPU a per-step scale is read from device memory and applied to
        `update.values` in place (the update is consumed). A GPU update into a host table
        (hybrid) crosses PCIe here: eager steps copy its valid rows and wait. While
        `self.host` records (a graph capture), a host table's update is host work: a GPU
        update is first copied, every slot, into pinned memory by the graph."""
        if table.device.type == "cpu" and self.host.recording:
            if update.rows.device.type == "cuda":
                update = self.ship_async(update, table.device, "update")
            else:  # an eager step's recorded work: a carried sort may rewrite its rows first
                parts = (update.rows, update.values, update.valid)
                update = SparseRows(*(x.clone() for x in parts))
            self.host.run(lambda: self.apply_rows(table, _arrived(update), alpha))
            return
        self.apply_rows(table, update, alpha)

    def apply_rows(
        self, table: torch.Tensor, update: SparseRows, alpha: float | Scalar = 1.0
    ) -> None:
        """`add_rows` now, never recorded: for host work that is already running, maybe on
        a thread while the main thread records a capture."""
        if table.device.type == "cpu" and update.rows.device.type == "cuda":
            update = self.to_device(update, table.device)
        device_path = self.device_path(table)
        scale = Scalar.resolve(alpha, device_path)
        if device_path:
            if isinstance(scale, torch.Tensor):
                update.values.mul_(scale)
                scale = 1.0
            table.index_add_(0, update.rows, update.values, alpha=scale)
            return
        cuts = self._parts(update.rows.numel(), cap=ROW_PARTS)
        rows, values = update.rows.contiguous(), update.values.contiguous()

        def add(k: int) -> None:
            self.row_adder.add(table, rows, values, scale, lo=cuts[k], hi=cuts[k + 1])

        self._map(add, len(cuts) - 1)
