"""Where a hybrid graph step's host time goes (GPU machine only; a diagnostic, no records).

Wraps, without changing them, the pieces a hybrid graph step runs on the host: the batch's
lookup, each graph replay (launch only), each phase's recorded host work, and every row
update applied to the host table (the gradient rows; LazyDP's `carried` noise rides with
them). Prints per-step medians in ms, per algorithm.

    PYTHONPATH=$PWD python3 scripts/diagnostics/probe_hybrid_phases.py 96MB sgd,lazydp [steps]
"""

# ruff: noqa: E402 (OMP_WAIT_POLICY must be set before torch is imported)
from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import defaultdict

from lazydp_bench.launch import set_process_defaults

set_process_defaults()  # OMP_WAIT_POLICY=PASSIVE as `lazydp-bench` runs, before torch loads

import torch

from lazydp_bench.config import RunConfig
from lazydp_bench.runtime import graph_step, host_work, sparse
from lazydp_bench.runtime.trainer import build_session, plan_run

WARMUP = 5


class Clock:
    """Per-step sums of wall time by label (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []

    def add(self, label: str, seconds: float) -> None:
        with self.lock:
            self.now[label] += seconds * 1e3

    def wrap(self, owner, name: str, label) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.add(label(args) if callable(label) else label, time.perf_counter() - start)

        setattr(owner, name, timed)

    def end_step(self, total_ms: float) -> None:
        with self.lock:
            self.now["step"] = total_ms
            self.steps.append(dict(self.now))
            self.now.clear()


def install(clock: Clock) -> None:
    clock.wrap(graph_step.GraphedStep, "_lookup", "lookup")
    clock.wrap(graph_step.GraphedStep, "_load_inputs", "data")
    clock.wrap(torch.cuda.CUDAGraph, "replay", "replay launch")
    clock.wrap(host_work.HostWork, "run_recorded", lambda a: f"host work [{_phase(a)}]")
    applier = "apply_rows" if hasattr(sparse.SparseOps, "apply_rows") else "add_rows"
    clock.wrap(sparse.SparseOps, applier, lambda _: f"apply ({_thread()})")


def _phase(args) -> str:
    return args[1] if len(args) > 1 else "step"


def _thread() -> str:
    return "main" if threading.current_thread() is threading.main_thread() else "applier"


def probe(size: str, algo: str, steps: int, clock: Clock) -> None:
    config = RunConfig(
        algo=algo,
        table_size=size,
        placement="hybrid",
        breakdown=False,
        warmup=WARMUP,
        iterations=steps,
    )
    session = build_session(plan_run(config))
    graphed = graph_step.GraphedStep(session)
    for t in range(WARMUP):
        graphed.warm_step(t, graph_step.NULL_TIMER)
    graphed.capture()
    torch.cuda.synchronize()
    clock.now.clear()
    clock.steps.clear()
    for t in range(WARMUP, WARMUP + steps):
        start = time.perf_counter()
        graphed.step(t, graph_step.NULL_TIMER)
        torch.cuda.synchronize()
        clock.end_step((time.perf_counter() - start) * 1e3)
    labels = sorted({k for s in clock.steps for k in s})
    huge = getattr(session, "table_huge_pages", None)
    print(f"--- {algo} {size} hybrid graph, {steps} steps (median ms per step)")
    print(f"  huge pages advised: {huge}; AnonHugePages: {_anon_huge()}")
    for label in labels:
        values = [s.get(label, 0.0) for s in clock.steps]
        print(f"  {label:24s} {statistics.median(values):8.3f}")
    session.algo.finalize()


def _anon_huge() -> str:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("AnonHugePages:"):
                return line.split(":", 1)[1].strip()
    return "?"


def main() -> None:
    size, algos = sys.argv[1], sys.argv[2].split(",")
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    clock = Clock()
    install(clock)
    for algo in algos:
        probe(size, algo, steps, clock)


if __name__ == "__main__":
    main()
