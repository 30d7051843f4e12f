"""`sharded`: the fused table split row-wise over the ranks of a process group (one per GPU);
each rank keeps its rows, LazyDP's history of them, and draws their noise.

Per step (runtime/sharded_session.py drives it):
- `request`: the unique rows this rank's examples read go to their owners by an
  all-to-all of ids (one batch ahead: the ids of batch t + 1 travel in step t, so an owner
  knows LazyDP's input queue of its rows when it pays their owed noise);
- `lookup`: each owner sends the requested rows back (a second all-to-all), and the
  examples' rank pools them. Rows, not partial pooled sums, come back: a sum's grouping
  would depend on the world size, and the pooled values must not;
- `push`: per example group, the clipped row gradients (coalesced within the group) go to
  the owners, who `apply` them summed in global group order;
- `dense_noise`, `owed_noise`, `flush`: noise of the owner's rows only, keyed by global
  (row, column) through `dp/noise/global_keyed.py`, so any sharding draws what one
  process draws.

Every sum over rows that reaches the table runs in an order fixed by the data (a stable
sort, then a sequential segment sum), never by the world size; the sums then reach
unique rows (so `index_add_`'s atomics never add twice to one element), and the updates
of shard rows use no fused multiply-add; so N ranks and one rank give the same table
bit for bit. Collectives and the bookkeeping around them are timed as `comm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lazydp_bench.dp.noise.global_keyed import add_range_noise, add_row_noise
from lazydp_bench.dp.owed_noise import owed_sum
from lazydp_bench.measure.profiling import NULL_TIMER, StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.init import init_rows
from lazydp_bench.placement.sharding import RowWiseLayout
from lazydp_bench.runtime.distributed import Comm

NOISE_CHUNK_ELEMS = 1 << 22  # elements per dense-noise pass: bounds its float64 temporaries
INIT_PIECE_ELEMS = 1 << 24  # elements initialized on the host per copy to the shard


def ordered_sum(rows: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted unique rows, per-row sums) where each row's values are added one by one in
    the order they appear: a stable sort, then a sequential segment sum (deterministic on
    the CPU and on CUDA, unlike `index_add_`'s atomics). One host read (the unique count)."""
    order = torch.sort(rows, stable=True).indices
    ordered = rows[order]
    uniq, counts = torch.unique_consecutive(ordered, return_counts=True)
    if uniq.numel() == 0:
        return uniq, values[:0]
    return uniq, torch.segment_reduce(values[order], "sum", lengths=counts, axis=0)


@dataclass(frozen=True)
class Request:
    """Rows this rank asked for, and how they travelled (`Sharded.request`)."""

    rows: torch.Tensor  # this rank's unique global rows, ascending
    order: torch.Tensor  # `rows` positions, grouped by owner rank (stable)
    send_counts: list[int]  # rows asked of each rank
    recv_counts: list[int]  # rows each rank asked of this one
    served: torch.Tensor  # global rows asked of this rank, by source rank


