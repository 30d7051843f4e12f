"""Stage timer: per-step, per-stage times with raw samples kept.

Two modes, recorded in every result:
- `cuda_events`: all work on one GPU. Each stage occurrence records a start/end CUDA event;
  nothing synchronizes until `finish()`, so the timed loop never waits on the host.
- `sync_wall`: work on the host (hybrid, cpu). Stage boundaries synchronize the GPU (when
  one is used) and read `perf_counter`.
With `breakdown=False` only step boundaries are timed (no syncs inside a step), to check
what the instrumentation itself costs. A stage may occur many times in a step (e.g. a
chunked noise loop); its per-step time is the sum.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lazydp_bench.measure.stages import PARENT, Stage


@dataclass(frozen=True)
class StageSummary:
    name: str
    parent: str | None
    median_ms: float
    p25_ms: float
    p75_ms: float
    mean_ms: float
    n: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def quantiles(values: list[float]) -> tuple[float, float, float, float]:
    """(p25, median, p75, mean) with linear interpolation; one value gives it four times."""
    if len(values) == 1:
        return values[0], values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2], statistics.fmean(values)


class StageTimer:
    def __init__(self, mode: str, breakdown: bool = True, device: torch.device | None = None):
        if mode not in ("cuda_events", "sync_wall"):
            raise ValueError(f"unknown timer mode {mode}")
        self.mode = mode
        self.breakdown = breakdown
        self._sync_cuda = device is not None and device.type == "cuda"
        self.enabled = False
        self._steps: list[dict[str, list]] = []  # per step: stage -> [(start, end), ...]
        self._step_marks: list[tuple] = []
        self._current: dict[str, list] | None = None
        self._step_start = None

    def _mark(self):
        if self.mode == "cuda_events":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        if self._sync_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def begin_step(self) -> None:
        if not self.enabled:
            return
        self._current = defaultdict(list)
        self._step_start = self._mark()

    def end_step(self) -> None:
        if not self.enabled:
            return
        self._step_marks.append((self._step_start, self._mark()))
        self._steps.append(self._current)
        self._current = None

    @contextlib.contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        if not (self.enabled and self.breakdown and self._current is not None):
            yield
            return
        start = self._mark()
        try:
            yield
        finally:
            self._current[stage.value].append((start, self._mark()))

    def _elapsed_ms(self, start, end) -> float:
        if self.mode == "cuda_events":
            return start.elapsed_time(end)
        return (end - start) * 1e3

    def finish(self) -> tuple[list[float], list[dict[str, float]]]:
        """Per-step times (ms) and per-step stage sums (ms), with `other` = the remainder."""
        if self.mode == "cuda_events":
            torch.cuda.synchronize()
        step_ms = [self._elapsed_ms(a, b) for a, b in self._step_marks]
        per_step: list[dict[str, float]] = []
        for total, stages in zip(step_ms, self._steps, strict=True):
            sums = {k: sum(self._elapsed_ms(a, b) for a, b in v) for k, v in stages.items()}
            if self.breakdown:
                top = sum(v for k, v in sums.items() if PARENT[Stage(k)] is None)
                sums[Stage.OTHER.value] = max(0.0, total - top)
            per_step.append(sums)
        return step_ms, per_step


def summarize_stages(per_step: list[dict[str, float]]) -> list[StageSummary]:
    """Median/IQR/mean of each stage over steps; a stage absent in a step counts as 0 there."""
    names = {k for step in per_step for k in step}
    order = [s for s in Stage if s.value in names]
    out = []
    for stage in order:
        values = [step.get(stage.value, 0.0) for step in per_step]
        p25, med, p75, mean = quantiles(values)
        parent = PARENT[stage]
        out.append(
            StageSummary(
                stage.value, parent.value if parent else None, med, p25, p75, mean, len(values)
            )
        )
    return out


NULL_TIMER = StageTimer("sync_wall")  # never enabled: for work timed by an enclosing stage
