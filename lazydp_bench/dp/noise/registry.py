"""Engine names for `--noise-impl`, and which concrete engine serves each device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lazydp_bench.dp.noise import triton_fused
from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.noise.host_threaded import HostThreadedEngine
from lazydp_bench.dp.noise.torch_chunked import TorchChunkedEngine
from lazydp_bench.errors import BenchError

NOISE_ENGINES = ("torch", "fused")


@dataclass
class EngineSet:
    """The engine used for each device kind under one `--noise-impl` choice."""

    impl: str
    cuda: DenseNoiseEngine | None
    cpu: DenseNoiseEngine

    def for_device(self, device: torch.device) -> DenseNoiseEngine:
        if device.type == "cuda":
            if self.cuda is None:
                raise BenchError("the fused GPU noise engine needs Triton, which is not installed")
            return self.cuda
        return self.cpu


def make_engine(impl: str, chunk_bytes: int, threads: int) -> EngineSet:
    """`auto` and `fused` pick the fused engines; `torch` the chunked torch engine."""
    if impl == "torch":
        engine = TorchChunkedEngine(chunk_bytes, threads)
        return EngineSet("torch", engine, engine)
    if impl in ("fused", "auto"):
        cuda = (
            triton_fused.TritonFusedEngine(chunk_bytes, threads) if triton_fused.AVAILABLE else None
        )
        if cuda is None and impl == "auto":
            cuda = TorchChunkedEngine(chunk_bytes, threads)
        return EngineSet("fused", cuda, HostThreadedEngine(chunk_bytes, threads))
    raise BenchError(f"unknown noise impl {impl!r} (valid: auto, {', '.join(NOISE_ENGINES)})")
