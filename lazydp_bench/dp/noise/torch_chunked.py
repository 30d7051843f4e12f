"""`torch` engine: chunked `normal_` into one bounded buffer, then an add per chunk.

Times `noise_sampling` and `param_update` separately (the paper's Fig. 5 split).
"""

from __future__ import annotations

import torch

from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.seeds import MASK64, keyed_cpu_generator
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.measure.stages import Stage


def _generator(device: torch.device, key: int) -> torch.Generator:
    """The CUDA generator keeps a 64-bit seed (its Philox key); the CPU one would keep 32
    bits of it, so CPU draws get a generator keyed by the whole key (see `seeds.py`)."""
    if device.type == "cpu":
        return keyed_cpu_generator(key)
    return torch.Generator(device=device).manual_seed(key & MASK64)


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
        gen = _generator(target.device, seed)
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
        if device.type == "cuda":
            rng, key = "torch Philox4x32-10 (CUDA)", "64-bit key = the call's seed"
        else:
            rng, key = "torch mt19937 (CPU)", "64-bit key hashed into the whole mt19937 state"
        return {"engine": "torch-chunked", "rng": f"{rng}, one generator per call", "key_bits": key}
