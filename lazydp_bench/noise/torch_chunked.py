"""`torch` engine: chunked `normal_` into one bounded buffer, then an add per chunk.

Times `noise_sampling` and `param_update` separately (the paper's Fig. 5 split).
"""

from __future__ import annotations

import torch

from lazydp_bench.noise.base import DenseNoiseEngine
from lazydp_bench.profiling import StageTimer
from lazydp_bench.stages import Stage


class TorchChunkedEngine(DenseNoiseEngine):
    name = "torch"

    def __init__(self, chunk_bytes: int, threads: int) -> None:
        super().__init__(chunk_bytes, threads)
        self._buffers: dict[tuple, torch.Tensor] = {}

    def _buffer(self, target: torch.Tensor) -> torch.Tensor:
        rows = min(target.shape[0], self.rows_per_chunk(target))
        key = (target.device, target.dtype, target.shape[1])
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < rows:
            buf = torch.empty((rows, target.shape[1]), dtype=target.dtype, device=target.device)
            self._buffers[key] = buf
        return buf

    def _add_gaussian(
        self, target: torch.Tensor, std: float | torch.Tensor, seed: int, timer: StageTimer
    ) -> None:
        buf = self._buffer(target)
        gen = torch.Generator(device=target.device).manual_seed(seed)
        step = self.rows_per_chunk(target)
        for start in range(0, target.shape[0], step):
            stop = min(target.shape[0], start + step)
            noise = buf[: stop - start]
            with timer.stage(Stage.NOISE_SAMPLING):
                noise.normal_(generator=gen)
            with timer.stage(Stage.PARAM_UPDATE):
                if isinstance(std, float):
                    target[start:stop].add_(noise, alpha=std)
                else:
                    target[start:stop].addcmul_(noise, std[start:stop].view(-1, 1))

    def describe(self, device: torch.device) -> dict[str, str]:
        rng = "torch Philox4x32 (CUDA)" if device.type == "cuda" else "torch mt19937 (CPU)"
        return {"engine": "torch-chunked", "rng": f"{rng}, one generator per call"}
