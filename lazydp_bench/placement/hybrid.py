"""`hybrid` (the paper's setup): tables in host RAM, MLPs on the GPU. LazyDP's history table
(0.78 % of the table) sits on the GPU with the per-step noise work, and only noise rows
cross PCIe to the host table.

Owed noise is delivered `Ahead`: it does not depend on the gradient, so it is drawn before
step t's lookup, with the rows batch t does not read first. A background thread adds those
to the host table while the host looks batch t up (disjoint rows), and the rest once the
lookup is done, while the GPU computes the forward and backward; the update then waits for
it and adds the gradient rows, as SGD does. (The paper merges noise and gradient into one
update instead, which ships and applies 2N rows after the backward, on the critical path.)
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from lazydp_bench.measure.stages import Stage
from lazydp_bench.placement.base import (
    MemoryNeed,
    OwedNoise,
    OwedNoiseDelivery,
    Placement,
    UpdateTools,
)
from lazydp_bench.runtime.sparse import SparseRows, unread_first


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
        return Ahead()

    def add_row_noise(self, owed: OwedNoise, tools: UpdateTools) -> None:
        """The noise is drawn where the owed rows are (`work_device`: the GPU here, the host
        in `hybrid-host`) into a [rows, D] update, which `add_rows` applies to the host
        table as it applies gradient rows: only the noise rows cross PCIe."""
        noise = owed.dense(tools.engines, tools.table.shape[1], tools.table.dtype)
        tools.sparse.add_rows(tools.table, noise)


class Ahead(OwedNoiseDelivery):
    """See the module docstring. In a hybrid graph step `start` is captured in a small
    graph of its own, replayed before the lookup, and its host work runs right after it."""

    mode = "ahead"
    before_lookup = True

    def __init__(self) -> None:
        self._pending: list[Future] = []  # parts of the queue's noise being added
        self._shipped = None  # this step's noise, shipped by `start`
        self._handed = False  # both parts were handed to the applier
        self._applier: ThreadPoolExecutor | None = None

    def start(self, owed: OwedNoise, read_by: torch.Tensor, tools: UpdateTools) -> None:
        """Draw the noise (rows batch t does not read first), start its copy to pinned
        memory and hand the first part to the applier thread."""
        timer, sparse, table = tools.timer, tools.sparse, tools.table
        with timer.stage(Stage.LAZYDP_OVERHEAD):
            order, cuts = unread_first(owed.rows, read_by)
            owed = owed.reordered(order)
        with timer.stage(Stage.NOISE_SAMPLING):
            noise = owed.dense(tools.engines, table.shape[1], table.dtype)
        with timer.stage(Stage.PARAM_UPDATE):
            shipped = sparse.ship_async(noise, table.device, "queue_noise", cuts)
            sparse.host.run(lambda: self.apply_part(shipped, 0, tools))
        self._shipped = shipped

    def after_lookup(self, tools: UpdateTools) -> None:
        """Batch t has been read, so the rows it reads may take their noise now (no row of
        batch t + 1 is read before the update ends)."""
        shipped, self._shipped = self._shipped, None
        if shipped is None:
            raise RuntimeError("LazyDP `ahead`: the step did not run before_lookup")
        with tools.timer.stage(Stage.PARAM_UPDATE):
            tools.sparse.host.run(lambda: self.apply_part(shipped, 1, tools))
        self._handed = True

    def apply_part(self, shipped, part: int, tools: UpdateTools) -> None:
        """Queue a part of the shipped noise on the applier thread (one worker: parts are
        added in order, each after its copy has landed)."""
        if self._applier is None:
            self._applier = ThreadPoolExecutor(max_workers=1)
        table, sparse = tools.table, tools.sparse
        self._pending.append(
            self._applier.submit(lambda: sparse.apply_rows(table, shipped.wait(part)))
        )

    def join(self) -> None:
        """Wait until the noise is in the table (re-raises what the thread raised)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def update(self, grads: SparseRows, owed: OwedNoise | None, tools: UpdateTools) -> None:
        """The gradient rows, after the noise has landed: both would touch shared rows."""
        if not self._handed:  # rows of the queue would miss their noise
            raise RuntimeError("LazyDP `ahead`: the step did not run before/after_lookup")
        self._handed = False
        table = tools.table
        with tools.timer.stage(Stage.PARAM_UPDATE):
            tools.sparse.host.run(self.join)
            tools.sparse.add_rows(table, grads, tools.alpha(table.device))
