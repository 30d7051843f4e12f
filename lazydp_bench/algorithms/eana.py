"""EANA (embedding-aware noise addition): noise only on the rows read this step.

Fast, and NOT DP-SGD-equivalent: which rows get noise depends on the data. Its records
say so (`privacy.dp_equivalent: false`) and no epsilon is reported for it.
"""

from __future__ import annotations

import torch

from lazydp_bench.algorithms.base import Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.profiling import NULL_TIMER
from lazydp_bench.stages import Stage


@register
class EANA(Algorithm):
    name = "eana"
    summary = "EANA: noise only on rows read this step (NOT DP-SGD-equivalent)"
    default_clipping = "ghost"
    dp_equivalent = False

    def update(self, fs, clipped, next_batch, timer) -> None:
        grads = self.row_gradients(fs, clipped, timer)
        table = self.model.table
        with timer.stage(Stage.NOISE_SAMPLING):
            noise = torch.zeros_like(grads.values)
            std = grads.valid.to(noise.dtype).mul_(self.noise_std)
            self.add_noise(noise, std, self.scalar("seed_sparse", noise.device), NULL_TIMER)
        with timer.stage(Stage.NOISY_GRAD):
            grads.values.add_(noise)
        with timer.stage(Stage.PARAM_UPDATE):
            self.ctx.sparse.add_rows(table, grads, self.scalar("alpha", table.device))
        self.update_mlp(clipped, timer, noisy=True)
