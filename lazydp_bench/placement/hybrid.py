"""`hybrid` (the paper's setup): tables in host RAM, MLPs on the GPU. LazyDP's history table
(0.78 % of the table) sits on the GPU with the per-step noise work, and only noise rows
cross PCIe to the host table.

Owed noise is delivered `Ahead`: it does not depend on the gradient, so it is drawn before
step t's lookup, split by whether batch t reads the row. Part 0 (rows batch t does not
read, R(t+1) minus R(t)) goes to a background thread while the host looks batch t up and
may run until the step ends: its rows are disjoint from the gradient rows R(t). Part 1
(rows batch t reads) goes to a second thread once the lookup is done, and the gradient
update waits only for it, since both touch those rows. Each row thus gets its noise, then
its gradient, as before; the step ends when both parts are in. (The paper merges noise
and gradient into one update instead, which ships and applies 2N rows after the backward,
on the critical path.)
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
    graph of its own, replayed before the lookup, and its host work runs right after it;
    the update's host work, joins included, runs after the step's graph."""

    mode = "ahead"
    before_lookup = True

    def __init__(self) -> None:
        self._pending: list[list[Future]] = [[], []]  # per part, its additions under way
        self._shipped = None  # this step's noise, shipped by `start`
        self._handed = False  # both parts were handed to the appliers
        self._appliers: list[ThreadPoolExecutor | None] = [None, None]

    def start(self, owed: OwedNoise, read_by: torch.Tensor, tools: UpdateTools) -> None:
        """Draw the noise (rows batch t does not read first), start its copy to pinned
        memory and hand part 0 to its applier."""
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
        """Queue a part of the shipped noise on its applier thread (one worker per part:
        the parts' rows are disjoint, so they may be added at the same time, each after
        its copy has landed)."""
        if self._appliers[part] is None:
            name = f"lazydp-noise-part{part}"
            self._appliers[part] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        table, sparse = tools.table, tools.sparse
        self._pending[part].append(
            self._appliers[part].submit(lambda: sparse.apply_rows(table, shipped.wait(part)))
        )

    def _join_part(self, part: int) -> None:
        """Wait until a part's noise is in the table (re-raises what its thread raised)."""
        pending, self._pending[part] = self._pending[part], []
        for future in pending:
            future.result()

    def join(self) -> None:
        """Wait until all noise handed over is in the table (the pinned buffers that
        `start` fills are free again)."""
        for part in (1, 0):
            self._join_part(part)

    def update(self, grads: SparseRows, owed: OwedNoise | None, tools: UpdateTools) -> None:
        """The gradient rows once part 1 (the rows they share with the queue) has landed,
        while part 0 (disjoint rows) may still be added; the step ends with both."""
        if not self._handed:  # rows of the queue would miss their noise
            raise RuntimeError("LazyDP `ahead`: the step did not run before/after_lookup")
        self._handed = False
        table, host = tools.table, tools.sparse.host
        with tools.timer.stage(Stage.PARAM_UPDATE):
            host.run(lambda: self._join_part(1))
            tools.sparse.add_rows(table, grads, tools.alpha(table.device))
            host.run(self.join)
