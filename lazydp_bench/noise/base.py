"""The engine interface, seeding and the deterministic unit-noise mode used by `verify`."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from lazydp_bench.profiling import StageTimer

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from (run seed, step, stream, chunk, ...): reproducible and decorrelated."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h >> 1


class DenseNoiseEngine(ABC):
    """Adds std * N(0, 1) to every element of a 2-D tensor in place.

    `std` is a scalar or a per-row tensor [rows] on the target's device (LazyDP's flush,
    where each row owes a different amount of noise). In `unit` mode every standard
    normal is replaced by 1.0, so accumulated noise can be checked exactly.
    """

    name: str = ""

    def __init__(self, chunk_bytes: int, threads: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.threads = threads

    def add_noise(
        self,
        target: torch.Tensor,
        std: float | torch.Tensor,
        seed: int,
        timer: StageTimer,
        unit: bool = False,
    ) -> None:
        target2d = target if target.dim() == 2 else target.view(-1, 1)
        if unit:
            from lazydp_bench.stages import Stage

            with timer.stage(Stage.NOISY_UPDATE_FUSED):
                target2d.add_(std if isinstance(std, float) else std.view(-1, 1))
            return
        # N(0, 1) is symmetric: only unit mode needs the sign of std.
        std = abs(std) if isinstance(std, float) else std.abs()
        self._add_gaussian(target2d, std, seed, timer)

    @abstractmethod
    def _add_gaussian(
        self, target: torch.Tensor, std: float | torch.Tensor, seed: int, timer: StageTimer
    ) -> None: ...

    @abstractmethod
    def describe(self, device: torch.device) -> dict[str, str]:
        """{"engine": ..., "rng": ...} for the record."""

    def rows_per_chunk(self, target: torch.Tensor) -> int:
        return max(1, self.chunk_bytes // (target.shape[1] * target.element_size()))
