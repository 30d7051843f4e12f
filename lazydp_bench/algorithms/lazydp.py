"""LazyDP: lazy noise update + aggregated noise sampling (ANS), exact to DP-SGD.

A row's value only matters when it is read, so the noise DP-SGD would add to it every
step is owed, not written: the HistoryTable HT[r] counts the steps whose noise row r has
received. In step t, once the clipped gradient is ready, the rows the NEXT batch reads
(the input queue, from the batch source's look-ahead) receive the noise of steps
HT[r] .. t in ONE draw per element, N(0, (sigma C / B)^2 * sum_s lr_s^2) (ANS); then
HT[r] = t + 1. A prefix sum of lr_s^2 keeps a learning-rate schedule exact. `finalize()`
flushes every row's pending noise (dense, chunked), so the released model is distributed
exactly as DP-SGD's.

HT lives where the per-step noise work runs (`work_device`): with the table, except in
hybrid placement, where the GPU holds HT (0.78 % of the table) and draws the queue's
noise. How the noise reaches the table (`noise_update_mode`, in every record):
- `in-place` (gpu placement): straight into the table rows by one fused kernel; merging
  it with the gradient first would sort and scatter 2N rows only to scatter them again;
- `ahead` (hybrid): the queue's noise does not depend on the gradient, so it is drawn
  before step t's lookup, with the rows batch t does not read first. A background thread
  adds those to the host table while the host looks batch t up (disjoint rows), and the
  rest once the lookup is done, while the GPU computes the forward and backward; the
  update then waits for it and adds the gradient rows, as SGD does. The paper merges
  noise and gradient into one update instead, which ships and applies 2N rows after the
  backward, on the critical path;
- `merged` (cpu placement): the paper's merge, one host update (threaded).

`lazydp-noans` keeps the lazy update but draws each pending step's noise separately, to
show what aggregation buys. Momentum and weight decay would break the equivalence; the
tool's SGD has neither, and `LazyDP.check_optimizer` refuses them with the reason.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from lazydp_bench.algorithms.base import AlgoContext, Algorithm
from lazydp_bench.algorithms.registry import register
from lazydp_bench.dp.owed_noise import owed_std, owed_sum
from lazydp_bench.dp.seeds import derive_seed
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.measure.stages import Stage
from lazydp_bench.runtime.sparse import CarriedUnique, SparseRows, unread_first
from lazydp_bench.runtime.step_scalars import STREAM_FLUSH, Scalar


def history_dtype(total_steps: int) -> torch.dtype:
    return torch.int32 if total_steps < 2**31 - 1 else torch.int64


def work_device(table: torch.device, mlp: torch.device) -> torch.device:
    """Where the per-step noise work runs: the table's device, except in hybrid placement,
    where the GPU keeps HT and draws the input queue's noise (small), and only the noise
    rows cross PCIe to the host table (`ahead`)."""
    return mlp if table.type == "cpu" and mlp.type == "cuda" else table


def noise_update_mode(table: torch.Tensor, work: torch.device, sparse) -> str:
    """How the input queue's noise reaches the table (see the module docstring)."""
    if table.device == work and sparse.device_path(table):
        return "in-place"
    if table.device.type == "cpu" and work.type == "cuda":
        return "ahead"
    return "merged"


