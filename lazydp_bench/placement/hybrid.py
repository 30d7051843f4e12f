"""`hybrid` (the paper's setup): tables in host RAM, MLPs on the GPU. LazyDP's history table
(0.78 % of the table) sits on the GPU with the per-step noise work.

Owed noise is `Carried`: the noise of batch t + 1's rows, drawn in step t, stays on the
GPU; step t + 1 adds it to its looked-up bags and merges it into its gradient rows (the
same rows), so the host table takes one row update per step, as SGD's does. Host memory
bandwidth is what a hybrid step spends (the lookup and the row update); a separate noise
update of the next batch's rows would read and write them once more.

Writing that noise into the host table before the lookup instead (a background thread,
then the gradient rows: `ahead` in records before `212aefa`) is a second pass over the
next batch's rows: equal step times within the host's noise, more host busy time
(results/2026-12-02-h200-hybrid-carried). The paper merges noise and gradient into one
update of 2N rows after the backward, on the critical path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lazydp_bench.measure.stages import Stage
from lazydp_bench.placement.base import (
    MemoryNeed,
    OwedNoise,
    OwedNoiseDelivery,
    Placement,
    UpdateTools,
)
from lazydp_bench.runtime.sparse import SparseRows
from lazydp_bench.runtime.step_scalars import Scalar


class HybridPlacement(Placement):
    name = "hybrid"
    streams_table_noise = True

    @classmethod
    def create(cls) -> HybridPlacement:
        return cls(torch.device("cpu"), torch.device("cuda"))

    @property
    def work_device(self) -> torch.device:
        return self.mlp_device

    @classmethod
    def split_need(cls, *, table_side: int, history: int, dense: int, sparse: int) -> MemoryNeed:
        return MemoryNeed(dense + history + sparse, table_side)

    def owed_noise_delivery(self, sparse, table: torch.Tensor) -> OwedNoiseDelivery:
        return Carried()

    def add_row_noise(self, owed: OwedNoise, tools: UpdateTools) -> None:
        """The noise is drawn where the owed rows are (`work_device`: the GPU here, the host
        in `hybrid-host`) into a [rows, D] update, which `add_rows` applies to the host
        table as it applies gradient rows: only the noise rows cross PCIe."""
        noise = owed.dense(tools.engines, tools.table.shape[1], tools.table.dtype)
        tools.sparse.add_rows(tools.table, noise)


class Carried(OwedNoiseDelivery):
    """The queue's noise rides with the next step instead of being written ahead.

    Step t draws the owed noise of batch t + 1's unique rows (as every delivery does) and
    keeps it where it was drawn (the GPU). Step t + 1 adds it twice: to its looked-up
    bags (the forward sees each row as if the table held its noise) and to its gradient
    rows, which are exactly those rows in the same slots (the queue's sort is the one the
    gradient coalescing reuses, `sparse.CarriedUnique`; on the host path both are the
    sorted unique rows), as alpha * g + n before the update crosses PCIe. The host table
    then takes one row update per step, the gradient's, as SGD's does: no row is read or
    written for the noise alone. Exact in distribution like any delivery; only the rounding
    differs (x + (alpha g + n) instead of (x + n) + alpha g). `join` (before the flush and
    any evaluation) writes the kept noise into the table and zeroes it.

    The kept noise is copied into buffers allocated at the first (eager) step, so a
    CUDA-graph replay reads what the previous replay wrote and overwrites it only after
    its own reads."""

    mode = "carried"
    adds_to_lookup = True

    def __init__(self) -> None:
        self._kept: SparseRows | None = None  # the next batch's unique rows and their noise
        self._tools: UpdateTools | None = None  # the table the kept noise belongs to

    def owed_in_lookup(
        self, rows: torch.Tensor, pooled: torch.Tensor, tools: UpdateTools
    ) -> torch.Tensor:
        """pooled + each bag's sum of its rows' kept noise. A step's rows are all in the
        kept queue (its unique rows); any other row owes nothing kept and gets nothing."""
        kept = self._kept
        if kept is None:
            return pooled
        keys = kept.rows.masked_fill(~kept.valid, torch.iinfo(kept.rows.dtype).max)
        flat = rows.to(keys.device, non_blocking=True).reshape(-1)
        slot = torch.searchsorted(keys, flat).clamp_(max=keys.numel() - 1)
        hit = (keys[slot] == flat).unsqueeze(1).to(kept.values.dtype)
        dim = kept.values.shape[1]
        owed = (kept.values.index_select(0, slot) * hit).view(*rows.shape, dim).sum(2)
        return pooled.to(owed.device, non_blocking=True) + owed

    def update(self, grads: SparseRows, owed: Callable[[], OwedNoise], tools: UpdateTools) -> None:
        """The gradient rows with the kept noise of the same rows, one update; then the
        next batch's noise is requested, drawn and kept. The update goes first: in a graph
        replay the host waits for its copy, and the queue's sort and draw, not needed
        before step t + 1, run on the GPU while the host applies it."""
        sparse, timer, table = tools.sparse, tools.timer, tools.table
        self._tools = tools
        with timer.stage(Stage.PARAM_UPDATE):
            if self._kept is None:
                sparse.add_rows(table, grads, tools.alpha(table.device))
            else:
                device_path = sparse.device_path(grads.rows)
                scale = Scalar.resolve(tools.alpha(grads.rows.device), device_path)
                values = grads.values * scale + self._kept.values
                sparse.add_rows(table, SparseRows(grads.rows, values, grads.valid))
        request = owed()
        with timer.stage(Stage.NOISE_SAMPLING):
            noise = request.dense(tools.engines, table.shape[1], table.dtype)
        with timer.stage(Stage.LAZYDP_OVERHEAD):
            self._keep(noise)

    def _keep(self, noise: SparseRows) -> None:
        kept = self._kept
        if kept is None or kept.rows.shape != noise.rows.shape:
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("LazyDP `carried`: the queue changed shape in a capture")
            self._kept = SparseRows(noise.rows.clone(), noise.values.clone(), noise.valid.clone())
            return
        kept.rows.copy_(noise.rows)
        kept.values.copy_(noise.values)
        kept.valid.copy_(noise.valid)

    def join(self) -> None:
        """Write the kept noise into the table (its rows' history already counts it) and
        zero it, so the steps after do not add it again."""
        kept, tools = self._kept, self._tools
        if kept is None or tools is None:
            return
        tools.sparse.apply_rows(tools.table, tools.sparse.to_device(kept, tools.table.device))
        kept.values.zero_()