class ShardedTable:
    """This rank's rows of the fused table (and LazyDP's history table of them)."""

    def __init__(
        self,
        layout: RowWiseLayout,
        comm: Comm,
        *,
        dim: int,
        dtype: torch.dtype,
        seed: int,
        history: bool,
    ) -> None:
        me = comm.me
        self.layout, self.comm, self.device = layout, comm, me.device
        self.runs = layout.global_runs(me.rank)
        rows = layout.shard_rows(me.rank)
        self.shard = torch.empty((rows, dim), dtype=dtype, device=self.device)
        # the rows a one-process host table starts with, drawn on the host in pieces
        step = max(1, INIT_PIECE_ELEMS // dim)
        for local, first, n in self.runs:
            for off in range(0, n, step):
                k = min(step, n - off)
                piece = init_rows(layout.table_rows, dim, first + off, first + off + k, dtype, seed)
                self.shard[local + off : local + off + k] = piece.to(self.device)
        self.history = torch.zeros(rows, dtype=torch.int32, device=self.device) if history else None

    # ----- rows to examples -------------------------------------------------------------
    def request(self, rows: torch.Tensor, timer: StageTimer = NULL_TIMER) -> Request:
        """Send the unique rows of `rows` (global ids) to their owners."""
        with timer.stage(Stage.COMM):
            uniq = torch.unique(rows.reshape(-1))
            owner, _ = self.layout.locate(uniq)
            order = torch.sort(owner, stable=True).indices
            counts = torch.bincount(owner, minlength=self.comm.world).tolist()
            recv_counts = self.comm.exchange_counts(counts)
            served = self.comm.all_to_all(uniq[order], counts, recv_counts)
        return Request(uniq, order, counts, recv_counts, served)

    def lookup(self, req: Request, timer: StageTimer = NULL_TIMER) -> torch.Tensor:
        """The values [len(req.rows), D] of the rows `req` asked for (in `req.rows` order)."""
        with timer.stage(Stage.COMM):
            _, local = self.layout.locate(req.served)
            back = self.comm.all_to_all(
                self.shard.index_select(0, local), req.recv_counts, req.send_counts
            )
            values = torch.empty_like(back)
            values[req.order] = back
        return values

    # ----- gradients to owners ----------------------------------------------------------
    def push(
        self, rows: torch.Tensor, values: torch.Tensor, timer: StageTimer = NULL_TIMER
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Send row gradients (rows: global, in global group order) to their owners; what
        arrives is in global group order too (ranks hold consecutive groups)."""
        with timer.stage(Stage.COMM):
            owner, _ = self.layout.locate(rows)
            order = torch.sort(owner, stable=True).indices
            counts = torch.bincount(owner, minlength=self.comm.world).tolist()
            recv_counts = self.comm.exchange_counts(counts)
            got_rows = self.comm.all_to_all(rows[order], counts, recv_counts)
            got_values = self.comm.all_to_all(values[order], counts, recv_counts)
        return got_rows, got_values

    def apply(self, rows: torch.Tensor, values: torch.Tensor, alpha: float) -> None:
        """shard[row] += alpha * (sum of the row's values, in arrival order)."""
        uniq, sums = ordered_sum(rows, values)
        _, local = self.layout.locate(uniq)
        self.shard.index_add_(0, local, sums * alpha)

    # ----- noise of owned rows ----------------------------------------------------------
    def _chunks(self):
        """(local start, global start, rows) of this rank's rows in bounded pieces."""
        step = max(1, NOISE_CHUNK_ELEMS // max(1, self.shard.shape[1]))
        for local, first, n in self.runs:
            for off in range(0, n, step):
                yield local + off, first + off, min(step, n - off)

    def dense_noise(self, std: float, key: int, unit: bool) -> None:
        """Every owned row += std * z(global row, column) (DP-SGD's dense table noise)."""
        for local, first, n in self._chunks():
            add_range_noise(self.shard[local : local + n], first, std, key, unit=unit)

    def owed_noise(
        self, req: Request, upto: int, prefix: torch.Tensor, base: float, key: int, unit: bool
    ) -> None:
        """LazyDP: the owned rows some rank's next batch reads (`req.served`) get the noise
        of steps HT[r] .. upto - 1 in one draw (ANS), with the update's minus sign; then
        HT[r] = upto."""
        rows = torch.unique(req.served)
        _, local = self.layout.locate(rows)
        last = self.history.index_select(0, local)
        self.history.index_fill_(0, local, upto)
        std = self._owed(prefix, last, upto, unit, base)
        add_row_noise(self.shard, local, rows, std, key, unit=unit)

    def flush(self, upto: int, prefix: torch.Tensor, base: float, key: int, unit: bool) -> None:
        """Every owned row gets all its pending noise; HT = upto (a second flush adds 0)."""
        for local, first, n in self._chunks():
            last = self.history[local : local + n]
            std = self._owed(prefix, last, upto, unit, base)
            add_range_noise(self.shard[local : local + n], first, std, key, unit=unit)
            last.fill_(upto)

    def _owed(self, prefix, last, upto: int, unit: bool, base: float) -> torch.Tensor:
        upto_t = torch.full((), upto, dtype=torch.int64, device=prefix.device)
        return owed_sum(prefix, last.to(prefix.device), upto_t, unit) * -base

    # ----- the whole table (verification, tests) ------------------------------------------
    def gather(self) -> torch.Tensor:
        """The full [total_rows, D] table on every rank (all-gather of padded shards)."""
        layout, shard = self.layout, self.shard
        padded = torch.zeros(
            (layout.max_shard_rows(), shard.shape[1]), dtype=shard.dtype, device=shard.device
        )
        padded[: shard.shape[0]] = shard
        parts = self.comm.all_gather(padded)
        full = torch.empty(
            (layout.total_rows, shard.shape[1]), dtype=shard.dtype, device=shard.device
        )
        for r, part in enumerate(parts):
            rows = layout.global_rows(r).to(shard.device)
            full[rows] = part[: rows.numel()]
        return full

    def memory_bytes(self) -> dict[str, int]:
        """This rank's table and history bytes."""
        hist = 0 if self.history is None else self.history.numel() * self.history.element_size()
        return {
            "shard_bytes": self.shard.numel() * self.shard.element_size(),
            "history_table_bytes": hist,
        }
