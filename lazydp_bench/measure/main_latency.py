"""The main thread's latency while a batch source streams (`lazydp-bench data speed`).

A reader whose threads live in the training process shares the GIL with the thread that
launches each step: every numpy call of a parse gives the GIL up and takes it back, and a
thread waiting for it can lose up to the 5 ms switch interval. The probe stands in for
that thread: per batch it takes the batch (not timed), then times a fixed burst of small
torch ops (each call releases and retakes the GIL, as a step's launches do). The burst's
quantiles with no reader, with the reader in threads and with it in a child process show
whether the reader slows the thread that trains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

OPS = 32  # small torch ops per burst
ELEMENTS = 256  # elements of the burst's tensors


@dataclass(frozen=True)
class Latency:
    """Quantiles of the burst's time over `steps` bursts, in microseconds."""

    steps: int
    p50_us: float
    p99_us: float
    max_us: float

    def describe(self) -> str:
        return f"{self.p50_us:,.0f} / {self.p99_us:,.0f} / {self.max_us:,.0f} µs"


class Burst:
    """`OPS` small in-place torch ops on tensors made once."""

    def __init__(self, ops: int = OPS) -> None:
        self.ops = ops
        self._a = torch.ones(ELEMENTS)
        self._b = torch.full((ELEMENTS,), 1e-6)

    def __call__(self) -> int:
        """Run the burst; its time in nanoseconds."""
        a, b = self._a, self._b
        t0 = time.perf_counter_ns()
        for _ in range(self.ops):
            a.add_(b)
        return time.perf_counter_ns() - t0


def probe(next_batch: Callable[[], object] | None, steps: int, burst: Burst) -> Latency:
    """Time `steps` bursts, each after `next_batch()` (None: no source, the baseline)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    for _ in range(8):  # first calls: allocation, dispatch caches
        burst()
    times = np.empty(steps, dtype=np.float64)
    for i in range(steps):
        if next_batch is not None:
            next_batch()
        times[i] = burst()
    return summarize(times / 1e3)


def summarize(times_us: np.ndarray) -> Latency:
    """The quantiles of burst times (microseconds)."""
    p50, p99 = np.quantile(times_us, [0.5, 0.99])
    return Latency(len(times_us), float(p50), float(p99), float(times_us.max()))
