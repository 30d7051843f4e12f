"""Non-private SGD: only the looked-up rows change (coalesce, then one sparse update)."""

from __future__ import annotations

from lazydp_bench.algorithms.base import Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.measure.stages import Stage


@register
class SGD(Algorithm):
    name = "sgd"
    label = "SGD"
    color = "#0072B2"
    plot_order = 0
    summary = "non-private SGD; sparse embedding update (the baseline step time)"
    default_clipping = "none"
    private = False
    dp_equivalent = None

    def update(self, fs, clipped, next_batch, timer) -> None:
        grads = self.row_gradients(fs, clipped, timer)
        table = self.model.table
        with timer.stage(Stage.PARAM_UPDATE):
            self.ctx.sparse.add_rows(table, grads, self.scalar("alpha", table.device))
        self.update_mlp(clipped, timer, noisy=False)
