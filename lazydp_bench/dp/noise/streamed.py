"""Host-table `streamed` engine: the GPU draws the noise, PCIe carries it down, host threads
add it.

A table in host RAM (`hybrid`) needs N normals a DP-SGD step. Host threads draw them at
~2.5 G samples/s on a 16-core host (`host_threaded.py`), while the GPU draws ~400 G/s and
pinned device-to-host copies move ~54 GB/s (13.5 G fp32/s): drawing on the GPU and adding on
the host is bounded by the copy, not by the host's generator. The table is split into
windows of at most `chunk_bytes`; for window i the GPU writes its noise into device buffer
i mod DEPTH (a `WindowDrawer`: the fused Triton kernel, keyed exactly as a whole-table call
on the GPU would be, so a host table gets the normals a GPU table gets with the same key;
the GPU path leaves a per-step std read from device memory signed, which flips them all,
with no effect on the distribution), a copy stream moves it into pinned buffer i mod
DEPTH, and host threads add it into the table rows as soon as that copy's event fires,
while the next windows are drawn and copied. No buffer exceeds `chunk_bytes` (or one
aligned block of rows where that is larger); DEPTH (3) of each exist, allocated once.
Calls whose rows overlap (LazyDP without aggregated noise draws every pending step of a
chunk as its own call) wait for each other: two adds of one row at once would lose one.

Why noise down and not rows through the GPU and back: the table is pageable host memory,
so a round trip needs pinned staging on both ends (4 x table bytes of host traffic plus 2 x
over PCIe, against 3 x and 1 x here); `bench noise --placement hybrid` reports both bounds.

With `via` a CPU device the same windows, buffers and hand-off run without streams (the
"copy" is a host copy): the CPU-testable form of the pipeline.

Inside a CUDA-graph step the engine runs as recorded host work after each replay
(`runtime/host_work.py`), launching its own kernels and copies on its own streams; it
reads the step's seed and std as Python values at that time.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch

from lazydp_bench.dp.noise.base import DenseNoiseEngine, SeedArg, Std
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage
from lazydp_bench.runtime.step_scalars import Scalar

DEPTH = 3  # windows in flight: one drawn, one copied, one added
Call = tuple[int, int, "Std | Scalar", "SeedArg | Scalar"]  # rows start..stop, std, seed


class WindowDrawer(Protocol):
    """Draws the part of a whole-table noise call that falls on a window of rows."""

    def launch_rows(self, cols: int) -> int: ...

    def align_rows(self, cols: int) -> int: ...

    def draw_window(
        self, out: torch.Tensor, std: Std, seed: SeedArg, *, first_row: int, unit: bool = False
    ) -> None: ...

    def describe(self, device: torch.device) -> dict[str, str]: ...


class StreamedEngine(DenseNoiseEngine):
    name = "streamed"

    def __init__(
        self, chunk_bytes: int, threads: int, *, drawer: WindowDrawer, via: torch.device
    ) -> None:
        super().__init__(chunk_bytes, threads)
        self.drawer = drawer
        self.via = via
        self._pool: ThreadPoolExecutor | None = None
        self._buffers: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self._streams = None

    # ----- the windows ------------------------------------------------------------------
    def windows(self, rows: int, cols: int, itemsize: int) -> list[tuple[int, int]]:
        """(start, stop) row ranges of at most `chunk_bytes`, each starting where the drawer
        can start a window (aligned, never across one of its launches)."""
        align = self.drawer.align_rows(cols)
        per_launch = self.drawer.launch_rows(cols)
        step = max(align, (self.chunk_bytes // (cols * itemsize)) // align * align)
        out = []
        for launch in range(0, rows, per_launch):
            end = min(rows, launch + per_launch)
            out.extend((s, min(end, s + step)) for s in range(launch, end, step))
        return out

    # ----- noise ------------------------------------------------------------------------
    def add_noise(self, target, std, seed, timer: StageTimer, unit: bool = False) -> None:
        """As the base class, except that unit mode goes through the same pipeline (so the
        exactness tests check its hand-off: every row gets its std once)."""
        if not unit:
            super().add_noise(target, std, seed, timer)
            return
        target2d = target if target.dim() == 2 else target.view(-1, 1)
        self.add_noise_calls(target2d, [(0, target2d.shape[0], std, seed)], timer, unit=True)

    def _add_gaussian(self, target: torch.Tensor, std: Std, seed: SeedArg, timer: StageTimer):
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            self._stream(target, [(0, target.shape[0], std, seed)], unit=False)

    def add_noise_calls(self, target, calls, timer: StageTimer, unit: bool = False) -> None:
        """Every call's windows go through one pipeline, so a flush of many chunks overlaps
        them as one call's windows overlap (the draws are each call's own)."""
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            self._stream(target, calls, unit)

    def _stream(self, target: torch.Tensor, calls: Iterable[Call], unit: bool) -> None:
        """Draw, copy and add the windows of each (start, stop, std, seed) call on `target`'s
        rows start..stop, DEPTH windows in flight. A call whose rows overlap a window still
        being added waits for it (two adds of one row at once would lose one of them);
        whatever happens, every add started has finished when this returns."""
        if target.device.type != "cpu" or not target.is_contiguous():
            raise ValueError("streamed engine needs a contiguous host tensor")
        rows, cols = target.shape
        widest = self.window_rows(rows, cols, target.element_size())
        drawn, landed = self._window_buffers(widest, cols, target.dtype)
        caller = torch.cuda.current_stream(self.via) if self.via.type == "cuda" else None
        events: list = [None] * DEPTH
        in_flight: deque[tuple[int, int, list[Future]]] = deque()  # rows lo..hi, their adds
        slot = -1
        try:
            for start, stop, std, seed in calls:
                std, key = Scalar.resolve(std, False), Scalar.resolve(seed, False)
                key = int(key.item()) if isinstance(key, torch.Tensor) else key
                if any(lo < stop and start < hi for lo, hi, _ in in_flight):
                    _drain(in_flight)
                for lo, hi in self.windows(stop - start, cols, target.element_size()):
                    slot = (slot + 1) % DEPTH
                    if len(in_flight) == DEPTH:  # the slot's last window must be in the table
                        _wait(in_flight.popleft()[2])
                    n = hi - lo
                    events[slot] = self._draw_and_copy(
                        drawn[slot][:n],
                        landed[slot][:n],
                        std,
                        key,
                        rows=(lo, hi),
                        unit=unit,
                        previous=events[slot],
                        caller=caller,
                    )
                    adds = self._add(target, landed[slot][:n], start + lo, events[slot])
                    in_flight.append((start + lo, start + hi, adds))
        finally:
            _drain(in_flight)
            if caller is not None:
                torch.cuda.synchronize(self.via)  # no copy may still write a pinned buffer

    def window_rows(self, rows: int, cols: int, itemsize: int) -> int:
        """Rows of the widest window of any call on a `rows`-row target (the buffers'
        size): at most `chunk_bytes` worth, or one aligned block."""
        return max(stop - start for start, stop in self.windows(rows, cols, itemsize))

    def std_device(self, target: torch.Tensor) -> torch.device:
        return self.via

    def _window_std(self, std: Std, start: int, stop: int, caller: torch.cuda.Stream | None) -> Std:
        """The window's std on `via` (a per-row slice is copied there unless it is there
        already; it is 1/cols of the window's bytes). A std made on the GPU was made on the
        caller's stream: the draw stream waits for it and the allocator keeps it alive."""
        if isinstance(std, torch.Tensor) and std.dim() == 1:
            if std.device.type == "cuda" and caller is not None:
                draw_stream = self._cuda_streams()[0]
                draw_stream.wait_stream(caller)
                std.record_stream(draw_stream)
            return std[start:stop].to(self.via)
        if isinstance(std, torch.Tensor):
            return float(std.item())
        return std

    def _draw_and_copy(
        self,
        drawn: torch.Tensor,
        landed: torch.Tensor,
        std: Std,
        seed: int,
        *,
        rows: tuple[int, int],
        unit: bool,
        previous: torch.cuda.Event | None,
        caller: torch.cuda.Stream | None,
    ) -> torch.cuda.Event | None:
        """Window noise into `drawn` (device), then into `landed` (pinned host); returns the
        event the host waits on (None on a CPU `via`: done on return)."""
        first = rows[0]
        if self.via.type != "cuda":
            std = self._window_std(std, *rows, caller)
            self.drawer.draw_window(drawn, std, seed, first_row=first, unit=unit)
            landed.copy_(drawn)
            return None
        draw_stream, copy_stream = self._cuda_streams()
        with torch.cuda.stream(draw_stream):
            if previous is not None:  # the buffer's last copy must have read it
                draw_stream.wait_event(previous)
            std = self._window_std(std, *rows, caller)  # copied on the stream that reads it
            self.drawer.draw_window(drawn, std, seed, first_row=first, unit=unit)
            ready = torch.cuda.Event()
            ready.record(draw_stream)
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(ready)
            landed.copy_(drawn, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(copy_stream)
        return copied

    def _add(self, target: torch.Tensor, landed: torch.Tensor, start: int, event) -> list[Future]:
        """Host threads add the landed window into its rows once its copy has finished."""
        table, noise = target.numpy(), landed.numpy()
        n = noise.shape[0]
        parts = min(self.threads, n)
        bounds = [n * k // parts for k in range(parts + 1)]

        def part(lo: int, hi: int) -> None:
            if event is not None:
                event.synchronize()
            rows = table[start + lo : start + hi]
            rows += noise[lo:hi]

        pool = self._executor()
        return [pool.submit(part, lo, hi) for lo, hi in itertools.pairwise(bounds)]

    # ----- resources --------------------------------------------------------------------
    def prepare(self, target: torch.Tensor) -> None:
        """The window buffers for `target`, and the drawer's kernels (scalar and per-row
        std) compiled on one aligned block."""
        target2d = target if target.dim() == 2 else target.view(-1, 1)
        rows, cols = target2d.shape
        widest = self.window_rows(rows, cols, target2d.element_size())
        drawn, _ = self._window_buffers(widest, cols, target2d.dtype)
        block = drawn[0][: min(widest, self.drawer.align_rows(cols))]
        self.drawer.draw_window(block, 1.0, 0, first_row=0)
        per_row = torch.ones(block.shape[0], dtype=block.dtype, device=block.device)
        self.drawer.draw_window(block, per_row, 0, first_row=0)
        if self.via.type == "cuda":
            torch.cuda.synchronize(self.via)

    def _window_buffers(self, rows: int, cols: int, dtype: torch.dtype):
        """DEPTH device and DEPTH pinned host buffers of `rows` x `cols`, reused by calls."""
        key = (rows, cols, dtype)
        if key not in self._buffers:
            self._buffers.clear()  # one shape at a time: never more than 2 x DEPTH chunks
            pin = self.via.type == "cuda"
            drawn = [torch.empty((rows, cols), dtype=dtype, device=self.via) for _ in range(DEPTH)]
            landed = [torch.empty((rows, cols), dtype=dtype, pin_memory=pin) for _ in range(DEPTH)]
            self._buffers[key] = (drawn, landed)
        return self._buffers[key]

    def _cuda_streams(self):
        if self._streams is None:
            self._streams = (torch.cuda.Stream(self.via), torch.cuda.Stream(self.via))
        return self._streams

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        return self._pool

    def describe(self, device: torch.device) -> dict[str, str]:
        drawer = self.drawer.describe(self.via)
        return {
            "engine": f"streamed (draw on {self.via}, add on {self.threads} host threads)",
            "rng": drawer["rng"],
            "key_bits": drawer["key_bits"],
        }


def _wait(futures: list[Future]) -> None:
    """Wait for every future, then raise the first error (none is left running)."""
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _drain(in_flight: deque[tuple[int, int, list[Future]]]) -> None:
    """Wait for every window in flight, even after one failed; then raise the first error."""
    futures = [f for _, _, adds in in_flight for f in adds]
    in_flight.clear()
    _wait(futures)
