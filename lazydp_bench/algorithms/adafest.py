"""DP-FEST and DP-AdaFEST: Gaussian noise only on selected embedding rows.

Source: Ghazi et al., "Sparsity-Preserving Differentially Private Training of Large
Embedding Models", NeurIPS 2023 (arXiv 2311.08357); TensorFlow Privacy's implementation
(`tensorflow_privacy/privacy/keras_models/dp_keras_model.py` with
`privacy/sparsity_preserving_noise/`). The selection math is in `dp/selection.py`.

- `dp-fest`: a fixed set of rows, the top `fest_fraction` of each table by the public
  (synthetic source's) expected frequency, is trained with DP-SGD: clipped gradient plus
  N(0, sigma^2 C^2) on those rows every step; every other row is frozen (its gradient
  is dropped). The selection is public, so the accounting is DP-SGD's at sigma.
- `dp-adafest`: each step, each example's contribution map (its row counts over all
  tables) is normalised to sum C1; V_j = sum_i v_ij + N(0, sigma_sel^2 C1^2) for the rows
  the batch touches, which are selected when V_j >= tau; a row no example touched is
  selected with p = P(N(0, sigma_sel^2 C1^2) >= tau), drawn by geometric skips (no
  per-row noise). The clipped gradient (C2 = `--clip-norm`) plus N(0, sigma_grad^2 C2^2)
  goes to the selected rows only; the MLPs get DP-SGD's dense noise at sigma_grad. The
  two mechanisms compose to one of sigma (`split_noise_multiplier`), so the run's epsilon
  is DP-SGD's at sigma.
- `dp-adafest-plus`: AdaFEST whose candidates are FEST's rows only.

None of them is DP-SGD-equivalent (the trained model is not distributed as DP-SGD's):
records say `privacy.dp_equivalent: false`. Selection counts are kept on the device and
read once, by `record_extras`.

Placement: the selection runs where the row gradients are (the MLPs' device: the GPU in
`hybrid`), from the batch's indices, and its noise is drawn there for the selected rows
only. Every table change is a row update handed to `SparseOps.add_rows` with its valid
slots first (which, for a host table, ships only those rows) or, for FEST's rows, an
`OwedNoise` request to the placement (`Placement.add_row_noise`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import torch

from lazydp_bench.algorithms.base import AlgoContext, Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.config import RunConfig, SparsityConfig
from lazydp_bench.data.distributions import Distribution
from lazydp_bench.dp import selection
from lazydp_bench.dp.seeds import derive_seed
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.measure.stages import Stage
from lazydp_bench.placement.base import OwedNoise, UpdateTools
from lazydp_bench.runtime.sparse import SparseRows, valid_first
from lazydp_bench.units import format_bytes

# Key streams of the selection's draws, apart from step_scalars' STREAM_* (0-3).
STREAM_SELECT, STREAM_FP_SKIPS, STREAM_FP_NOISE, STREAM_FEST_NOISE = 16, 17, 18, 19
# Per-step counts summed on the device (`_stats`), in this order.
STATS = ("touched", "true_positives", "false_positives", "capacity_short")


class SparseSelectionDP(Algorithm):
    """What DP-FEST and DP-AdaFEST share: the parameters, the row-noise helpers and the
    selection counters."""

    default_clipping = "ghost"
    dp_equivalent = False
    sigma_accounted = True
    graphable = False  # the selection's keys are Python ints derived each step
    candidates_fest: ClassVar[bool] = False  # candidates: FEST's rows (else every row)

    def __init__(self, ctx: AlgoContext) -> None:
        self.params = ctx.sparsity or SparsityConfig()
        self.sigma = ctx.noise_multiplier
        super().__init__(replace(ctx, noise_multiplier=self.gradient_multiplier(self.sigma)))
        self.check_optimizer(ctx.lr.momentum, ctx.lr.weight_decay)
        self.table_rows = self.model.table.shape[0]
        self.device = self.model.mlp_device  # where the row gradients and selection are
        self.fest = self._fest(ctx.distribution) if self.candidates_fest else None
        self._stats = torch.zeros(len(STATS), dtype=torch.int64, device=self.device)

    @classmethod
    def check_run(cls, config: RunConfig, *, placement: str, clipping: str) -> None:
        if cls.candidates_fest and config.data is not None:
            raise BenchError(
                f"{cls.name!r} picks its rows from the synthetic source's public frequencies: "
                "it does not run on --data files"
            )

    def gradient_multiplier(self, sigma: float) -> float:
        """The multiplier of the gradient noise (rows and MLPs)."""
        return sigma

    def _fest(self, dist: Distribution | None) -> torch.Tensor:
        rows = self.model.workload.rows
        dist = dist or Distribution("uniform")
        return selection.fest_rows(rows, dist, self.params.fest_fraction, self.device)

    def _key(self, stream: int) -> int:
        return derive_seed(self.ctx.seed, self.scalars.t, stream)

    def _count(self, **counts: torch.Tensor) -> None:
        """Add this step's counts to the device counters (no host sync)."""
        for name, value in counts.items():
            self._stats[STATS.index(name)] += value

    def _apply(self, update: SparseRows, *, masked: bool = False) -> None:
        """table[rows] += alpha * values on the valid slots of `update`. On the device path
        they go first (`valid_first` moves a `masked` update's there): a host table
        receives only that prefix. A host-path update keeps only its valid slots (the
        host's threaded update needs unique rows)."""
        table = self.model.table
        if not self.ctx.sparse.device_path(update.rows):
            v = update.valid
            update = SparseRows(update.rows[v], update.values[v], update.valid[v])
        elif masked:
            update = valid_first(update)
        self.ctx.sparse.add_rows(table, update, self.scalar("alpha", table.device))

    def _noisy_rows(self, rows: torch.Tensor, valid: torch.Tensor, stream: int) -> SparseRows:
        """Rows carrying only gradient noise N(0, sigma_grad^2 C^2) (0 in invalid slots,
        which follow the valid ones); invalid slots are pointed at spread-out rows, where
        they add zeros."""
        table = self.model.table
        spread = torch.arange(rows.numel(), device=rows.device) % self.table_rows
        rows = torch.where(valid, rows, spread)
        values = torch.zeros((rows.numel(), table.shape[1]), dtype=table.dtype, device=rows.device)
        std = valid.to(table.dtype).mul_(self.ctx.noise_multiplier * self.ctx.clip_norm)
        self.add_noise(values, std, self._key(stream), NULL_TIMER)
        return SparseRows(rows, values, valid)

    def record_extras(self) -> dict[str, dict]:
        """The parameters (config.sparsity) and the per-step means of the selection
        (section `sparsity`), read from the device once."""
        steps = max(1, self.steps_done)
        stats = dict(zip(STATS, self._stats.tolist(), strict=True))
        dim = self.model.table.shape[1]
        selected = (stats["true_positives"] + stats["false_positives"]) / steps
        return {
            "memory": {"history_table_bytes": None},
            "config": {"sparsity": self.parameters()},
            "sparsity": {
                "steps": self.steps_done,
                "rows_touched_per_step": stats["touched"] / steps,
                "true_positives_per_step": stats["true_positives"] / steps,
                "false_positives_per_step": stats["false_positives"] / steps,
                "rows_selected_per_step": selected,
                "grad_elements_per_step": selected * dim,
                "dense_grad_elements": self.table_rows * dim,
                "grad_size_fraction": selected / self.table_rows,
                "fp_capacity": getattr(self, "fp_capacity", None),
                "fp_capacity_short_steps": stats["capacity_short"],
            },
        }

    def parameters(self) -> dict:
        out = {"noise_multiplier": self.sigma, "sigma_grad": self.ctx.noise_multiplier}
        if self.fest is not None:
            out.update(fest_fraction=self.params.fest_fraction, fest_rows=self.fest.numel())
        return out


