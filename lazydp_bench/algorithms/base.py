"""The shape every algorithm shares: forward, clipping (which times the backward stages),
then a model update named after the paper's stages. Subclasses implement `update`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lazydp_bench.clipping import ClipResult, get_clipping
from lazydp_bench.config import LRSchedule
from lazydp_bench.data import Batch
from lazydp_bench.model import DLRM, ForwardState
from lazydp_bench.noise.base import derive_seed
from lazydp_bench.noise.registry import EngineSet
from lazydp_bench.profiling import StageTimer
from lazydp_bench.sparse import SparseOps, SparseRows
from lazydp_bench.stages import Stage

# Noise streams: one seed space per purpose so no two draws share randomness.
STREAM_TABLE, STREAM_MLP, STREAM_SPARSE, STREAM_FLUSH = 0, 1, 2, 3


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
    clipping: str | None = None  # override of the algorithm's default mode


class Algorithm:
    name: ClassVar[str]
    summary: ClassVar[str]
    default_clipping: ClassVar[str]
    private: ClassVar[bool] = True
    dp_equivalent: ClassVar[bool | None] = True  # None: not private at all
    history_table: ClassVar[bool] = False  # needs a per-row history table (memory estimate)

    def __init__(self, ctx: AlgoContext) -> None:
        self.ctx = ctx
        self.model = ctx.model
        self.clipping = ctx.clipping or self.default_clipping
        self._clip = get_clipping(self.clipping)
        self.steps_done = 0

    # ----- the step -----------------------------------------------------------------
    def step(self, t: int, batch: Batch, next_batch: Batch, timer: StageTimer) -> None:
        with timer.stage(Stage.FORWARD):
            fs = self.model.forward(batch)
        clipped = self._clip(self.model, fs, self.ctx.clip_norm, timer)
        with torch.no_grad(), timer.stage(Stage.MODEL_UPDATE):
            self.update(t, fs, clipped, next_batch, timer)
        self.steps_done = t + 1

    def update(
        self,
        t: int,
        fs: ForwardState,
        clipped: ClipResult,
        next_batch: Batch,
        timer: StageTimer,
    ) -> None:
        raise NotImplementedError

    def finalize(self) -> float | None:
        """Work owed at the end of training (LazyDP's flush); returns its ms or None."""
        return None

    def record_extras(self) -> dict:
        return {"history_table_bytes": None}

    # ----- helpers shared by subclasses ----------------------------------------------
    def lr_over_batch(self, t: int) -> float:
        return self.ctx.lr.lr(t) / self.ctx.batch_size

    @property
    def noise_std(self) -> float:
        """sigma * C / B: std of one step's noise per element, before the learning rate."""
        return self.ctx.noise_multiplier * self.ctx.clip_norm / self.ctx.batch_size

    def row_gradients(self, fs: ForwardState, clipped: ClipResult, timer) -> SparseRows:
        """Coalesced row gradients on the table's device. The pooled gradient is still where
        it was computed; only what must cross to the table's device does (in hybrid, the
        coalesced rows)."""
        with timer.stage(Stage.GRAD_COALESCE):
            return self.ctx.sparse.bag_row_gradients(fs.rows, clipped.pooled_grad)

    def noise_seed(self, t: int, stream: int) -> int:
        return derive_seed(self.ctx.seed, t, stream)

    def dense_noise(self, target: torch.Tensor, std: float, seed: int, timer) -> None:
        if self.ctx.noise_mode == "off":
            return
        engine = self.ctx.engines.for_device(target.device)
        engine.add_noise(target, std, seed, timer, unit=self.ctx.noise_mode == "unit")

    def update_mlp(self, t: int, clipped: ClipResult, timer: StageTimer, noisy: bool) -> None:
        """MLPs: w -= lr/B * (sum clipped + N(0, sigma^2 C^2)), dense, every step."""
        scale = self.lr_over_batch(t)
        with timer.stage(Stage.NOISY_GRAD if noisy else Stage.PARAM_UPDATE):
            self.model.flat_params.add_(clipped.mlp_grad, alpha=-scale)
        if noisy:
            seed = self.noise_seed(t, STREAM_MLP)
            self.dense_noise(
                self.model.flat_params,
                -scale * self.ctx.noise_multiplier * self.ctx.clip_norm,
                seed,
                timer,
            )
