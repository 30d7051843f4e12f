"""DP-SGD with dense noise on every parameter every step, in the paper's four variants.

w <- w - lr/B * (sum_i clip(g_i) + N(0, sigma^2 C^2 I)) for the MLPs and for EVERY
embedding row. The clipped gradient is merged sparsely (`noisy_grad`: only looked-up rows
carry gradient); the noise is one dense pass over the table through the noise engine,
whose time is the paper's noise sampling + parameter update (or the fused stage).
"""

from __future__ import annotations

from lazydp_bench.algorithms.base import Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.measure.stages import Stage


class DenseDPSGD(Algorithm):
    def update(self, fs, clipped, next_batch, timer) -> None:
        grads = self.row_gradients(fs, clipped, timer)
        table = self.model.table
        with timer.stage(Stage.NOISY_GRAD):
            self.ctx.sparse.add_rows(table, grads, self.scalar("alpha", table.device))
        std = self.scalar("noise_alpha", table.device)
        self.add_table_noise(std, self.scalar("seed_table", table.device), timer)
        self.update_mlp(clipped, timer, noisy=True)


@register
class DPSGDBasic(DenseDPSGD):
    name = "dpsgd-b"
    label = "DP-SGD(B)"
    color = "#E69F00"
    plot_order = 1
    summary = "DP-SGD(B): materialized per-example gradients, dense noise"
    default_clipping = "materialize"


@register
class DPSGDReweighted(DenseDPSGD):
    name = "dpsgd-r"
    label = "DP-SGD(R)"
    color = "#009E73"
    plot_order = 2
    summary = "DP-SGD(R): per-example norms + reweighted second backward, dense noise"
    default_clipping = "reweight"


@register
class DPSGDFast(DenseDPSGD):
    name = "dpsgd-f"
    label = "DP-SGD(F)"
    color = "#D55E00"
    plot_order = 3
    summary = "DP-SGD(F): ghost norms + reweighted second backward, dense noise (paper baseline)"
    default_clipping = "ghost"


@register
class DPSGDBookKeeping(DenseDPSGD):
    name = "dpsgd-bk"
    label = "DP-SGD(BK)"
    color = "#CC79A7"
    plot_order = 4
    summary = "DP-SGD with book-keeping: ghost norms, clipped grads in one backward, dense noise"
    default_clipping = "bookkeeping"
