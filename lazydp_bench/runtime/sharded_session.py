"""One rank of a row-wise sharded run: the table split over the ranks
(`placement/sharded.py`), the MLPs replicated and data-parallel, N ranks == 1 rank bit
for bit.

The global batch is split into `groups` contiguous example groups (`example_groups`);
rank r of a world of N computes groups [r G/N, (r + 1) G/N). The dense part (forward,
per-example norms, clipping) runs one group at a time, so every group's kernels see the
same shapes however many ranks share the groups: per-example norms need only the
example's pooled-output gradient and its bags' multiplicities, all on the example's rank.
The MLP gradient is not all-reduced: an all-reduce sums in an order the backend picks, so
the per-group MLP gradients are all-gathered and every rank adds them up in group order.
That costs N x the MLP gradient's bytes instead of ~2 x, but keeps the replicated MLPs
identical on every rank and equal to one process computing the same G groups; the
reference of an N-rank run is one process with G = N groups (`verify --gpus N`).

What each algorithm adds on top (`UPDATES`, by algorithm name): nothing (sgd), dense
noise on every owned row each step (DP-SGD), or LazyDP's owed noise on the owned rows
the next batch reads, plus the flush. MLP noise is drawn on every rank with the same key
after the gradient sum, so the replicas stay equal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from lazydp_bench.config import LRSchedule
from lazydp_bench.data import Batch, Distribution, SyntheticBatchSource
from lazydp_bench.dp.clipping import get_clipping
from lazydp_bench.dp.noise.global_keyed import add_range_noise
from lazydp_bench.dp.seeds import derive_seed
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER, StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.dlrm import DLRM
from lazydp_bench.placement.sharded import Request, ShardedTable, ordered_sum
from lazydp_bench.placement.sharding import RowWiseLayout, example_groups
from lazydp_bench.runtime.distributed import Comm, Rank
from lazydp_bench.runtime.step_scalars import STREAM_FLUSH, STREAM_MLP, STREAM_SPARSE, STREAM_TABLE
from lazydp_bench.workloads import Workload

if TYPE_CHECKING:
    from lazydp_bench.runtime.trainer import RunPlan

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_groups(batch: int, groups: int, world: int) -> None:
    """Refuse a split the sharded step cannot make (before any process starts)."""
    if groups % world:
        raise BenchError(f"{groups} example groups cannot be split evenly over {world} ranks")
    if batch < groups:
        raise BenchError(f"a batch of {batch} cannot be split into {groups} example groups")


def pool(rows: torch.Tensor, values: torch.Tensor, bags: torch.Tensor) -> torch.Tensor:
    """Sum-pooled bags [B, T, D] from the unique rows' values, slot by slot in order (the
    same additions whatever else the rank looked up)."""
    picked = values[torch.searchsorted(rows, bags)]  # [B, T, L, D]
    acc = picked[:, :, 0].clone()
    for slot in range(1, bags.shape[-1]):
        acc = acc + picked[:, :, slot]
    return acc


def group_partials(
    bags: torch.Tensor, pooled_grad: torch.Tensor, unique: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One group's row gradients: each occurrence of a row in a bag gets the bag's pooled
    gradient; summed per row in occurrence order (`ordered_sum`; the group reads `unique`
    distinct rows, a count its request brought to the host)."""
    dim = pooled_grad.shape[-1]
    values = pooled_grad.unsqueeze(2).expand(*bags.shape, dim).reshape(-1, dim)
    return ordered_sum(bags.reshape(-1), values, unique)


@dataclass(frozen=True)
class StepKeys:
    """Step t's learning-rate factor and noise keys (the single-process streams)."""

    alpha: float  # -lr_t / B
    table: int
    mlp: int
    sparse: int

    @staticmethod
    def of(t: int, lr: float, batch: int, seed: int) -> StepKeys:
        keys = (derive_seed(seed, t, s) for s in (STREAM_TABLE, STREAM_MLP, STREAM_SPARSE))
        return StepKeys(-lr / batch, *keys)


class ShardedUpdate(ABC):
    """What an algorithm does to the owned rows after the gradient (none, dense, lazy)."""

    history: ClassVar[bool] = False
    private: ClassVar[bool] = True

    @abstractmethod
    def table_noise(self, s: ShardedSession, keys: StepKeys, ahead: Request, t: int) -> None: ...

    def finalize(self, s: ShardedSession) -> None:  # noqa: B027 (only LazyDP owes noise)
        """Noise owed at the end of training."""


class PlainUpdate(ShardedUpdate):
    private = False

    def table_noise(self, s, keys, ahead, t) -> None:
        return None


