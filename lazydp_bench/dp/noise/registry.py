"""Engine names for `--noise-impl`, and which concrete engine serves each device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lazydp_bench.dp.noise import triton_fused
from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.noise.host_philox import HostPhiloxEngine
from lazydp_bench.dp.noise.round_trip import RoundTripEngine
from lazydp_bench.dp.noise.streamed import StreamedEngine
from lazydp_bench.dp.noise.torch_chunked import TorchChunkedEngine
from lazydp_bench.errors import BenchError

NOISE_ENGINES = ("torch", "fused", "streamed", "roundtrip", "host-philox")
# The host engine of `fused` and `auto` (a table in host RAM without a GPU to help): the
# compiled Philox engine, 4.30 G samples/s at 16 threads on the H200 machine's host against
# 1.74 for host threads drawing with torch (scripts/diagnostics/host_noise_options.py, one
# process, 2 GiB); it falls back to host threads where no C compiler is found.
HOST_ENGINE = HostPhiloxEngine
GPU_HELPED = {"streamed": StreamedEngine, "roundtrip": RoundTripEngine}  # host tables only


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


def make_engine(
    impl: str, chunk_bytes: int, threads: int, *, stream_via: torch.device | None = None
) -> EngineSet:
    """`torch`: the chunked torch engine everywhere. `fused`: the fused Triton kernel on a
    GPU, host threads on the host. `streamed`: as `fused`, but a host table's noise is
    drawn on `stream_via` (the GPU of a `hybrid` placement) and streamed down;
    `roundtrip`: a host table's rows go up to `stream_via`, are noised there and come back.
    `auto`: `roundtrip` (the faster, `round_trip.py`) where a placement offers `stream_via`
    and Triton exists, else `fused`. `host-philox`: a host table's noise drawn and added by
    compiled C (`host_philox.py`), the fused Triton kernel's stream; that kernel on a GPU."""
    if impl == "torch":
        engine = TorchChunkedEngine(chunk_bytes, threads)
        return EngineSet("torch", engine, engine)
    if impl not in ("fused", "auto", "host-philox", *GPU_HELPED):
        valid = ", ".join(NOISE_ENGINES)
        raise BenchError(f"unknown noise impl {impl!r} (valid: auto, {valid})")
    fused = triton_fused.TritonFusedEngine(chunk_bytes, threads) if triton_fused.AVAILABLE else None
    if impl == "host-philox":
        return EngineSet(impl, fused, HostPhiloxEngine(chunk_bytes, threads))
    cuda = fused or (TorchChunkedEngine(chunk_bytes, threads) if impl == "auto" else None)
    if impl in GPU_HELPED and (stream_via is None or fused is None):
        raise BenchError(
            f"--noise-impl {impl} noises a host table with the GPU: it needs the hybrid "
            "placement and Triton"
        )
    if impl != "fused" and stream_via is not None and fused is not None:
        name = "roundtrip" if impl == "auto" else impl
        host = GPU_HELPED[name](chunk_bytes, threads, drawer=fused, via=stream_via)
        return EngineSet(name, cuda, host)
    return EngineSet("fused", cuda, HOST_ENGINE(chunk_bytes, threads))
