"""Host-side table work of a hybrid step: run at once, or recorded during a CUDA-graph
capture and run after every replay.

In `hybrid` placement the table is in host RAM and everything else is on the GPU. A
graph can capture the GPU part of a step (the dense forward and backward, clipping,
coalescing, the input queue's noise, and the copies of row updates into pinned memory)
but not what the host does with those updates (`index_add_` into the table, dense host
noise). Code that touches the host table hands that work to `HostWork.run` as a
function. Eager steps run it on the spot. While a graph captures the step, the function
is recorded instead (a host function would otherwise run once, at capture, on the
buffers' contents at that moment), and `run_recorded()` calls the recorded functions in
order right after each `replay()` (per phase: each phase of a step is a graph of its own).
Each function waits for the copy it reads (`sparse.ShippedRows.wait`), and reads
per-step values through `Scalar.value`, which follows the current step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

HostFn = Callable[[], None]


class HostWork:
    def __init__(self) -> None:
        self._recorded: list[HostFn] | None = None  # None: not recording
        self._replay: dict[str, list[HostFn]] = {}

    @property
    def recording(self) -> bool:
        return self._recorded is not None

    def run(self, fn: HostFn) -> None:
        """Run `fn` now, or record it when a capture is under way."""
        if self._recorded is None:
            fn()
        else:
            self._recorded.append(fn)

    @contextlib.contextmanager
    def record(self, phase: str = "step") -> Iterator[None]:
        """Record (do not run) the host work handed to `run` inside the block, as the work
        of `phase` (each captured graph of a step is one); it replaces that phase's
        previous record."""
        if self._recorded is not None:
            raise RuntimeError("HostWork.record is already recording")
        self._recorded = []
        try:
            yield
            self._replay[phase] = self._recorded
        finally:
            self._recorded = None

    def run_recorded(self, phase: str = "step") -> None:
        """`phase`'s recorded host work, in the order it was recorded (after its replay)."""
        for fn in self._replay.get(phase, []):
            fn()