@register
class DPFEST(SparseSelectionDP):
    name = "dp-fest"
    label = "DP-FEST (not DP-SGD-eq.)"
    color = "#44AA99"
    plot_order = 8
    summary = "DP-FEST: DP-SGD on a fixed public top-k of rows, others frozen (NOT DP-SGD-eq.)"
    candidates_fest = True

    def __init__(self, ctx: AlgoContext) -> None:
        super().__init__(ctx)
        # the FEST rows where the placement draws their noise (the host in hybrid-host)
        self.noise_rows = self.fest.to(ctx.placement.work_device)

    def update(self, fs, clipped, next_batch, timer) -> None:
        """table[fest rows] -= lr/B (clipped gradient + N(0, sigma^2 C^2)); the gradient of
        any other row is dropped. The noise goes to every FEST row, in chunks of rows
        bounded by --chunk-size, each chunk with its own 64-bit key."""
        grads = self.row_gradients(fs, clipped, timer)
        with timer.stage(Stage.SELECTION):
            keep = grads.valid & selection.member_of(grads.rows, self.fest)
            grads.values.mul_(keep.unsqueeze(1).to(grads.values.dtype))
            kept = keep.sum()
            fest = self.fest.numel()
            self._count(touched=grads.valid.sum(), true_positives=kept, false_positives=fest - kept)
        with timer.stage(Stage.NOISY_GRAD):
            self._apply(SparseRows(grads.rows, grads.values, keep), masked=True)
        with timer.stage(Stage.NOISE_SAMPLING):
            self._fest_noise()
        self.update_mlp(clipped, timer, noisy=True)

    def _fest_noise(self) -> None:
        """N(0, sigma^2 C^2) times lr/B on every FEST row: one `OwedNoise` request per chunk
        of rows (at most --chunk-size of noise each, its own 64-bit key), which the
        placement adds (in place, or as a row update into a host table)."""
        if self.ctx.noise_mode == "off":
            return
        table, fest = self.model.table, self.noise_rows
        std = float(self.scalar("noise_alpha", table.device).value)
        per = self.ctx.engines.for_device(fest.device).rows_per_chunk(table)
        base = self._key(STREAM_FEST_NOISE)
        alpha = lambda device: self.scalar("alpha", device)  # noqa: E731
        tools = UpdateTools(table, self.ctx.sparse, self.ctx.engines, alpha, NULL_TIMER)
        for k, start in enumerate(range(0, fest.numel(), per)):
            rows = fest[start : start + per]
            stds = torch.full((rows.numel(),), std, dtype=table.dtype, device=fest.device)
            slots = SparseRows(rows, None, torch.ones_like(rows, dtype=torch.bool))
            owed = OwedNoise(slots, ((stds, derive_seed(base, k)),), self.ctx.noise_mode == "unit")
            self.ctx.placement.add_row_noise(owed, tools)


