"""The placement interface: where the table, LazyDP's history table and the MLPs live, and
how a lazily owed noise update reaches the table.

Algorithms produce row updates and owed-noise requests (`OwedNoise`) and know nothing of
devices, threads or graphs; a placement says where each piece of state lives
(`table_device`, `mlp_device`, `work_device`), what memory each side needs
(`split_need`), how table work runs (now, or as host work a CUDA graph step records), and
which `OwedNoiseDelivery` applies LazyDP's owed noise. Adding a placement is one module
here and one line in `registry.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lazydp_bench.measure.stages import Stage

if TYPE_CHECKING:
    from lazydp_bench.dp.noise.registry import EngineSet
    from lazydp_bench.measure.profiling import StageTimer
    from lazydp_bench.runtime.host_work import HostWork
    from lazydp_bench.runtime.sparse import SparseOps, SparseRows
    from lazydp_bench.runtime.step_scalars import Scalar


@dataclass(frozen=True)
class MemoryNeed:
    """Estimated peak bytes on each side for one run in one placement."""

    gpu_bytes: int
    host_bytes: int


@dataclass(frozen=True)
class OwedNoise:
    """Noise that rows owe: rows.rows[k] += sum_j draws[j][0][k] * z_jk, z_jk independent
    standard normals (1 in unit mode) keyed by draws[j][1]; padded slots have std 0."""

    rows: SparseRows  # values None
    draws: tuple[tuple[torch.Tensor, Any], ...]  # (std per slot, key) per independent draw
    unit: bool

    def reordered(self, order: torch.Tensor) -> OwedNoise:
        from lazydp_bench.runtime.sparse import SparseRows

        rows = SparseRows(self.rows.rows[order], None, self.rows.valid[order])
        return replace(self, rows=rows, draws=tuple((std[order], k) for std, k in self.draws))

    def dense(self, engines: EngineSet, dim: int, dtype: torch.dtype) -> SparseRows:
        """The owed noise as a [slots, dim] row update on the rows' device."""
        from lazydp_bench.measure.profiling import NULL_TIMER
        from lazydp_bench.runtime.sparse import SparseRows

        rows = self.rows.rows
        noise = torch.zeros((rows.numel(), dim), dtype=dtype, device=rows.device)
        engine = engines.for_device(rows.device)
        for std, key in self.draws:
            engine.add_noise(noise, std, key, NULL_TIMER, unit=self.unit)
        return SparseRows(rows, noise, self.rows.valid)


@dataclass(frozen=True)
class UpdateTools:
    """What a delivery needs to touch the table: the ops, the engines, the step's alpha on
    a device (a function: per-step values live on each device), the timer."""

    table: torch.Tensor
    sparse: SparseOps
    engines: EngineSet
    alpha: Callable[[torch.device], Scalar]
    timer: StageTimer


class OwedNoiseDelivery(ABC):
    """How LazyDP's owed noise reaches the table (`mode` is in every record)."""

    mode: ClassVar[str]
    adds_to_lookup: ClassVar[bool] = False  # `owed_in_lookup` adds noise the table lacks
    grads_on_work_device: ClassVar[bool] = False

    def owed_in_lookup(
        self, rows: torch.Tensor, pooled: torch.Tensor, tools: UpdateTools
    ) -> torch.Tensor:
        """The bags of `rows` as the forward must see them: `pooled` (the table's lookup),
        plus the noise the rows owe that is not in the table yet (none by default)."""
        return pooled

    @abstractmethod
    def update(self, grads: SparseRows, owed: Callable[[], OwedNoise], tools: UpdateTools) -> None:
        """Apply the step's gradient rows (times alpha) and deliver the owed noise
        (`carried` keeps it for the next step). `owed` makes the step's request (it
        advances the history table: call it once); a delivery calls it where the request's
        work should join the stream, so work the step waits for can go first."""

    def join(self) -> None:  # noqa: B027 (only deliveries that hold noise back act)
        """Make the table hold all noise delivered so far (before a flush or an
        evaluation): `carried` writes the noise it keeps for the next step."""