class DenseUpdate(ShardedUpdate):
    def table_noise(self, s, keys, ahead, t) -> None:
        s.table.dense_noise(keys.alpha * s.noise, keys.table, s.unit)


class LazyUpdate(ShardedUpdate):
    history = True

    def table_noise(self, s, keys, ahead, t) -> None:
        s.table.owed_noise(ahead, t + 1, s.prefix, s.noise / s.batch_size, keys.sparse, s.unit)

    def finalize(self, s) -> None:
        key = derive_seed(s.seed, STREAM_FLUSH, s.steps_done, 0)  # the one-process flush's form
        s.table.flush(s.steps_done, s.prefix, s.noise / s.batch_size, key, s.unit)


UPDATES: dict[str, type[ShardedUpdate]] = {
    "sgd": PlainUpdate,
    "dpsgd-b": DenseUpdate,
    "dpsgd-r": DenseUpdate,
    "dpsgd-f": DenseUpdate,
    "dpsgd-bk": DenseUpdate,
    "lazydp": LazyUpdate,
}


def sharded_update(algo: str) -> type[ShardedUpdate]:
    if algo not in UPDATES:
        raise BenchError(f"--gpus > 1 runs {', '.join(UPDATES)}; {algo!r} has no sharded step")
    return UPDATES[algo]


@dataclass(frozen=True, kw_only=True)
class ShardedSpec:
    """What every rank needs to build its part of a run (picklable: sent to workers)."""

    algo: str
    clipping: str
    workload: Workload
    batch_size: int
    pooling: int
    distribution: Distribution
    dtype: str
    seed: int
    lr: LRSchedule
    clip_norm: float
    noise_multiplier: float
    noise_mode: str
    total_steps: int
    groups: int

    @staticmethod
    def from_plan(plan: RunPlan, groups: int) -> ShardedSpec:
        cfg = plan.config
        return ShardedSpec(
            algo=cfg.algo,
            clipping=plan.clipping,
            workload=plan.workload,
            batch_size=plan.batch_size,
            pooling=plan.pooling,
            distribution=plan.distribution,
            dtype=cfg.dtype,
            seed=cfg.seed,
            lr=cfg.lr,
            clip_norm=cfg.privacy.clip_norm,
            noise_multiplier=plan.privacy.noise_multiplier if plan.privacy else 0.0,
            noise_mode=cfg.privacy.noise_mode,
            total_steps=cfg.total_steps,
            groups=groups,
        )


