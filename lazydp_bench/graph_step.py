"""One training step captured as a CUDA graph and replayed every measured step.

On `gpu` placement a step is a few hundred small kernels: launching them costs more host
time than the GPU needs to run them, so eager steps measure Python and the launch queue,
not the algorithm. The step was written for this: it never waits for the host (padded
coalescing, no `.item()`) and reads every per-step value (lr, noise std, step index,
seeds) from device memory (`step_scalars.py`). So it is captured once after the eager
warm-up and replayed; per step only the data (drawn eagerly into fixed input buffers, the
`data` stage) and step t's scalars are written before the replay.

Stage breakdowns need a timer mark between kernels, which a replay cannot give, so graphs
are used only with `--no-breakdown`; `graph_blocker` says why a run stays eager.
"""

from __future__ import annotations

import torch

from lazydp_bench.data import Batch
from lazydp_bench.profiling import NULL_TIMER, StageTimer
from lazydp_bench.stages import Stage

MIN_WARMUP = 2  # eager steps before capture: Triton compiles, cuBLAS and autograd warm up


def graph_blocker(
    mode: str,
    placement: str,
    graphable: bool,
    breakdown: bool,
    noise_impl: str,
    noise_mode: str,
    warmup: int,
    private: bool,
) -> str | None:
    """Why this run cannot replay a captured step (None: it can). `mode` is auto|on|off."""
    if mode == "off":
        return "--cuda-graph off"
    reasons = [
        (placement != "gpu", "needs gpu placement (host work cannot be captured)"),
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


def _clone(batch: Batch) -> Batch:
    return Batch(dense=batch.dense.clone(), labels=batch.labels.clone(), rows=batch.rows.clone())


def _copy_into(dst: Batch, src: Batch) -> None:
    dst.dense.copy_(src.dense)
    dst.labels.copy_(src.labels)
    dst.rows.copy_(src.rows)


class GraphedStep:
    """Eager warm-up steps on a side stream, one capture, then replays of the same step.

    Inputs live in fixed buffers (`current`, `upcoming`: the batch and its look-ahead);
    outputs are the model's own tensors, updated in place.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.graph: torch.cuda.CUDAGraph | None = None
        self.current: Batch | None = None
        self.upcoming: Batch | None = None
        self._side = torch.cuda.Stream()

    def _load_inputs(self, timer: StageTimer) -> None:
        source = self.session.source
        with timer.stage(Stage.DATA):
            batch, upcoming = source.advance(), source.peek()
            if self.current is None:
                self.current, self.upcoming = _clone(batch), _clone(upcoming)
            else:
                _copy_into(self.current, batch)
                _copy_into(self.upcoming, upcoming)

    def warm_step(self, t: int, timer: StageTimer) -> None:
        """An eager step through the same buffers, on the side stream as capture needs."""
        algo = self.session.algo
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            self._load_inputs(timer)
            algo.prepare(t)
            algo.run_step(self.current, self.upcoming, timer)
        torch.cuda.current_stream().wait_stream(self._side)
        algo.steps_done = t + 1

    def capture(self) -> None:
        """Record one step (nothing runs: the model does not change)."""
        if self.current is None:
            raise RuntimeError("capture needs at least one eager warm-up step first")
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.session.algo.run_step(self.current, self.upcoming, NULL_TIMER)
        torch.cuda.synchronize()
        self.graph = graph

    def step(self, t: int, timer: StageTimer) -> None:
        if self.graph is None:
            raise RuntimeError("GraphedStep.step before capture()")
        algo = self.session.algo
        self._load_inputs(timer)
        algo.prepare(t, fixed_capacity=True)
        self.graph.replay()
        algo.steps_done = t + 1
