"""Host `fused` engine: a thread pool noises row chunks of a CPU tensor in place.

One `torch.randn` call on the host is single-threaded (~0.13 G samples/s measured on the
GPU machine's host); here each task draws its chunk from its own NumPy generator (which
releases the GIL) in cache-sized pieces and adds them while they are hot, so the pass
scales with cores. Each chunk is seeded by (seed, chunk): results do not depend on the
thread count or scheduling.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lazydp_bench.noise.base import DenseNoiseEngine
from lazydp_bench.profiling import StageTimer
from lazydp_bench.stages import Stage

_TASK_ELEMS = 1 << 22  # 16 MiB of fp32 per task
_PIECE_ELEMS = 1 << 15  # 128 KiB of fp32: stays in L2 between draw and add


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

    def _scratch(self, dtype: np.dtype, size: int) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            self._local.buf = buf
        return buf[:size]

    def _add_gaussian(
        self, target: torch.Tensor, std: float | torch.Tensor, seed: int, timer: StageTimer
    ) -> None:
        if target.device.type != "cpu" or not target.is_contiguous():
            raise ValueError("host engine needs a contiguous CPU tensor")
        arr = target.numpy()
        rows, cols = arr.shape
        std_rows = None if isinstance(std, float) else std.numpy()
        task_rows = max(1, min(_TASK_ELEMS, self.chunk_bytes // arr.itemsize) // cols)
        piece_rows = max(1, _PIECE_ELEMS // cols)

        def work(task: int) -> None:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, task])))
            lo, hi = task * task_rows, min(rows, (task + 1) * task_rows)
            for start in range(lo, hi, piece_rows):
                stop = min(hi, start + piece_rows)
                noise = self._scratch(arr.dtype, (stop - start) * cols).reshape(-1, cols)
                rng.standard_normal(out=noise, dtype=arr.dtype)
                noise *= std if std_rows is None else std_rows[start:stop, None]
                arr[start:stop] += noise

        n_tasks = (rows + task_rows - 1) // task_rows
        with timer.stage(Stage.NOISY_UPDATE_FUSED):
            list(self._executor().map(work, range(n_tasks)))

    def describe(self, device: torch.device) -> dict[str, str]:
        return {
            "engine": f"host-threaded ({self.threads} threads)",
            "rng": "numpy PCG64 per 16 MiB chunk, SeedSequence(seed, chunk), ziggurat normals",
        }
