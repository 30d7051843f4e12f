"""Row-wise sharding arithmetic: which rank owns a row of the fused table, and where.

TorchRec's row-wise layout, per table: block = ceil(rows / world), owner = row // block,
local = row - owner * block. Each table is split on its own (not whole tables per rank),
so skewed table sizes balance; a rank holds, for every table, its block of that table's
rows, stacked in table order. A table smaller than the world leaves the last ranks
without rows of it. All functions are pure (no process group), so they are tested
against brute force and reused by planning, which runs before any process starts.

Examples are split by `example_groups`: the global batch in `groups` contiguous groups
whose sizes differ by at most one (the first `B % groups` are one larger); rank r of a
world of `groups` ranks computes group r.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class RowWiseLayout:
    """The row-wise layout of a fused table with `table_rows` rows per table."""

    table_rows: tuple[int, ...]
    world: int
    # device -> the lookup tables `locate` reads (built once per device, never compared)
    _on_device: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        if self.world < 1:
            raise ValueError(f"world size must be at least 1, got {self.world}")
        if not self.table_rows or min(self.table_rows) < 1:
            raise ValueError("every table needs at least one row")

    @property
    def total_rows(self) -> int:
        return sum(self.table_rows)

    @cached_property
    def blocks(self) -> tuple[int, ...]:
        """Rows per rank of each table: ceil(rows / world)."""
        return tuple(ceil_div(n, self.world) for n in self.table_rows)

    @cached_property
    def table_starts(self) -> tuple[int, ...]:
        """First global row of each table in the fused table."""
        starts, pos = [], 0
        for n in self.table_rows:
            starts.append(pos)
            pos += n
        return tuple(starts)

    def span(self, rank: int, table: int) -> tuple[int, int]:
        """Table-local rows [lo, hi) of `table` that `rank` owns (empty: lo == hi)."""
        block, n = self.blocks[table], self.table_rows[table]
        return min(n, rank * block), min(n, (rank + 1) * block)

    def shard_rows(self, rank: int) -> int:
        """How many rows `rank` holds (all tables)."""
        return sum(hi - lo for lo, hi in (self.span(rank, t) for t in range(len(self.table_rows))))

    def max_shard_rows(self) -> int:
        """The largest shard (memory planning sizes every rank by it)."""
        return max(self.shard_rows(r) for r in range(self.world))

    def global_rows(self, rank: int) -> torch.Tensor:
        """Global row of each of `rank`'s local rows, in local order (int64, ascending)."""
        parts = [
            torch.arange(start + lo, start + hi, dtype=torch.int64)
            for start, (lo, hi) in zip(
                self.table_starts,
                (self.span(rank, t) for t in range(len(self.table_rows))),
                strict=True,
            )
        ]
        return torch.cat(parts)

    def global_runs(self, rank: int) -> list[tuple[int, int, int]]:
        """(local start, global start, length) of each contiguous run of `rank`'s rows."""
        runs, local = [], 0
        for t, start in enumerate(self.table_starts):
            lo, hi = self.span(rank, t)
            if hi > lo:
                runs.append((local, start + lo, hi - lo))
                local += hi - lo
        return runs

    @cached_property
    def local_offsets(self) -> tuple[tuple[int, ...], ...]:
        """[rank][table]: where table t's block starts among rank r's local rows."""
        out = []
        for r in range(self.world):
            pos, row = 0, []
            for t in range(len(self.table_rows)):
                row.append(pos)
                lo, hi = self.span(r, t)
                pos += hi - lo
            out.append(tuple(row))
        return tuple(out)

    def _device_tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = tuple(
                torch.tensor(x, dtype=torch.int64, device=device)
                for x in (self.table_starts, self.blocks, self.local_offsets)
            )
        return self._on_device[key]

    def locate(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(owner rank, local row on the owner) of every global row, on the rows' device
        (no host sync)."""
        starts, blocks, offsets = self._device_tables(rows.device)
        table = torch.searchsorted(starts, rows, right=True) - 1
        in_table = rows - starts[table]
        block = blocks[table]
        owner = torch.div(in_table, block, rounding_mode="floor")
        local = offsets[owner, table] + in_table - owner * block
        return owner, local


def example_groups(batch: int, groups: int) -> list[tuple[int, int]]:
    """[start, stop) of each of `groups` contiguous example groups of a batch of `batch`
    (sizes differ by at most one, the larger first)."""
    if groups < 1 or batch < groups:
        raise ValueError(f"a batch of {batch} cannot be split into {groups} non-empty groups")
    base, extra = divmod(batch, groups)
    bounds, pos = [], 0
    for g in range(groups):
        size = base + (g < extra)
        bounds.append((pos, pos + size))
        pos += size
    return bounds