class Placement(ABC):
    """One placement: devices, memory split, how table work runs, LazyDP's delivery."""

    name: ClassVar[str]
    timer_mode: ClassVar[str] = "sync_wall"  # cuda_events only when all work is on one GPU
    graph_blocker: ClassVar[str | None] = None  # why its steps cannot be CUDA graphs
    streams_table_noise: ClassVar[bool] = False  # a host table whose noise a GPU can draw
    # why an algorithm with a history table (LazyDP) cannot replay a captured step here
    lazy_graph_blocker: ClassVar[str | None] = None

    def __init__(self, table_device: torch.device, mlp_device: torch.device) -> None:
        self.table_device = table_device
        self.mlp_device = mlp_device

    @classmethod
    @abstractmethod
    def create(cls) -> Placement:
        """The placement on this machine's devices."""

    @property
    def work_device(self) -> torch.device:
        """Where LazyDP's history table lives and its per-step noise work runs."""
        return self.table_device

    @property
    def noise_via(self) -> torch.device | None:
        """The GPU that draws dense noise for a table in host RAM (`--noise-impl streamed`),
        or None where the table's own device draws it."""
        return self.mlp_device if self.streams_table_noise else None

    @classmethod
    @abstractmethod
    def split_need(cls, *, table_side: int, history: int, dense: int, sparse: int) -> MemoryNeed:
        """Bytes per side: the table with its chunk buffer and sparse temporaries
        (`table_side`), the history table, the MLPs' dense work, the sparse temporaries."""

    def table_work(self, host: HostWork, work: Callable[[], None]) -> None:
        """Run work on the table: host work when the table is in host RAM (a graph step
        records it and runs it after each replay), else now."""
        if self.table_device.type == "cpu":
            host.run(work)
        else:
            work()

    @abstractmethod
    def owed_noise_delivery(self, sparse: SparseOps, table: torch.Tensor) -> OwedNoiseDelivery:
        """A fresh delivery for one LazyDP session."""

    def add_row_noise(self, owed: OwedNoise, tools: UpdateTools) -> None:
        """Noise that rows owe, into the table now (DP-FEST's selected rows): here in place,
        one fused pass of the table's engine per draw, as `InPlace` adds LazyDP's."""
        table = tools.table
        engine = tools.engines.for_device(table.device)
        for std, key in owed.draws:
            engine.add_noise_rows(table, owed.rows.rows, std, key, tools.timer, owed.unit)


class InPlace(OwedNoiseDelivery):
    """Straight into the table rows by one fused kernel per draw, after the gradient rows:
    merging the two first would sort and scatter 2N rows only to scatter them again."""

    mode = "in-place"

    def update(self, grads: SparseRows, owed: Callable[[], OwedNoise], tools: UpdateTools) -> None:
        table, timer = tools.table, tools.timer
        with timer.stage(Stage.PARAM_UPDATE):
            tools.sparse.add_rows(table, grads, tools.alpha(table.device))
        request = owed()
        engine = tools.engines.for_device(table.device)
        with timer.stage(Stage.NOISE_SAMPLING):
            for std, key in request.draws:
                engine.add_noise_rows(table, request.rows.rows, std, key, timer, request.unit)


class Merged(OwedNoiseDelivery):
    """The paper's merge: the noise rows and the gradient rows coalesced into one update,
    which the table's side applies (threaded on the host)."""

    mode = "merged"
    grads_on_work_device = True

    def update(self, grads: SparseRows, owed: Callable[[], OwedNoise], tools: UpdateTools) -> None:
        sparse, timer, table = tools.sparse, tools.timer, tools.table
        request = owed()
        with timer.stage(Stage.NOISE_SAMPLING):
            noise = request.dense(tools.engines, table.shape[1], table.dtype)
        with timer.stage(Stage.NOISY_GRAD):
            alpha = tools.alpha(noise.rows.device)
            merged = sparse.merge(grads, alpha, noise.rows, noise.values)
        with timer.stage(Stage.PARAM_UPDATE):
            sparse.add_rows(table, sparse.to_device(merged, table.device))
