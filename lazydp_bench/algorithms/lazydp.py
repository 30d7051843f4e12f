"""LazyDP: lazy noise update + aggregated noise sampling (ANS), exact to DP-SGD.

A row's value only matters when it is read, so the noise DP-SGD would add to it every
step is owed, not written: the HistoryTable HT[r] counts the steps whose noise row r has
received. In step t, once the clipped gradient is ready, the rows the NEXT batch reads
(the input queue, from the batch source's look-ahead) receive the noise of steps
HT[r] .. t in ONE draw per element, N(0, (sigma C / B)^2 * sum_s lr_s^2) (ANS), merged
with the gradient into one coalesced sparse update; then HT[r] = t + 1. A prefix sum of
lr_s^2 keeps a learning-rate schedule exact. `finalize()` flushes every row's pending
noise (dense, chunked), so the released model is distributed exactly as DP-SGD's.

`lazydp-noans` keeps the lazy update but draws each pending step's noise separately, to
show what aggregation buys. Momentum and weight decay would break the equivalence; the
tool's SGD has neither, and `LazyDP.check_optimizer` refuses them with the reason.
"""

from __future__ import annotations

import time

import torch

from lazydp_bench.algorithms.base import STREAM_FLUSH, STREAM_SPARSE, AlgoContext, Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.errors import BenchError
from lazydp_bench.noise.base import derive_seed
from lazydp_bench.profiling import NULL_TIMER, StageTimer
from lazydp_bench.stages import Stage


def history_dtype(total_steps: int) -> torch.dtype:
    return torch.int32 if total_steps < 2**31 - 1 else torch.int64


class LazyDP(Algorithm):
    history_table = True
    aggregate = True

    def __init__(self, ctx: AlgoContext):
        super().__init__(ctx)
        self.check_optimizer(ctx.lr.momentum, ctx.lr.weight_decay)
        table = self.model.table
        self.history = torch.zeros(
            table.shape[0], dtype=history_dtype(ctx.total_steps), device=table.device
        )
        self._prefix_steps = -1
        self._extend_prefix(ctx.total_steps)
        self.flush_ms: float | None = None

    @staticmethod
    def check_optimizer(momentum: float, weight_decay: float) -> None:
        if momentum != 0 or weight_decay != 0:
            raise BenchError(
                "LazyDP is DP-SGD-equivalent only for plain SGD: momentum and weight decay "
                "make a row's update depend on steps it was not read in"
            )

    # ----- pending-noise accounting ---------------------------------------------------
    def _extend_prefix(self, steps: int) -> None:
        """S1[k] = sum_{s<k} lr_s and S2[k] = sum_{s<k} lr_s^2, on the table's device."""
        if steps <= self._prefix_steps:
            return
        lrs = torch.tensor([self.ctx.lr.lr(s) for s in range(steps)], dtype=torch.float64)
        zero = torch.zeros(1, dtype=torch.float64)
        device = self.model.table.device
        self._s1 = torch.cat([zero, lrs.cumsum(0)]).to(device)
        self._s2 = torch.cat([zero, lrs.square().cumsum(0)]).to(device)
        self._lrs = lrs.to(device)
        self._prefix_steps = steps

    def pending_terms(self, last: torch.Tensor, upto: int) -> list[torch.Tensor]:
        """Per-row std of each independent draw owed for steps last..upto-1 (>= 0).

        With ANS this is one term, (sigma C / B) sqrt(S2[upto] - S2[last]); in unit mode
        the draws are all 1, so the aggregate is the plain sum (sigma C / B)(S1[upto] - S1[last]).
        """
        self._extend_prefix(upto)
        last = last.long()
        base = self.noise_std
        unit = self.ctx.noise_mode == "unit"
        if self.aggregate:
            if unit:
                owed = self._s1[upto] - self._s1[last]
            else:
                owed = (self._s2[upto] - self._s2[last]).clamp_(min=0).sqrt_()
            return [(owed * base).to(self.model.dtype)]
        return [((last <= s) * (self._lrs[s] * base)).to(self.model.dtype) for s in range(upto)]

    def _add_owed(
        self, target: torch.Tensor, terms: list[torch.Tensor], seed: int, timer: StageTimer
    ) -> None:
        """target -= sum_k terms[k] * z_k (z_k independent standard normals, or 1s)."""
        if self.ctx.noise_mode == "off":
            return
        engine = self.ctx.engines.for_device(target.device)
        unit = self.ctx.noise_mode == "unit"
        for k, std in enumerate(terms):
            engine.add_noise(target, -std, derive_seed(seed, k), timer, unit=unit)

    # ----- the step -------------------------------------------------------------------
    def update(self, t, fs, clipped, next_batch, timer) -> None:
        scale = self.lr_over_batch(t)
        grads = self.row_gradients(fs, clipped, timer)
        with timer.stage(Stage.LAZYDP_OVERHEAD):
            queue = self.ctx.sparse.unique(next_batch.rows)  # input queue: rows read at t + 1
            last = self.history[queue.rows]
            self.history.index_fill_(0, queue.rows, t + 1)
            terms = [std * queue.valid for std in self.pending_terms(last, t + 1)]
        with timer.stage(Stage.NOISE_SAMPLING):
            noise = torch.zeros(
                (queue.rows.numel(), self.model.table.shape[1]),
                dtype=self.model.dtype,
                device=self.model.table.device,
            )
            self._add_owed(noise, terms, self.noise_seed(t, STREAM_SPARSE), NULL_TIMER)
        with timer.stage(Stage.NOISY_GRAD):
            merged = self.ctx.sparse.merge(grads, -scale, queue.rows, noise)
        with timer.stage(Stage.PARAM_UPDATE):
            self.ctx.sparse.add_rows(self.model.table, merged)
        self.update_mlp(t, clipped, timer, noisy=True)

    def flush(self) -> None:
        """Give every row all its pending noise; idempotent (a second flush adds nothing)."""
        table, upto = self.model.table, self.steps_done
        step = max(1, self.ctx.engines.for_device(table.device).rows_per_chunk(table))
        for chunk, start in enumerate(range(0, table.shape[0], step)):
            stop = min(table.shape[0], start + step)
            terms = self.pending_terms(self.history[start:stop], upto)
            seed = derive_seed(self.ctx.seed, STREAM_FLUSH, upto, chunk)
            self._add_owed(table[start:stop], terms, seed, NULL_TIMER)
            self.history[start:stop] = upto

    def finalize(self) -> float:
        """Flush and time it (synchronized wall clock); called at the end of every run."""
        sync = self.model.table.device.type == "cuda"
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            self.flush()
        if sync:
            torch.cuda.synchronize()
        self.flush_ms = (time.perf_counter() - start) * 1e3
        return self.flush_ms

    def record_extras(self) -> dict:
        return {"history_table_bytes": self.history.numel() * self.history.element_size()}


@register
class LazyDPAns(LazyDP):
    name = "lazydp"
    summary = "LazyDP: lazy noise update + aggregated noise sampling (DP-SGD-equivalent)"
    default_clipping = "ghost"


@register
class LazyDPNoAns(LazyDP):
    name = "lazydp-noans"
    summary = "LazyDP without aggregation: one draw per pending step (shows what ANS buys)"
    default_clipping = "ghost"
    aggregate = False
