"""EANA (embedding-aware noise addition): noise only on the rows read this step.

Fast, and NOT DP-SGD-equivalent: which rows get noise depends on the data. Its records
say so (`privacy.dp_equivalent: false`) and no epsilon is reported for it.
"""

from __future__ import annotations

from lazydp_bench.algorithms.base import Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.measure.stages import Stage


@register
class EANA(Algorithm):
    name = "eana"
    label = "EANA (not DP-SGD-eq.)"
    color = "#56B4E9"
    plot_order = 5
    summary = "EANA: noise only on rows read this step (NOT DP-SGD-equivalent)"
    default_clipping = "ghost"
    dp_equivalent = False

    def update(self, fs, clipped, next_batch, timer) -> None:
        """table[rows] -= lr/B * (clipped gradient sum + N(0, sigma^2 C^2)) on the rows read
        this step: the noise is drawn straight into the coalesced gradient rows (padded
        slots get none), then one sparse update applies both."""
        grads = self.row_gradients(fs, clipped, timer)
        table = self.model.table
        sum_std = self.ctx.noise_multiplier * self.ctx.clip_norm  # noise of a SUM of grads
        with timer.stage(Stage.NOISE_SAMPLING):  # drawn and added in one engine call
            std = grads.valid.to(grads.values.dtype).mul_(sum_std)
            seed = self.scalar("seed_sparse", grads.values.device)
            self.add_noise(grads.values, std, seed, NULL_TIMER)
        with timer.stage(Stage.PARAM_UPDATE):
            self.ctx.sparse.add_rows(table, grads, self.scalar("alpha", table.device))
        self.update_mlp(clipped, timer, noisy=True)
