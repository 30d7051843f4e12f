"""Host-table `roundtrip` engine: the table's rows go up to the GPU window by window, take
their noise there and come back.

The streamed engine (`streamed.py`) sends noise down and adds it on the host, so host DRAM
carries four bytes per table byte (the copy's write, then the add's reads of noise and
row and its write) and host threads do the adds. Here the table's own pages are
registered with CUDA (`cudaHostRegister`, once, when the engine is prepared), so both
copies are direct DMA: host DRAM carries two bytes per table byte, PCIe runs both
directions at once, and no host thread works. On the H200 machine a 96 GB pass takes
1.91 s (100 GB/s both ways) against 2.7-2.9 s streamed; registering 96 GB takes 7.6 s,
paid at session build (`scripts/diagnostics/round_trip_probe.py`).

Per window i, slot i mod DEPTH: an up stream copies the rows into device buffer `rows`
once the slot's last down-copy has read it; the draw stream draws the window's noise with
the streamed engine's `WindowDrawer` (so the table gets exactly the normals `streamed`
gives it: same windows, same keys, the same float32 add) and adds it once the rows have
landed; a down stream copies the rows back. A window that shares rows with one still in
flight (LazyDP without aggregated noise sampling draws each pending step of a chunk as its
own call) goes up only after that one came down. Every copy has ended when a call
returns, so host work after it sees the noised table.

The engine pins the whole storage under the tensor it is given (a view pins its table)
and holds that storage until the engine is collected, which unpins it first: a view
that dies never unpins a table still in use, and runs that build one session (and
engine) per algorithm never hold two tables pinned. A table that cannot be pinned is a
`BenchError` naming `--noise-impl streamed`, which needs no pinned table.

With `via` a CPU device the same windows, buffers and slots run without streams or
registration: the CPU-testable form.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable

import torch

from lazydp_bench.dp.noise.streamed import DEPTH, Call, StreamedEngine
from lazydp_bench.errors import BenchError
from lazydp_bench.runtime.step_scalars import Scalar
from lazydp_bench.units import format_bytes


class RoundTripEngine(StreamedEngine):
    name = "roundtrip"

    def __init__(self, chunk_bytes: int, threads: int, **kw) -> None:
        super().__init__(chunk_bytes, threads, **kw)
        self._pinned: dict[int, torch.UntypedStorage] = {}  # storage pointer -> storage
        weakref.finalize(self, _unpin, self._pinned)

    # ----- the pipeline -------------------------------------------------------------------
    def _stream(self, target: torch.Tensor, calls: Iterable[Call], unit: bool) -> None:
        """Up, noise, down for every window of each (start, stop, std, seed) call."""
        if target.device.type != "cpu" or not target.is_contiguous():
            raise ValueError("roundtrip engine needs a contiguous host tensor")
        self._register(target)
        rows, cols = target.shape
        widest = self.window_rows(rows, cols, target.element_size())
        bufs, noise = self._window_buffers(widest, cols, target.dtype)
        caller = torch.cuda.current_stream(self.via) if self.via.type == "cuda" else None
        freed: list[torch.cuda.Event | None] = [None] * DEPTH
        recent: deque[tuple[int, int, int]] = deque(maxlen=DEPTH - 1)  # rows lo, hi, slot
        slot = -1
        try:
            for start, stop, std, seed in calls:
                std, key = Scalar.resolve(std, False), Scalar.resolve(seed, False)
                key = int(key.item()) if isinstance(key, torch.Tensor) else key
                for lo, hi in self.windows(stop - start, cols, target.element_size()):
                    slot = (slot + 1) % DEPTH
                    a, b = start + lo, start + hi
                    after = [freed[s] for x, y, s in recent if x < b and a < y]
                    freed[slot] = self._trip(
                        target[a:b],
                        bufs[slot][: hi - lo],
                        noise[slot][: hi - lo],
                        std,
                        key,
                        rows=(lo, hi),
                        unit=unit,
                        after=[freed[slot], *after],
                        caller=caller,
                    )
                    recent.append((a, b, slot))
        finally:
            if caller is not None:
                torch.cuda.synchronize(self.via)  # every row is back in the table

    def _trip(
        self,
        rows_out: torch.Tensor,
        buf: torch.Tensor,
        noise: torch.Tensor,
        std,
        key: int,
        *,
        rows: tuple[int, int],
        unit: bool,
        after: list,
        caller: torch.cuda.Stream | None,
    ) -> torch.cuda.Event | None:
        """One window: rows up into `buf` (after the events in `after`), its noise drawn
        into `noise` and added, rows down; returns the event of the down-copy (None on a
        CPU `via`: done on return)."""
        first = rows[0]
        if self.via.type != "cuda":
            buf.copy_(rows_out)
            std = self._window_std(std, *rows, caller)
            self.drawer.draw_window(noise, std, key, first_row=first, unit=unit)
            buf.add_(noise)
            rows_out.copy_(buf)
            return None
        draw, up, down = self._cuda_streams()
        with torch.cuda.stream(up):
            for event in after:
                if event is not None:
                    up.wait_event(event)
            buf.copy_(rows_out, non_blocking=True)
            landed = torch.cuda.Event()
            landed.record(up)
        with torch.cuda.stream(draw):
            std = self._window_std(std, *rows, caller)  # copied on the stream that reads it
            self.drawer.draw_window(noise, std, key, first_row=first, unit=unit)
            draw.wait_event(landed)
            buf.add_(noise)
            added = torch.cuda.Event()
            added.record(draw)
        with torch.cuda.stream(down):
            down.wait_event(added)
            rows_out.copy_(buf, non_blocking=True)
            back = torch.cuda.Event()
            back.record(down)
        return back

    # ----- resources ----------------------------------------------------------------------
    def prepare(self, target: torch.Tensor) -> None:
        """Register the table's pages and compile the drawer (the buffers with it)."""
        self._register(target)
        super().prepare(target)

    def _register(self, target: torch.Tensor) -> None:
        """Pin the storage under `target` for DMA once (`cudaHostRegister`); the engine
        keeps it until it is collected. Memory torch already pinned is left as it is."""
        if self.via.type != "cuda":
            return
        storage = target.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._pinned or target.is_pinned():
            return
        err = torch.cuda.cudart().cudaHostRegister(ptr, storage.nbytes(), 0)
        if int(err) != 0:
            raise BenchError(
                f"could not pin the {format_bytes(storage.nbytes())} host table for DMA "
                f"({err}); --noise-impl streamed needs no pinned table"
            )
        self._pinned[ptr] = storage

    def _window_buffers(self, rows: int, cols: int, dtype: torch.dtype):
        """DEPTH row buffers and DEPTH noise buffers of `rows` x `cols` on `via`."""
        key = (rows, cols, dtype)
        if key not in self._buffers:
            self._buffers.clear()  # one shape at a time: never more than 2 x DEPTH chunks
            self._buffers[key] = tuple(
                [torch.empty((rows, cols), dtype=dtype, device=self.via) for _ in range(DEPTH)]
                for _ in ("rows", "noise")
            )
        return self._buffers[key]

    def _cuda_streams(self):
        """(draw, up, down); the draw stream first, as `_window_std` expects."""
        if self._streams is None:
            self._streams = tuple(torch.cuda.Stream(self.via) for _ in range(3))
        return self._streams

    def describe(self, device: torch.device) -> dict[str, str]:
        drawer = self.drawer.describe(self.via)
        return {
            "engine": f"roundtrip (rows up to {self.via}, noised there, back; table pinned)",
            "rng": drawer["rng"],
            "key_bits": drawer["key_bits"],
        }


def _unpin(pinned: dict[int, torch.UntypedStorage]) -> None:
    """Unpin every storage an engine pinned, then let them go (the engine's finalizer)."""
    for ptr in list(pinned):
        if torch.cuda.is_initialized():
            torch.cuda.cudart().cudaHostUnregister(ptr)
    pinned.clear()
