"""Host `fused` engine: a thread pool noises row chunks of a CPU tensor in place.

One `torch.randn` call on the host is single-threaded; here each task draws its chunk with
its own torch generator (torch's vectorized CPU normal_; torch releases the GIL) in
cache-sized pieces, and NumPy adds each piece while it is hot (single-threaded, GIL
released, so no nested OpenMP teams), so the pass scales with cores. Each task's generator
is keyed by (key, task) through `keyed_cpu_generator` (every bit of both; see `seeds.py`):
results do not depend on the thread count or scheduling, and no two tasks share a stream.

Why torch's normal_ and not NumPy's: on the 16-core H200 host (scripts/diagnostics/
noise_options.py) torch's mt19937 + Box-Muller with 1 MiB pieces drew 1.99 G samples/s at
16 threads, NumPy's float32 ziggurat 1.07-1.34 (Philox, PCG64DXSM, SFC64) and a NumPy
Box-Muller 0.51 (many short ufunc calls contend for the GIL). Pieces of 256 KiB fell to
0.86 at 16 threads for the same reason, so pieces stay at 1 MiB.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.seeds import keyed_cpu_generator
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage

_TASK_MAX_ELEMS = 1 << 22  # 16 MiB of fp32: per-task overhead (a generator, GIL work) stays small
_TASK_MIN_ELEMS = 1 << 18  # 1 MiB: small targets (LazyDP's noise rows) still use every thread
_TASKS_WANTED = 64  # task size depends on the target's size only, never the thread count
_PIECE_ELEMS = 1 << 18  # 1 MiB of fp32: stays in L2 between draw and add


class HostThreadedEngine(DenseNoiseEngine):
    name = "host-threaded"

    def __init__(self, chunk_bytes: int, threads: int) -> None:
        super().__init__(chunk_bytes, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads)
        return self._pool

    def _scratch(self, dtype: torch.dtype, size: int) -> torch.Tensor:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.dtype != dtype or buf.numel() < size:
            buf = torch.empty(size, dtype=dtype)
            self._local.buf = buf
        return buf[:size]

    def task_rows(self, rows: int, cols: int, itemsize: int) -> int:
        """Rows per task (one generator each): from the target's size and the chunk bound
        only, never the thread count, so the draws do not depend on it."""
        per_task = min(_TASK_MAX_ELEMS, max(_TASK_MIN_ELEMS, rows * cols // _TASKS_WANTED))
        return max(1, min(per_task, self.chunk_bytes // itemsize) // cols)

    def _add_gaussian(
        self, target: torch.Tensor, std: float | torch.Tensor, seed: int, timer: StageTimer
    ) -> None:
        if target.device.type != "cpu" or not target.is_contiguous():
            raise ValueError("host engine needs a contiguous CPU tensor")
        arr = target.numpy()
        rows, cols = arr.shape
        std_rows = None if isinstance(std, float) else std.numpy()
        task_rows = self.task_rows(rows, cols, arr.itemsize)
        piece_rows = max(1, _PIECE_ELEMS // cols)

        def work(task: int) -> None:
            gen = keyed_cpu_generator(seed, task)
            lo, hi = task * task_rows, min(rows, (task + 1) * task_rows)
            for start in range(lo, hi, piece_rows):
                stop = min(hi, start + piece_rows)
                noise = self._scratch(target.dtype, (stop - start) * cols).view(-1, cols)
                if std_rows is None:
                    noise.normal_(0.0, std, generator=gen)
                    arr[start:stop] += noise.numpy()
                else:
                    noise.normal_(generator=gen)
                    piece = noise.numpy()
                    piece *= std_rows[start:stop, None]
                    arr[start:stop] += piece

        n_tasks = (rows + task_rows - 1) // task_rows
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            list(self._executor().map(work, range(n_tasks)))

    def describe(self, device: torch.device) -> dict[str, str]:
        return {
            "engine": f"host-threaded ({self.threads} threads)",
            "rng": "torch mt19937 (CPU) + Box-Muller, one generator per 1-16 MiB chunk",
            "key_bits": "64-bit key + chunk index, hashed by numpy SeedSequence into the "
            "whole 19968-bit mt19937 state",
        }
