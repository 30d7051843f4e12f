"""Seeded synthetic batches with one batch of look-ahead.

Indices are drawn on the device that holds the tables, dense features and labels on the
device that runs the MLPs, all vectorized. `peek()` gives the NEXT batch, so LazyDP can
read the rows that step t+1 will touch while it updates step t.

Batches are drawn in order from two generators, so the stream depends on the seed only,
never on when a batch is drawn. A batch is drawn when `peek` or `advance` first needs
it, or earlier by `draw_ahead()`: a graph step calls it once the GPU has its work, so
the host draws the batch after next while it would otherwise wait (in hybrid placement
the indices are drawn on the host: ~1 ms per MLPerf batch of 2048 on the H200's host,
which was on every step's critical path).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from lazydp_bench.data.distributions import Distribution, check_table_rows, sample_rows


@dataclass(frozen=True)
class Batch:
    dense: torch.Tensor  # [B, F] on the MLP device
    labels: torch.Tensor  # [B] in {0, 1}, on the MLP device
    rows: torch.Tensor  # [B, T, L] global row ids into the fused table, on the table device

    @property
    def size(self) -> int:
        return self.dense.shape[0]


class SyntheticBatchSource:
    """Random dense features and labels, and per-table bags drawn from `distribution`."""

    def __init__(
        self,
        table_rows: tuple[int, ...],
        dense_features: int,
        *,
        batch_size: int,
        pooling: int,
        distribution: Distribution,
        table_device: torch.device,
        mlp_device: torch.device,
        dtype: torch.dtype,
        seed: int,
    ) -> None:
        if distribution.kind == "zipf":
            check_table_rows(max(table_rows))
        self._rows = torch.tensor(table_rows, dtype=torch.int64, device=table_device)
        starts = torch.cumsum(self._rows, 0) - self._rows
        self._offsets = starts.view(1, -1, 1)
        self._shape = (batch_size, len(table_rows), pooling)
        self._dense_shape = (batch_size, dense_features)
        self._dist = distribution
        self._mlp_device = mlp_device
        self._dtype = dtype
        self._gen_table = torch.Generator(device=table_device).manual_seed(seed)
        self._gen_mlp = torch.Generator(device=mlp_device).manual_seed(seed + 1)
        self._drawn: deque[Batch] = deque([self._generate()])  # the next batches, in order

    def _generate(self) -> Batch:
        local = sample_rows(self._dist, self._rows, self._shape, self._gen_table)
        dense = torch.randn(
            self._dense_shape, dtype=self._dtype, device=self._mlp_device, generator=self._gen_mlp
        )
        labels = torch.randint(
            0, 2, (self._shape[0],), device=self._mlp_device, generator=self._gen_mlp
        ).to(self._dtype)
        return Batch(dense=dense, labels=labels, rows=local + self._offsets)

    def peek(self) -> Batch:
        """The batch the next `advance()` will return (LazyDP's input queue)."""
        if not self._drawn:
            self._drawn.append(self._generate())
        return self._drawn[0]

    def advance(self) -> Batch:
        """Return the next batch (the one after it is drawn by `peek` or `draw_ahead`)."""
        current = self.peek()
        self._drawn.popleft()
        return current

    def draw_ahead(self) -> None:
        """Draw the batch after the next one now, if it is not drawn yet."""
        self.peek()
        if len(self._drawn) < 2:
            self._drawn.append(self._generate())
