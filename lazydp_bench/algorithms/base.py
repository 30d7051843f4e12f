"""The shape every algorithm shares: forward, clipping (which times the backward stages),
then a model update named after the paper's stages. Subclasses implement `update`.

`step(t, ...)` = `prepare(t)` (step t's lr, noise std, seeds into device memory, see
`step_scalars.py`) + `run_step(...)`, which reads only device-resident values when it
runs on a GPU, so a CUDA graph can capture `run_step` once and replay it every step.
Algorithms that cannot be replayed that way say so with `graphable = False`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lazydp_bench.config import LRSchedule, RunConfig, SparsityConfig
from lazydp_bench.data import Batch
from lazydp_bench.data.distributions import Distribution
from lazydp_bench.dp.clipping import ClipResult, get_clipping
from lazydp_bench.dp.noise.registry import EngineSet
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.dlrm import DLRM, ForwardState
from lazydp_bench.placement.base import Placement
from lazydp_bench.runtime.sparse import CarriedUnique, SparseOps, SparseRows
from lazydp_bench.runtime.step_scalars import Scalar, StepScalars


@dataclass
class AlgoContext:
    model: DLRM
    lr: LRSchedule
    batch_size: int
    clip_norm: float
    noise_multiplier: float
    noise_mode: str  # gaussian | unit | off
    engines: EngineSet
    sparse: SparseOps
    seed: int
    total_steps: int
    placement: Placement
    clipping: str | None = None  # override of the algorithm's default mode
    sparsity: SparsityConfig | None = None  # dp-fest / dp-adafest parameters (None: defaults)
    distribution: Distribution | None = None  # the synthetic source's (dp-fest's public ranks)


class Algorithm:
    name: ClassVar[str]
    summary: ClassVar[str]
    # how figures show it (report/figures.py reads these from the registry)
    label: ClassVar[str] = ""  # default: the name
    color: ClassVar[str | None] = None  # default: a spare colour
    plot_order: ClassVar[int] = 100  # position among the bars of a group
    default_clipping: ClassVar[str]
    private: ClassVar[bool] = True
    dp_equivalent: ClassVar[bool | None] = True  # None: not private at all
    # not DP-SGD-equivalent, yet its mechanisms compose to DP-SGD's at sigma: epsilon holds
    sigma_accounted: ClassVar[bool] = False
    history_table: ClassVar[bool] = False  # needs a per-row history table (memory estimate)
    graphable: ClassVar[bool] = True  # run_step reads every per-step value from the device
    own_noise: ClassVar[bool] = False  # draws its noise itself: our engines are not prepared

    def __init__(self, ctx: AlgoContext) -> None:
        self.ctx = ctx
        self.model = ctx.model
        self.clipping = ctx.clipping or self.default_clipping
        self._clip = get_clipping(self.clipping)
        self.steps_done = 0
        # the next batch's unique rows, sorted in step t for step t + 1's coalescing
        self.carry = CarriedUnique()
        self.scalars = StepScalars(
            ctx.lr,
            ctx.batch_size,
            ctx.noise_multiplier * ctx.clip_norm,
            seed=ctx.seed,
            steps=ctx.total_steps,
            devices=self.step_devices(),
            dtype=self.model.dtype,
        )

    @classmethod
    def check_optimizer(cls, momentum: float, weight_decay: float) -> None:
        """Refuse an optimizer the algorithm does not implement (before anything is built);
        every algorithm here is plain SGD, and one may say why it must stay so."""
        if momentum != 0 or weight_decay != 0:
            raise BenchError(
                f"{cls.name!r} implements plain SGD: momentum and weight decay are not supported"
            )

    @classmethod
    def check_run(cls, config: RunConfig, *, placement: str, clipping: str) -> None:
        """Refuse a run the algorithm cannot measure, once the placement is chosen and
        before anything is built (a peer library may not run in every placement); none
        is refused by default."""

    def step_devices(self) -> list[torch.device]:
        """Devices whose kernels read per-step values."""
        return [self.model.table.device, self.model.mlp_device]

    # ----- the step -----------------------------------------------------------------
    def step(self, t: int, batch: Batch, next_batch: Batch, timer: StageTimer) -> None:
        self.prepare(t)
        self.run_step(batch, next_batch, timer)
        self.steps_done = t + 1

    def prepare(self, t: int, fixed_capacity: bool = False) -> None:
        self.scalars.prepare(t, fixed_capacity)

    def run_step(self, batch: Batch, next_batch: Batch, timer: StageTimer) -> None:
        """One step: the lookup of the batch's bags, then `run_from_lookup`."""
        with timer.stage(Stage.FORWARD):
            pooled = self.model.lookup(batch.rows)
        self.run_from_lookup(batch, next_batch, pooled, timer)

    def run_from_lookup(
        self, batch: Batch, next_batch: Batch, pooled: torch.Tensor, timer: StageTimer
    ) -> None:
        """The step once the batch's bags are looked up (`pooled`). A hybrid graph step
        does the host lookup before it replays this."""
        with torch.no_grad():
            pooled = self.owed_in_lookup(batch, pooled, timer)
        with timer.stage(Stage.FORWARD):
            fs = self.model.forward(batch, pooled)
        clipped = self._clip(self.model, fs, self.ctx.clip_norm, timer)
        with torch.no_grad(), timer.stage(Stage.MODEL_UPDATE):
            self.update(fs, clipped, next_batch, timer)
            self.sort_ahead(next_batch, clipped.pooled_grad.device, timer)

    def sort_ahead(self, next_batch: Batch, device: torch.device, timer: StageTimer) -> None:
        """Sort the next batch's rows for step t + 1's gradient coalescing (`carry`), after
        this step's updates went out: in hybrid graph replays the sort then runs on the GPU
        while the host applies the rows, not before the copy the host waits for (eager
        hybrid steps apply them first, synchronously); on a GPU table it is the same work,
        one step earlier. LazyDP's input queue is this sort where it runs on the device
        path. The host path sorts exactly with `torch.unique` and keeps nothing."""
        sparse = self.ctx.sparse
        if device.type == "cpu" and not sparse.device_paths_on_host:
            return
        with timer.stage(Stage.GRAD_COALESCE):
            sparse.unique(next_batch.rows.to(device, non_blocking=True), self.carry)
            self.carry.commit()

    def rows_as_read(self, rows: torch.Tensor) -> torch.Tensor:
        """Table rows [n] as the next step's forward reads them (verify compares these)."""
        with torch.no_grad():
            bags = rows.reshape(-1, 1, 1)
            pooled = self.owed_in_lookup_rows(bags, self.model.lookup(bags))
        return pooled.reshape(rows.numel(), -1)

    def owed_in_lookup_rows(self, rows: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """`owed_in_lookup` for bags of `rows` [B, T, L], untimed."""
        return pooled

    def owed_in_lookup(self, batch: Batch, pooled: torch.Tensor, timer: StageTimer) -> torch.Tensor:
        """The pooled bags the forward reads: the lookup, plus any noise that the rows
        owe and the table does not hold yet (LazyDP's `carried` delivery)."""
        return pooled

    def update(
        self, fs: ForwardState, clipped: ClipResult, next_batch: Batch, timer: StageTimer
    ) -> None:
        raise NotImplementedError

    def finalize(self) -> float | None:
        """Work owed at the end of training (LazyDP's flush); returns its ms or None."""
        return None

    def record_extras(self) -> dict[str, dict]:
        """Algorithm-specific fields, by record section ("memory", "config")."""
        return {"memory": {"history_table_bytes": None}}

    # ----- helpers shared by subclasses ----------------------------------------------
    def scalar(self, name: str, device: torch.device) -> Scalar:
        """Step t's value of `name` (see step_scalars.FLOAT_FIELDS / INT_FIELDS)."""
        return self.scalars.get(name, device)

    @property
    def noise_std(self) -> float:
        """sigma * C / B: std of one step's noise per element, before the learning rate."""
        return self.ctx.noise_multiplier * self.ctx.clip_norm / self.ctx.batch_size

    def row_gradients(
        self,
        fs: ForwardState,
        clipped: ClipResult,
        timer,
        on: torch.device | None = None,
    ) -> SparseRows:
        """Coalesced row gradients, computed where the pooled gradient is (the GPU, in
        hybrid) and delivered on device `on` (default: there too; `SparseOps.add_rows`
        ships a GPU update into a host table). The rows' sort comes from `carry` where step
        t - 1 made it (`sort_ahead`)."""
        on = clipped.pooled_grad.device if on is None else on
        with timer.stage(Stage.GRAD_COALESCE):
            return self.ctx.sparse.bag_row_gradients(fs.rows, clipped.pooled_grad, on, self.carry)

    def add_noise(
        self,
        target: torch.Tensor,
        std: Scalar | torch.Tensor,
        seed: Scalar,
        timer: StageTimer,
    ) -> None:
        """target += std * N(0, 1) (or std in unit mode), by the engine of its device."""
        if self.ctx.noise_mode == "off":
            return
        engine = self.ctx.engines.for_device(target.device)
        engine.add_noise(target, std, seed, timer, unit=self.ctx.noise_mode == "unit")

    def add_table_noise(self, std: Scalar, seed: Scalar, timer: StageTimer) -> None:
        """Dense noise on every table row, run as the placement runs table work."""
        table = self.model.table
        self.ctx.placement.table_work(
            self.ctx.sparse.host, lambda: self.add_noise(table, std, seed, timer)
        )

    def update_mlp(self, clipped: ClipResult, timer: StageTimer, noisy: bool) -> None:
        """MLPs: w -= lr/B * (sum clipped + N(0, sigma^2 C^2)), dense, every step."""
        device = self.model.mlp_device
        with timer.stage(Stage.NOISY_GRAD if noisy else Stage.PARAM_UPDATE):
            alpha = Scalar.resolve(self.scalar("alpha", device), device.type != "cpu")
            if isinstance(alpha, float):
                self.model.flat_params.add_(clipped.mlp_grad, alpha=alpha)
            else:
                self.model.flat_params.addcmul_(clipped.mlp_grad, alpha)
        if noisy:
            self.add_noise(
                self.model.flat_params,
                self.scalar("noise_alpha", device),
                self.scalar("seed_mlp", device),
                timer,
            )