class LazyDP(Algorithm):
    history_table = True
    aggregate = True

    def __init__(self, ctx: AlgoContext):
        super().__init__(ctx)
        self.check_optimizer(ctx.lr.momentum, ctx.lr.weight_decay)
        self.device = work_device(self.model.table.device, self.model.mlp_device)
        self.noise_update = noise_update_mode(self.model.table, self.device, ctx.sparse)
        self._update = {
            "in-place": self._update_in_place,
            "ahead": self._update_ahead,
            "merged": self._update_merged,
        }[self.noise_update]
        self._ahead: list[Future] = []  # `ahead`: parts of the queue's noise being added
        self._shipped = None  # `ahead`: this step's queue noise, shipped by before_lookup
        self._handed = False  # `ahead`: both parts of it were handed to the applier
        self._applier: ThreadPoolExecutor | None = None
        # the queue's sort, reused by the next step's gradient coalescing (same rows)
        self.carry = CarriedUnique()
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
        lrs = torch.tensor([self.ctx.lr.lr(s) for s in range(steps)], dtype=torch.float64)
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

    def _add_owed(self, terms: list[torch.Tensor], seed: int | Scalar, add) -> None:
        """Pay the owed noise: add(-std_k, seed_k) for each independent draw k, where `add`
        applies -std_k * z_k to its target. One term (ANS) uses `seed` as given, so a graph
        replay reads it from device memory."""
        if self.ctx.noise_mode == "off":
            return
        if len(terms) == 1:
            add(-terms[0], seed)
            return
        base = Scalar.resolve(seed, use_tensor=False)
        for k, std in enumerate(terms):
            add(-std, derive_seed(base, k))

    def _add_owed_dense(
        self, target: torch.Tensor, terms: list[torch.Tensor], seed: int | Scalar
    ) -> None:
        """target[k] -= sum_j terms[j][k] * z (z independent standard normals, or 1s)."""
        self._add_owed(terms, seed, lambda std, s: self.add_noise(target, std, s, NULL_TIMER))

    # ----- the step -------------------------------------------------------------------
    def update(self, fs, clipped, next_batch, timer) -> None:
        self._update(fs, clipped, next_batch, timer)
        with timer.stage(Stage.LAZYDP_OVERHEAD):
            self.carry.commit()
        self.update_mlp(clipped, timer, noisy=True)

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

    def _update_in_place(self, fs, clipped, next_batch, timer) -> None:
        """Table on the device that does the noise work: the gradient rows and the queue's
        noise rows go into the table as two updates; merging them first would cost a
        second sort and scatter of 2N rows that the table update does anyway."""
        table = self.model.table
        grads = self.row_gradients(fs, clipped, timer, carried=self.carry)
        queue, terms = self._advance_queue(next_batch, timer)
        rows = queue.rows
        with timer.stage(Stage.PARAM_UPDATE):
            self.ctx.sparse.add_rows(table, grads, self.scalar("alpha", table.device))
        engine = self.ctx.engines.for_device(table.device)
        unit = self.ctx.noise_mode == "unit"
        with timer.stage(Stage.NOISE_SAMPLING):
            self._add_owed(
                terms,
                self.scalar("seed_sparse", table.device),
                lambda std, s: engine.add_noise_rows(table, rows, std, s, timer, unit),
            )

    def _queue_noise(self, next_batch, timer, batch=None) -> tuple[SparseRows, torch.Tensor | None]:
        """The input queue's owed noise as a (padded) row update on the work device. Given
        step t's `batch`, the rows it does not read come first, and the cuts between the
        parts (`sparse.unread_first`) come back too (else None)."""
        dev = self.device
        queue, terms = self._advance_queue(next_batch, timer)
        cuts = None
        if batch is not None:
            with timer.stage(Stage.LAZYDP_OVERHEAD):
                order, cuts = unread_first(queue, self._read_by(batch, queue))
                queue = SparseRows(queue.rows[order], None, queue.valid[order])
                terms = [std[order] for std in terms]
        with timer.stage(Stage.NOISE_SAMPLING):
            noise = torch.zeros(
                (queue.rows.numel(), self.model.table.shape[1]), dtype=self.model.dtype, device=dev
            )
            self._add_owed_dense(noise, terms, self.scalar("seed_sparse", dev))
        return SparseRows(queue.rows, noise, queue.valid), cuts

    def _read_by(self, batch, queue: SparseRows) -> torch.Tensor:
        """Which queue slots hold a row that `batch` (step t's) reads. The carried sort of
        batch t answers it with a binary search (sync-free); without one (the first step,
        or the host path) `isin` does."""
        carried = self.carry.get()
        if carried is None:
            return torch.isin(queue.rows, batch.rows.to(queue.rows.device).reshape(-1))
        held = carried[0]
        keys = held.rows.masked_fill(~held.valid, torch.iinfo(held.rows.dtype).max)
        pos = torch.searchsorted(keys, queue.rows).clamp_(max=keys.numel() - 1)
        return keys[pos] == queue.rows

    def _update_merged(self, fs, clipped, next_batch, timer) -> None:
        """Host placement: the queue's noise rows are merged with the gradient into one
        coalesced update (the paper's merge), which the host applies."""
        dev, sparse = self.device, self.ctx.sparse
        grads = self.row_gradients(fs, clipped, timer, on=dev, carried=self.carry)
        noise, _ = self._queue_noise(next_batch, timer)
        with timer.stage(Stage.NOISY_GRAD):
            merged = sparse.merge(grads, self.scalar("alpha", dev), noise.rows, noise.values)
        with timer.stage(Stage.PARAM_UPDATE):
            sparse.add_rows(self.model.table, sparse.to_device(merged, self.model.table.device))

    def works_before_lookup(self) -> bool:
        return self.noise_update == "ahead"

    def before_lookup(self, batch, next_batch, timer) -> None:
        """`ahead`: the queue's noise for steps up to t is drawn before batch t is looked up.
        Rows that batch t does not read may take it at once, so a host thread adds them
        while the host looks batch t up (disjoint rows); `after_lookup` hands it the rest."""
        if self.noise_update == "ahead":
            with timer.stage(Stage.MODEL_UPDATE):
                self._start_ahead(batch, next_batch, timer)

    def after_lookup(self, next_batch, timer) -> None:
        """`ahead`: batch t has been read, so the queue rows it reads may take their noise
        now (no row of batch t + 1 is read before the update ends)."""
        if self.noise_update == "ahead":
            shipped, self._shipped = self._shipped, None
            if shipped is None:
                raise RuntimeError("LazyDP `ahead`: the step did not run before_lookup")
            with timer.stage(Stage.MODEL_UPDATE), timer.stage(Stage.PARAM_UPDATE):
                self.ctx.sparse.host.run(lambda: self._apply_part(shipped, 1))
            self._handed = True

    def _start_ahead(self, batch, next_batch, timer) -> None:
        """Draw the queue's noise (rows batch t does not read first), start its copy to
        pinned memory and hand the first part to the applier thread (host work: in a
        hybrid graph step this runs right after the replay of the pre-lookup graph)."""
        sparse, table = self.ctx.sparse, self.model.table
        noise, cuts = self._queue_noise(next_batch, timer, batch)
        with timer.stage(Stage.PARAM_UPDATE):
            shipped = sparse.ship_async(noise, table.device, "queue_noise", cuts)
            sparse.host.run(lambda: self._apply_part(shipped, 0))
        self._shipped = shipped

    def _apply_part(self, shipped, part: int) -> None:
        """Queue a part of the shipped noise on the applier thread (one worker: parts are
        added in order, each after its copy has landed)."""
        if self._applier is None:
            self._applier = ThreadPoolExecutor(max_workers=1)
        table, sparse = self.model.table, self.ctx.sparse
        self._ahead.append(
            self._applier.submit(lambda: sparse.apply_rows(table, shipped.wait(part)))
        )

    def _join_ahead(self) -> None:
        """Wait until the queue's noise is in the table (re-raises what the thread raised)."""
        pending, self._ahead = self._ahead, []
        for future in pending:
            future.result()

    def _update_ahead(self, fs, clipped, next_batch, timer) -> None:
        """Hybrid: the gradient rows, as SGD ships and applies them, after the queue's noise
        (started by `before_lookup`) has landed: both threads would touch shared rows."""
        if not self._handed:  # rows of the queue would miss their noise
            raise RuntimeError("LazyDP `ahead`: the step did not run before/after_lookup")
        self._handed = False
        table = self.model.table
        grads = self.row_gradients(fs, clipped, timer, carried=self.carry)
        with timer.stage(Stage.PARAM_UPDATE):
            self.ctx.sparse.host.run(self._join_ahead)
            self.ctx.sparse.add_rows(table, grads, self.scalar("alpha", table.device))

    def flush(self) -> None:
        """Give every row all its pending noise; idempotent (a second flush adds nothing)."""
        self._join_ahead()
        table, upto = self.model.table, self.steps_done
        engine = self.ctx.engines.for_device(table.device)
        step = max(1, engine.rows_per_chunk(table))
        for chunk, start in enumerate(range(0, table.shape[0], step)):
            stop = min(table.shape[0], start + step)
            terms = self.pending_terms(self.history[start:stop], upto)
            terms = [std.to(table.device) for std in terms]
            seed = derive_seed(self.ctx.seed, STREAM_FLUSH, upto, chunk)
            self._add_owed_dense(table[start:stop], terms, seed)
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
