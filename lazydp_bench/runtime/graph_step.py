"""One training step captured as a CUDA graph and replayed every measured step.

On `gpu` placement a step is a few hundred small kernels: launching them costs more host
time than the GPU needs to run them, so eager steps measure Python and the launch queue,
not the algorithm. The step was written for this: it never waits for the host (padded
coalescing, no `.item()`) and reads every per-step value (lr, noise std, step index,
seeds) from device memory (`step_scalars.py`). So it is captured once after the eager
warm-up and replayed; per step only the data (drawn eagerly into fixed input buffers, the
`data` stage) and step t's scalars are written before the replay.

In `hybrid` placement the graph holds the step's GPU work; the host does the rest around
it. Before the replay it looks the batch's bags up in the host table into a pinned buffer
(the graph's first node copies it to the GPU); the graph copies every row update into
pinned memory; after the replay the host runs the table work the capture recorded
(`host_work.py`), each piece waiting for its own copy. The
batch's rows live on the GPU in graph steps (the host keeps its copy for the lookup), so
coalescing, clipping and LazyDP's queue need no host transfer inside the graph.

Stage breakdowns need a timer mark between kernels, which a replay cannot give, so graphs
are used only with `--no-breakdown`; `graph_blocker` says why a run stays eager.
"""

from __future__ import annotations

import torch

from lazydp_bench.data import Batch
from lazydp_bench.measure.profiling import NULL_TIMER, StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.placement.registry import PLACEMENTS

MIN_WARMUP = 2  # eager steps before capture: Triton compiles, cuBLAS and autograd warm up


def graph_blocker(
    mode: str,
    placement: str,
    *,
    graphable: bool,
    history_table: bool = False,
    breakdown: bool,
    noise_impl: str,
    noise_mode: str,
    warmup: int,
    private: bool,
) -> str | None:
    """Why this run cannot replay a captured step (None: it can). `mode` is auto|on|off."""
    if mode == "off":
        return "--cuda-graph off"
    blocked_by_placement = PLACEMENTS[placement].graph_blocker
    lazy_blocker = PLACEMENTS[placement].lazy_graph_blocker if history_table else None
    reasons = [
        (blocked_by_placement is not None, blocked_by_placement),
        (lazy_blocker is not None, lazy_blocker),
        (not graphable, "the algorithm's step changes shape with the step index"),
        (breakdown, "stage breakdown needs eager steps (use --no-breakdown)"),
        (private and noise_impl == "torch", "the torch noise engine takes seeds as arguments"),
        (private and noise_mode == "unit", "unit-noise mode is for verify"),
        (warmup < MIN_WARMUP, f"needs --warmup >= {MIN_WARMUP} eager steps before capture"),
    ]
    for blocked, reason in reasons:
        if blocked:
            return reason
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _clone(batch: Batch, rows_device: torch.device) -> Batch:
    rows = batch.rows.to(rows_device, copy=True)
    return Batch(dense=batch.dense.clone(), labels=batch.labels.clone(), rows=rows)


def _copy_into(dst: Batch, src: Batch) -> None:
    dst.dense.copy_(src.dense)
    dst.labels.copy_(src.labels)
    dst.rows.copy_(src.rows, non_blocking=True)


class GraphedStep:
    """Eager warm-up steps on a side stream, one capture, then replays of the same step.

    Inputs live in fixed buffers (`current`, `upcoming`: the batch and its look-ahead, rows
    on the MLP device; `pooled`: the host lookup of a hybrid step, pinned); outputs are the
    model's own tensors, updated in place. Warm-up steps defer their host work exactly as
    the capture records it, so the capture finds every pinned buffer already allocated.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.graphs: list[tuple[str, torch.cuda.CUDAGraph | None]] = []  # None: the lookup
        self.current: Batch | None = None
        self.upcoming: Batch | None = None
        self.host_rows: torch.Tensor | None = None  # hybrid: the batch's rows, for the lookup
        self.pooled: torch.Tensor | None = None  # hybrid: pinned lookup output
        self.hybrid = session.model.table.device.type == "cpu"
        self.host = session.host_work
        self._side = torch.cuda.Stream()

    def _load_inputs(self, timer: StageTimer) -> None:
        source, mlp = self.session.source, self.session.model.mlp_device
        with timer.stage(Stage.DATA):
            batch, upcoming = source.advance(), source.peek()
            self.host_rows = batch.rows
            if self.current is None:
                self.current, self.upcoming = _clone(batch, mlp), _clone(upcoming, mlp)
            else:
                _copy_into(self.current, batch)
                _copy_into(self.upcoming, upcoming)

    def _lookup(self, timer: StageTimer) -> torch.Tensor | None:
        """Hybrid: the batch's bags from the host table into the pinned buffer."""
        if not self.hybrid:
            return None
        with timer.stage(Stage.FORWARD):
            if self.pooled is None:
                rows = self.host_rows
                shape = (*rows.shape[:2], self.session.model.table.shape[1])
                dtype = self.session.model.table.dtype
                self.pooled = torch.empty(shape, dtype=dtype, pin_memory=True)
            return self.session.model.lookup(self.host_rows, out=self.pooled)

    def _phases(self, batch: Batch, upcoming: Batch, timer: StageTimer):
        """(phase, its GPU work) in step order; a hybrid step is split at the host lookup
        (work None)."""
        algo = self.session.algo

        def step() -> None:
            algo.run_from_lookup(batch, upcoming, self.pooled, timer)

        if not self.hybrid:
            return [("step", lambda: algo.run_step(batch, upcoming, timer))]
        return [("lookup", None), ("step", step)]

    def warm_step(self, t: int, timer: StageTimer) -> None:
        """An eager step through the same buffers, on the side stream as capture needs."""
        algo = self.session.algo
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            self._load_inputs(timer)
            algo.prepare(t)
            for phase, work in self._phases(self.current, self.upcoming, timer):
                if work is None:
                    self._lookup(timer)
                    continue
                with self.host.record(phase):
                    work()
                self.host.run_recorded(phase)
        torch.cuda.current_stream().wait_stream(self._side)
        algo.steps_done = t + 1

    def capture(self) -> None:
        """Record each phase's graph (nothing runs: the model does not change)."""
        if self.current is None:
            raise RuntimeError("capture needs at least one eager warm-up step first")
        torch.cuda.synchronize()
        graphs = []
        for phase, work in self._phases(self.current, self.upcoming, NULL_TIMER):
            if work is None:
                graphs.append((phase, None))
                continue
            graph = torch.cuda.CUDAGraph()
            with self.host.record(phase), torch.cuda.graph(graph):
                work()
            graphs.append((phase, graph))
        torch.cuda.synchronize()
        self.graphs = graphs

    def step(self, t: int, timer: StageTimer) -> None:
        if not self.graphs:
            raise RuntimeError("GraphedStep.step before capture()")
        algo = self.session.algo
        self._load_inputs(timer)
        algo.prepare(t, fixed_capacity=True)
        last = len(self.graphs) - 1
        for i, (phase, graph) in enumerate(self.graphs):
            if graph is None:
                self._lookup(timer)
                continue
            graph.replay()
            if i == last:  # the GPU has the step's work: draw the batch after next meanwhile
                self._draw_ahead()
            self.host.run_recorded(phase)
        algo.steps_done = t + 1

    def _draw_ahead(self) -> None:
        """A source that draws batches on demand (synthetic) draws the batch after next;
        sources that read ahead by themselves (Criteo files) have no `draw_ahead`."""
        draw = getattr(self.session.source, "draw_ahead", None)
        if draw is not None:
            draw()