class ShardedSession:
    """One rank's table shard, MLP replica, batch source and step."""

    def __init__(self, spec: ShardedSpec, me: Rank) -> None:
        check_groups(spec.batch_size, spec.groups, me.world)
        wl, device = spec.workload, me.device
        dtype = DTYPES[spec.dtype]
        self.spec, self.me, self.seed = spec, me, spec.seed
        self.update = sharded_update(spec.algo)()
        self.comm = Comm(me)
        self.layout = RowWiseLayout(tuple(wl.rows), me.world)
        self.table = ShardedTable(
            self.layout,
            self.comm,
            dim=wl.dim,
            dtype=dtype,
            seed=spec.seed,
            history=self.update.history,
        )
        # the dense part's model: its table is a stride-0 stand-in of the global shape
        # (clipping modes read the row count); lookups go through the shards
        stand_in = torch.zeros((1, wl.dim), dtype=dtype, device=device).expand(wl.total_rows, -1)
        self.model = DLRM(wl, device, device, dtype, spec.seed, stand_in)
        self.source = SyntheticBatchSource(
            tuple(wl.rows),
            wl.dense_features,
            batch_size=spec.batch_size,
            pooling=spec.pooling,
            distribution=spec.distribution,
            table_device=device,
            mlp_device=device,
            dtype=dtype,
            seed=spec.seed,
        )
        per_rank = spec.groups // me.world
        bounds = example_groups(spec.batch_size, spec.groups)
        self.groups = bounds[me.rank * per_rank : (me.rank + 1) * per_rank]
        sizes = torch.tensor([hi - lo for lo, hi in self.groups])
        self.example_group = torch.repeat_interleave(torch.arange(per_rank), sizes).to(device)
        self.clip = get_clipping(spec.clipping)
        self.drawing = self.update.private and spec.noise_mode != "off"  # any noise at all
        self.noise = spec.noise_multiplier * spec.clip_norm  # sigma C: one step's noise std
        self.unit = spec.noise_mode == "unit"
        self.batch_size = spec.batch_size
        self.prefix = self._prefix(spec.total_steps) if self.update.history else None
        self.pending: Request | None = None
        self.steps_done = 0

    def _prefix(self, steps: int) -> torch.Tensor:
        """S1 (unit) or S2 of the learning rates over `steps` steps, float64 (LazyDP)."""
        lrs = torch.from_numpy(self.spec.lr.rates(np.arange(steps)))
        terms = lrs if self.unit else lrs.square()
        zero = torch.zeros(1, dtype=torch.float64)
        return torch.cat([zero, terms.cumsum(0)]).to(self.me.device)

    def _mine(self, batch: Batch) -> torch.Tensor:
        lo, hi = self.groups[0][0], self.groups[-1][1]
        return batch.rows[lo:hi]

    def step(self, t: int, timer: StageTimer = NULL_TIMER) -> None:
        if self.prefix is not None and self.prefix.shape[0] < t + 2:  # S[t + 1] is read
            self.prefix = self._prefix(2 * (t + 1))
        with timer.stage(Stage.DATA):
            batch = self.source.advance()
            ahead_rows = self._mine(self.source.peek())
        table = self.table
        with torch.no_grad():
            if self.pending is None:  # the first batch's ids (later: sent a step ahead)
                self.pending = self._request(self._mine(batch), timer)
            values = table.lookup(self.pending, timer)
            ahead = self._request(ahead_rows, timer)
        rows, grads, mlp = self._dense_part(batch, self.pending.rows, values, timer)
        keys = StepKeys.of(t, self.spec.lr.lr(t), self.batch_size, self.seed)
        with torch.no_grad():
            got_rows, got_values = table.push(self.pending, rows, grads, timer=timer)
            parts = self.comm.all_gather(mlp, timer) if self.comm.world > 1 else [mlp]
            with timer.stage(Stage.MODEL_UPDATE):
                with timer.stage(Stage.PARAM_UPDATE):
                    table.apply(got_rows, got_values, keys.alpha)
                if self.drawing:
                    with timer.stage(Stage.NOISY_UPDATE_FUSED):
                        self.update.table_noise(self, keys, ahead, t)
                self._update_mlp(parts, keys, timer)
        self.pending = ahead
        self.steps_done = t + 1

    def _request(self, rows: torch.Tensor, timer: StageTimer) -> Request:
        return self.table.request(rows, self.example_group, groups=len(self.groups), timer=timer)

    def _dense_part(self, batch: Batch, rows, values, timer):
        """Forward, clipping and the row gradients of this rank's groups, one at a time:
        (rows, row gradients) in group order, and the groups' MLP gradients [g, P]."""
        all_rows, all_grads, mlp = [], [], []
        for (lo, hi), unique in zip(self.groups, self.pending.group_rows, strict=True):
            sub = Batch(batch.dense[lo:hi], batch.labels[lo:hi], batch.rows[lo:hi])
            with timer.stage(Stage.FORWARD), torch.no_grad():
                pooled = pool(rows, values, sub.rows)
            with timer.stage(Stage.FORWARD):
                fs = self.model.forward(sub, pooled)
            clipped = self.clip(self.model, fs, self.spec.clip_norm, timer)
            with timer.stage(Stage.MODEL_UPDATE), timer.stage(Stage.GRAD_COALESCE):
                r, g = group_partials(sub.rows, clipped.pooled_grad.detach(), unique)
            all_rows.append(r)
            all_grads.append(g)
            mlp.append(clipped.mlp_grad.detach())
        return torch.cat(all_rows), torch.cat(all_grads), torch.stack(mlp)

    def _update_mlp(self, parts: list[torch.Tensor], keys: StepKeys, timer: StageTimer) -> None:
        """MLPs += alpha * (group gradients summed in group order) + noise (same key on
        every rank, so the replicas stay equal)."""
        with timer.stage(Stage.NOISY_GRAD if self.drawing else Stage.PARAM_UPDATE):
            groups = [g for part in parts for g in part]
            total = groups[0]
            for g in groups[1:]:
                total = total + g
            flat = self.model.flat_params
            flat.add_(total * keys.alpha)
        if self.drawing:
            with timer.stage(Stage.NOISY_UPDATE_FUSED):
                add_range_noise(
                    flat.view(-1, 1), 0, keys.alpha * self.noise, keys.mlp, unit=self.unit
                )

    def finalize(self) -> None:
        """Work owed at the end of training (LazyDP's flush, per rank)."""
        if self.drawing:
            with torch.no_grad():
                self.update.finalize(self)

    def gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(full table, MLP parameters), identical on every rank."""
        return self.table.gather(), self.model.flat_params.detach().clone()
