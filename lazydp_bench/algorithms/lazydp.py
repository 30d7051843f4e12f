"""LazyDP: lazy noise update + aggregated noise sampling (ANS), exact to DP-SGD.

A row's value only matters when it is read, so the noise DP-SGD would add to it every
step is owed, not written: the HistoryTable HT[r] counts the steps whose noise row r has
received. In step t, once the clipped gradient is ready, the rows the NEXT batch reads
(the input queue, from the batch source's look-ahead) are given the noise of steps
HT[r] .. t in ONE draw per element (into the table, or, with `carried`, into step t + 1's
lookup and update), N(0, (sigma C / B)^2 * sum_s lr_s^2) (ANS); then
HT[r] = t + 1. A prefix sum of lr_s^2 keeps a learning-rate schedule exact. `finalize()`
flushes every row's pending noise (dense, chunked), so the released model is distributed
exactly as DP-SGD's.

HT lives where the placement runs the per-step noise work (`placement.work_device`: with
the table, except in hybrid placement, where the GPU holds HT, 0.78 % of the table, and
draws the queue's noise). Each step hands the placement an `OwedNoise` request (the queue's
rows and the std of each draw they owe); the placement's delivery puts it into the table
(`in-place` on the GPU, `carried` to the next step in hybrid, `merged` with the gradient on the
host: `placement/`), and the record names it (`config.noise_update`).

`lazydp-noans` keeps the lazy update but draws each pending step's noise separately, to
show what aggregation buys. Momentum and weight decay would break the equivalence; the
tool's SGD has neither, and `LazyDP.check_optimizer` refuses them with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from lazydp_bench.algorithms.base import AlgoContext, Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.dp.owed_noise import owed_std, owed_sum
from lazydp_bench.dp.seeds import derive_seed
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.measure.stages import Stage
from lazydp_bench.placement.base import OwedNoise, UpdateTools
from lazydp_bench.runtime.sparse import SparseRows
from lazydp_bench.runtime.step_scalars import STREAM_FLUSH, Scalar


def history_dtype(total_steps: int) -> torch.dtype:
    return torch.int32 if total_steps < 2**31 - 1 else torch.int64


class LazyDP(Algorithm):
    history_table = True
    aggregate = True

    def __init__(self, ctx: AlgoContext):
        super().__init__(ctx)
        self.check_optimizer(ctx.lr.momentum, ctx.lr.weight_decay)
        self.device = ctx.placement.work_device
        self.delivery = ctx.placement.owed_noise_delivery(ctx.sparse, self.model.table)
        self.noise_update = self.delivery.mode
        self.history = torch.zeros(
            self.model.table.shape[0], dtype=history_dtype(ctx.total_steps), device=self.device
        )
        self._prefix_steps = -1
        self._extend_prefix(ctx.total_steps)
        self.flush_ms: float | None = None

    @classmethod
    def check_optimizer(cls, momentum: float, weight_decay: float) -> None:
        if momentum != 0 or weight_decay != 0:
            raise BenchError(
                "LazyDP is DP-SGD-equivalent only for plain SGD: momentum and weight decay "
                "make a row's update depend on steps it was not read in"
            )

    # ----- pending-noise accounting ---------------------------------------------------
    def _extend_prefix(self, steps: int) -> None:
        """S1[k] = sum_{s<k} lr_s and S2[k] = sum_{s<k} lr_s^2, on the work device."""
        if steps <= self._prefix_steps:
            return
        lrs = torch.from_numpy(self.ctx.lr.rates(np.arange(steps)))
        zero = torch.zeros(1, dtype=torch.float64)
        self._s1 = torch.cat([zero, lrs.cumsum(0)]).to(self.device)
        self._s2 = torch.cat([zero, lrs.square().cumsum(0)]).to(self.device)
        self._lrs = lrs.to(self.device)
        self._prefix_steps = steps

    def pending_terms(self, last: torch.Tensor, upto: int | Scalar) -> list[torch.Tensor]:
        """Per-row std of each independent draw owed for steps last..upto-1 (>= 0).

        With ANS this is one term, (sigma C / B) sqrt(S2[upto] - S2[last]); in unit mode
        the draws are all 1, so the aggregate is the plain sum (sigma C / B)(S1[upto] - S1[last]).
        `upto` is read from device memory (a graph replays it); only lazydp-noans, which is
        not graphable, loops over its Python value.
        """
        if not isinstance(upto, Scalar):
            upto = Scalar(upto, torch.full((), upto, dtype=torch.int64, device=self.device))
        self._extend_prefix(int(upto.value))
        last = last.long()
        base = self.noise_std
        if self.aggregate:
            unit = self.ctx.noise_mode == "unit"
            return [
                (owed_sum(self._prefix(unit), last, upto.tensor, unit) * base).to(self.model.dtype)
            ]
        return [
            ((last <= s) * (self._lrs[s] * base)).to(self.model.dtype)
            for s in range(int(upto.value))
        ]

    def _prefix(self, unit: bool) -> torch.Tensor:
        """What ANS sums over the pending steps: lr (unit draws add up) or lr^2 (variances)."""
        return self._s1 if unit else self._s2

    def _draws(self, terms: list[torch.Tensor], seed: int | Scalar) -> tuple:
        """(std, key) of each independent draw that pays the owed noise, with the minus
        sign of the update: none with noise off; one (ANS) keyed by `seed` as given, so a
        graph replay reads it from device memory; else one per term, keys derived."""
        if self.ctx.noise_mode == "off":
            return ()
        if len(terms) == 1:
            return ((-terms[0], seed),)
        base = Scalar.resolve(seed, use_tensor=False)
        return tuple((-std, derive_seed(base, k)) for k, std in enumerate(terms))

    def _owed(self, next_batch, timer) -> OwedNoise:
        """The input queue's owed noise (advances HT: call once per step)."""
        queue, terms = self._advance_queue(next_batch, timer)
        seed = self.scalar("seed_sparse", self.device)
        rows = SparseRows(queue.rows, None, queue.valid)
        return OwedNoise(rows, self._draws(terms, seed), self.ctx.noise_mode == "unit")

    def _tools(self, timer) -> UpdateTools:
        return UpdateTools(
            self.model.table,
            self.ctx.sparse,
            self.ctx.engines,
            lambda device: self.scalar("alpha", device),
            timer,
        )

    # ----- the step -------------------------------------------------------------------
    def update(self, fs, clipped, next_batch, timer) -> None:
        on = self.device if self.delivery.grads_on_work_device else None
        grads = self.row_gradients(fs, clipped, timer, on=on)
        self.delivery.update(grads, lambda: self._owed(next_batch, timer), self._tools(timer))
        with timer.stage(Stage.LAZYDP_OVERHEAD):
            self.carry.commit()
        self.update_mlp(clipped, timer, noisy=True)

    def sort_ahead(self, next_batch, device, timer) -> None:
        """The input queue (`_advance_queue`) sorted the next batch into `carry` where it
        runs on the device path; where it runs on the host (`hybrid-host`) it keeps no
        sort, and the gradient's GPU sorts ahead as the other algorithms' does."""
        if not self.ctx.sparse.device_path(self.history):
            super().sort_ahead(next_batch, device, timer)

    def _advance_queue(self, next_batch, timer) -> tuple[SparseRows, list[torch.Tensor]]:
        """The input queue (unique rows step t + 1 reads), the std of each draw they owe
        (0 in padded slots), and HT[queue] = t + 1 (with ANS: one fused pass)."""
        dev = self.device
        with timer.stage(Stage.LAZYDP_OVERHEAD):
            queue = self.ctx.sparse.unique(next_batch.rows.to(dev, non_blocking=True), self.carry)
            t_next = self.scalar("t_next", dev)
            if self.aggregate:
                self._extend_prefix(int(t_next.value))
                unit = self.ctx.noise_mode == "unit"
                std = owed_std(
                    self.history,
                    queue.rows,
                    queue.valid,
                    t_next.tensor,
                    self._prefix(unit),
                    self.noise_std,
                    unit,
                    self.model.dtype,
                )
                return queue, [std]
            last = self.history.index_select(0, queue.rows)
            self.history.scatter_(
                0, queue.rows, t_next.tensor.to(self.history.dtype).expand_as(queue.rows)
            )
            terms = [std * queue.valid for std in self.pending_terms(last, t_next)]
        return queue, terms

    def owed_in_lookup(self, batch, pooled, timer):
        if not self.delivery.adds_to_lookup:
            return pooled
        with timer.stage(Stage.FORWARD):
            return self.delivery.owed_in_lookup(batch.rows, pooled, self._tools(timer))

    def owed_in_lookup_rows(self, rows, pooled):
        return self.delivery.owed_in_lookup(rows, pooled, self._tools(NULL_TIMER))

    def flush(self) -> None:
        """Give every row all its pending noise; idempotent (a second flush adds nothing)."""
        self.delivery.join()
        table = self.model.table
        engine = self.ctx.engines.for_device(table.device)
        calls = self._flush_calls(max(1, engine.rows_per_chunk(table)), engine.std_device(table))
        engine.add_noise_calls(table, calls, NULL_TIMER, unit=self.ctx.noise_mode == "unit")

    def _flush_calls(
        self, step: int, std_device: torch.device
    ) -> Iterator[tuple[int, int, torch.Tensor, int]]:
        """The flush's noise calls, chunk by chunk as the engine reaches them (the per-row
        std of one chunk at a time: no table-sized temporary), each std on the device the
        engine reads it on; each chunk's history is marked paid once its calls are made
        (none with noise off)."""
        table, upto = self.model.table, self.steps_done
        for chunk, start in enumerate(range(0, table.shape[0], step)):
            stop = min(table.shape[0], start + step)
            terms = self.pending_terms(self.history[start:stop], upto)
            terms = [std.to(std_device) for std in terms]
            seed = derive_seed(self.ctx.seed, STREAM_FLUSH, upto, chunk)
            for std, key in self._draws(terms, seed):
                yield start, stop, std, key
            self.history[start:stop] = upto

    def finalize(self) -> float:
        """Flush and time it (synchronized wall clock); called at the end of every run."""
        sync = torch.cuda.is_available()
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
        return {
            "memory": {
                "history_table_bytes": self.history.numel() * self.history.element_size(),
                "history_table_device": str(self.history.device),
            },
            "config": {"noise_update": self.noise_update},
        }


@register
class LazyDPAns(LazyDP):
    name = "lazydp"
    label = "LazyDP"
    color = "#000000"
    plot_order = 7
    summary = "LazyDP: lazy noise update + aggregated noise sampling (DP-SGD-equivalent)"
    default_clipping = "ghost"


@register
class LazyDPNoAns(LazyDP):
    name = "lazydp-noans"
    label = "LazyDP w/o ANS"
    color = "#F0E442"
    plot_order = 6
    summary = "LazyDP without aggregation: one draw per pending step (shows what ANS buys)"
    default_clipping = "ghost"
    aggregate = False
    graphable = False  # the number of draws per row changes with the step
