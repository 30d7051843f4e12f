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

Host reads: an all-to-all with variable splits takes its sizes as host lists, so
`request` reads every size the step needs (ids sent and received, row gradients the
groups will push and receive, each group's unique rows) in one device-to-host copy;
lookup, push, apply and the noise read none. Where a count of distinct rows never
reaches the host (apply, owed noise), tensors are sized by a bound on it and the spare
slots land on a scratch row kept past the shard's last row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lazydp_bench.dp.noise.global_keyed import AVAILABLE as KERNEL_AVAILABLE
from lazydp_bench.dp.noise.global_keyed import add_range_noise, add_row_noise
from lazydp_bench.dp.owed_noise import owed_sum
from lazydp_bench.measure.profiling import NULL_TIMER, StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.init import chunk_rows, init_rows
from lazydp_bench.placement.sharding import RowWiseLayout
from lazydp_bench.runtime.distributed import Comm

NOISE_CHUNK_ELEMS = 1 << 22  # elements per dense-noise pass: bounds its float64 temporaries
INIT_PIECE_ELEMS = 1 << 24  # elements initialized on the host per copy to the shard


def pieces(runs: list[tuple[int, int, int]], size: int) -> list[tuple[int, int, int]]:
    """(local start, global start, rows) runs cut where the global row is a multiple of
    `size` (pieces of at most `size` rows; aligned to the init's chunks when `size` is a
    multiple of them, so no chunk is drawn twice for two pieces)."""
    out = []
    for local, first, n in runs:
        a = first
        while a < first + n:
            b = min(first + n, (a // size + 1) * size)
            out.append((local + a - first, a, b - a))
            a = b
    return out


def run_starts(ordered: torch.Tensor) -> torch.Tensor:
    """True where a sorted tensor's value differs from the one before it."""
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return first


def runs_of(ordered: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, length) of each run of equal values of a sorted tensor, in `slots` slots: a
    host-known number of runs, or any bound on it (the slots past the last run get
    length 0 and value 0). Device work only: torch.unique would read the number of runs
    back to the host to size its output."""
    slot = torch.cumsum(run_starts(ordered), 0) - 1
    values = ordered.new_zeros(slots).scatter_(0, slot, ordered)  # a run's copies agree
    lengths = torch.zeros(slots, dtype=torch.int64, device=ordered.device)
    return values, lengths.index_add_(0, slot, torch.ones_like(slot))


def segment_sums(
    rows: torch.Tensor, values: torch.Tensor, slots: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted unique rows, per-row sums, per-row counts) in `slots` slots (`runs_of`;
    empty slots count 0 and sum to 0), each row's values added one by one in the order
    they appear: a stable sort, then a sequential segment sum (deterministic on the CPU
    and on CUDA, unlike `index_add_`'s atomics). No host read (`unsafe` skips
    segment_reduce's checks of the lengths, which read them back; `runs_of` makes them
    valid)."""
    order = torch.sort(rows, stable=True).indices
    uniq, lengths = runs_of(rows[order], slots)
    if slots == 0:
        return uniq, values[:0], lengths
    sums = torch.segment_reduce(values[order], "sum", lengths=lengths, axis=0, unsafe=True)
    return uniq, sums, lengths


def ordered_sum(
    rows: torch.Tensor, values: torch.Tensor, unique: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted unique rows, per-row sums) of rows with `unique` distinct values (known on
    the host; `segment_sums`)."""
    uniq, sums, _ = segment_sums(rows, values, unique)
    return uniq, sums


@dataclass(frozen=True)
class Request:
    """Rows this rank asked for, and how they travelled (`ShardedTable.request`)."""

    rows: torch.Tensor  # this rank's unique global rows, ascending
    order: torch.Tensor  # `rows` positions, grouped by owner rank (stable)
    send_counts: list[int]  # rows asked of each rank
    recv_counts: list[int]  # rows each rank asked of this one
    served: torch.Tensor  # global rows asked of this rank, by source rank
    group_rows: list[int]  # unique rows of each of this rank's example groups
    push_counts: list[int]  # row gradients this rank's groups will send each rank
    pull_counts: list[int]  # row gradients each rank's groups will send this one


def request_sizes(
    rows: torch.Tensor,
    ordered: torch.Tensor,
    group: torch.Tensor,
    *,
    groups: int,
    layout: RowWiseLayout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sizes of a request's exchanges, on the rows' device, with no host read:
    ([world, 2]: unique rows this rank asks of each rank, and unique (group, row) pairs
    whose gradients its groups push to each rank; [groups]: unique rows of each group).
    rows: [examples, ...] global ids; ordered: them flat and sorted; group: each
    example's group (0 .. groups - 1)."""
    world, total = layout.world, layout.total_rows
    per_rank = torch.zeros((world, 2), dtype=torch.int64, device=rows.device)
    owner, _ = layout.locate(ordered)
    per_rank[:, 0].index_add_(0, owner, run_starts(ordered).long())
    pairs = group.view(-1, *([1] * (rows.dim() - 1))).expand_as(rows) * total + rows
    pairs = torch.sort(pairs.reshape(-1)).values
    first = run_starts(pairs).long()
    owner, _ = layout.locate(pairs % total)
    per_rank[:, 1].index_add_(0, owner, first)
    per_group = torch.zeros(groups, dtype=torch.int64, device=rows.device)
    per_group.index_add_(0, torch.div(pairs, total, rounding_mode="floor"), first)
    return per_rank, per_group


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
        # one scratch row past the shard: padded slots of the sync-free paths land there
        self.scratch = rows
        self._rows = torch.empty((rows + 1, dim), dtype=dtype, device=self.device)
        self.shard = self._rows[:rows]
        # the rows a one-process host table starts with, drawn on the host in pieces
        piece = chunk_rows(dim) * max(1, INIT_PIECE_ELEMS // (chunk_rows(dim) * dim))
        for local, first, n in pieces(self.runs, piece):
            values = init_rows(layout.table_rows, dim, first, first + n, dtype=dtype, seed=seed)
            self.shard[local : local + n] = values.to(self.device)
        self._history = (
            torch.zeros(rows + 1, dtype=torch.int32, device=self.device) if history else None
        )
        self.history = None if self._history is None else self._history[:rows]

    # ----- rows to examples -------------------------------------------------------------
    def request(
        self,
        rows: torch.Tensor,
        group: torch.Tensor,
        *,
        groups: int,
        timer: StageTimer = NULL_TIMER,
    ) -> Request:
        """Send the unique rows of `rows` ([examples, ...] global ids; `group`: each
        example's group) to their owners, with the sizes of the step's later exchanges.
        One device-to-host read: every size (`request_sizes`, sent and received) in
        one tensor."""
        world = self.comm.world
        with timer.stage(Stage.COMM):
            ordered = torch.sort(rows.reshape(-1)).values
            per_rank, per_group = request_sizes(
                rows, ordered, group, groups=groups, layout=self.layout
            )
            got = self.comm.exchange_counts(per_rank)
            sizes = self.comm.host_ints(torch.cat([per_rank.view(-1), got.view(-1), per_group]))
            send, recv = sizes[: 2 * world], sizes[2 * world : 4 * world]
            uniq, _ = runs_of(ordered, sum(send[0::2]))
            owner, _ = self.layout.locate(uniq)
            order = torch.sort(owner, stable=True).indices
            served = self.comm.all_to_all(uniq[order], send[0::2], recv[0::2])
        return Request(
            rows=uniq,
            order=order,
            send_counts=send[0::2],
            recv_counts=recv[0::2],
            served=served,
            group_rows=sizes[4 * world :],
            push_counts=send[1::2],
            pull_counts=recv[1::2],
        )

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
        self,
        req: Request,
        rows: torch.Tensor,
        values: torch.Tensor,
        *,
        timer: StageTimer = NULL_TIMER,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Send row gradients (rows: global, the groups' unique rows in global group order,
        of the batch `req` asked for) to their owners; what arrives is in global group
        order too (ranks hold consecutive groups). No host read: `req` holds the sizes."""
        with timer.stage(Stage.COMM):
            owner, _ = self.layout.locate(rows)
            order = torch.sort(owner, stable=True).indices
            sent, got = req.push_counts, req.pull_counts
            got_rows = self.comm.all_to_all(rows[order], sent, got)
            got_values = self.comm.all_to_all(values[order], sent, got)
        return got_rows, got_values

    def apply(self, rows: torch.Tensor, values: torch.Tensor, alpha: float) -> None:
        """shard[row] += alpha * (sum of the row's values, in arrival order). The sums sit
        in one slot per arriving row (the number of distinct rows stays on the device);
        the empty slots add their zeros to the scratch row, so every shard row gets one
        addition."""
        uniq, sums, counts = segment_sums(rows, values, rows.shape[0])
        self._rows.index_add_(0, self._local_or_scratch(uniq, counts), sums * alpha)

    def _local_or_scratch(self, rows: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Local row of each global row where `live` is nonzero, else the scratch row."""
        _, local = self.layout.locate(rows)
        return torch.where(live > 0, local, self.scratch)

    # ----- noise of owned rows ----------------------------------------------------------
    def _chunks(self, bounded: bool = True) -> list[tuple[int, int, int]]:
        """(local start, global start, rows) of this rank's rows: each table's run, cut in
        pieces of NOISE_CHUNK_ELEMS elements where `bounded`."""
        if not bounded:
            return self.runs
        return pieces(self.runs, max(1, NOISE_CHUNK_ELEMS // max(1, self.shard.shape[1])))

    def dense_noise(self, std: float, key: int, unit: bool) -> None:
        """Every owned row += std * z(global row, column) (DP-SGD's dense table noise).
        Triton's kernel (gaussian noise on CUDA) keeps no temporaries, so it gets one
        launch per table run; the torch path's float64 temporaries need bounded pieces."""
        kernel = KERNEL_AVAILABLE and not unit and self.device.type == "cuda"
        for local, first, n in self._chunks(bounded=not kernel):
            add_range_noise(self.shard[local : local + n], first, std, key, unit=unit)

    def owed_noise(
        self, req: Request, upto: int, prefix: torch.Tensor, base: float, key: int, unit: bool
    ) -> None:
        """LazyDP: the owned rows some rank's next batch reads (`req.served`) get the noise
        of steps HT[r] .. upto - 1 in one draw (ANS), with the update's minus sign; then
        HT[r] = upto."""
        # the served rows sorted, a row's repeats (asked by several ranks) sent to the
        # scratch row: each owned row is read, noised and written once, and the number of
        # distinct rows never leaves the device (torch.unique would read it back)
        rows = torch.sort(req.served).values
        local = self._local_or_scratch(rows, run_starts(rows))
        last = self._history.index_select(0, local)
        self._history.index_fill_(0, local, upto)
        std = self._owed(prefix, last, upto, unit, base)
        add_row_noise(self._rows, local, rows, std, key, unit=unit)

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