@register
class DPAdaFEST(SparseSelectionDP):
    name = "dp-adafest"
    label = "DP-AdaFEST (not DP-SGD-eq.)"
    color = "#882255"
    plot_order = 9
    summary = "DP-AdaFEST: noisy per-step row selection, noise on selected rows (NOT DP-SGD-eq.)"

    def __init__(self, ctx: AlgoContext) -> None:
        super().__init__(ctx)
        self.sigma_sel = selection.split_noise_multiplier(
            self.sigma, self.params.selection_fraction
        )[0]
        candidates = self.fest.numel() if self.fest is not None else self.table_rows
        self.fp_probability = selection.false_positive_probability(
            self.params.tau, self.sigma_sel * self.params.c1, ctx.noise_mode
        )
        self.fp_capacity = selection.false_positive_capacity(candidates, self.fp_probability)
        self._check_capacity()

    def _check_capacity(self) -> None:
        """Refuse a threshold whose false positives would need a noise buffer larger than
        the run's bound on any noise buffer (`--chunk-size`): at tau near or below 0 it
        approaches a table-sized temporary."""
        table = self.model.table
        need = self.fp_capacity * table.shape[1] * table.element_size()
        bound = self.ctx.engines.cpu.chunk_bytes
        if need > bound:
            raise BenchError(
                f"{self.name}: tau {self.params.tau:g} selects each untouched row with "
                f"p = {self.fp_probability:.3g}, up to {self.fp_capacity:,} rows a step "
                f"({format_bytes(need)} of noise rows, above --chunk-size "
                f"{format_bytes(bound)}); raise --tau"
            )

    def gradient_multiplier(self, sigma: float) -> float:
        return selection.split_noise_multiplier(sigma, self.params.selection_fraction)[1]

    def parameters(self) -> dict:
        return {
            **super().parameters(),
            "tau": self.params.tau,
            "c1": self.params.c1,
            "selection_fraction": self.params.selection_fraction,
            "sigma_sel": self.sigma_sel,
            "fp_probability": self.fp_probability,
        }

    def update(self, fs, clipped, next_batch, timer) -> None:
        """Select, then table[selected] -= lr/B (clipped gradient + N(0, sigma_grad^2 C^2)):
        touched rows keep their gradient only if selected; false positives get noise only."""
        grads = self.row_gradients(fs, clipped, timer)
        with timer.stage(Stage.SELECTION):
            keep = self.select_touched(fs.rows, grads)
            fp_rows, fp_valid = self.false_positives(grads)
            self._count(touched=grads.valid.sum(), true_positives=keep.sum())
        with timer.stage(Stage.NOISE_SAMPLING):
            values = grads.values.mul_(keep.unsqueeze(1).to(grads.values.dtype))
            std = keep.to(values.dtype).mul_(self.ctx.noise_multiplier * self.ctx.clip_norm)
            self.add_noise(values, std, self.scalar("seed_sparse", values.device), NULL_TIMER)
            extra = None
            if fp_rows is not None:
                extra = self._noisy_rows(fp_rows, fp_valid, STREAM_FP_NOISE)
        with timer.stage(Stage.PARAM_UPDATE):
            self._apply(SparseRows(grads.rows, values, keep), masked=True)
            if extra is not None:
                self._apply(extra)
        self.update_mlp(clipped, timer, noisy=True)

    def candidate(self, grads: SparseRows) -> torch.Tensor:
        """Which touched slots may be selected (every valid one; Plus: FEST's rows)."""
        if self.fest is None:
            return grads.valid
        return grads.valid & selection.member_of(grads.rows, self.fest)

    def select_touched(self, batch_rows: torch.Tensor, grads: SparseRows) -> torch.Tensor:
        """V_j = C1 count_j / (T L) + N(0, sigma_sel^2 C1^2) >= tau for each touched row j:
        every example reads T L rows, so TF Privacy's per-example normalisation (counts
        divided by their sum, times C1) is the factor C1 / (T L)."""
        counts = selection.touch_counts(batch_rows, grads)
        dtype, c1 = self.model.table.dtype, self.params.c1
        value = counts.to(dtype).mul_(c1 / (batch_rows.shape[1] * batch_rows.shape[2]))
        cand = self.candidate(grads)
        std = cand.to(dtype).mul_(self.sigma_sel * c1)
        self.add_noise(value.view(-1, 1), std, self._key(STREAM_SELECT), NULL_TIMER)
        return cand & (value >= self.params.tau)

    def false_positives(self, grads: SparseRows) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Rows no example touched, each selected with probability p: `fp_capacity` ranks
        among the untouched candidates by geometric skips, mapped to rows (valid: the
        ranks below the untouched count). Counts them and any capacity shortfall."""
        if self.fp_capacity == 0:
            return None, grads.valid[:0]
        device = grads.rows.device
        touched, n_candidates, to_row = self._candidate_space(grads)
        gen = selection.keyed_generator(device, self._key(STREAM_FP_SKIPS))
        uniform = 1.0 - torch.rand(
            self.fp_capacity, dtype=torch.float64, device=device, generator=gen
        )
        ranks = selection.geometric_ranks(uniform, self.fp_probability, n_candidates)
        untouched = n_candidates - touched.valid.sum()
        valid = ranks < untouched
        index = selection.untouched_rows(ranks.clamp(max=n_candidates - 1), touched)
        rows = to_row(index.clamp_(max=n_candidates - 1))
        short = (ranks[-1] < untouched - 1).long()
        self._count(false_positives=valid.sum(), capacity_short=short)
        return rows, valid

    def _candidate_space(self, grads: SparseRows):
        """The touched candidates as sorted unique indices into the candidate list (valid
        prefix), the candidate count, and the map from index to row."""
        if self.fest is None:
            return grads, self.table_rows, lambda index: index
        fest = self.fest
        member = self.candidate(grads)
        index = torch.searchsorted(fest, grads.rows)
        big = torch.iinfo(index.dtype).max
        ordered = torch.sort(torch.where(member, index, big)).values
        return SparseRows(ordered, None, ordered < big), fest.numel(), lambda i: fest[i]


@register
class DPAdaFESTPlus(DPAdaFEST):
    name = "dp-adafest-plus"
    label = "DP-AdaFEST+ (not DP-SGD-eq.)"
    color = "#AA4499"
    plot_order = 10
    summary = "DP-AdaFEST+: FEST's public top-k, then AdaFEST's selection (NOT DP-SGD-eq.)"
    candidates_fest = True
