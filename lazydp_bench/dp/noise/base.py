"""The engine interface, seeding and the deterministic unit-noise mode used by `verify`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable

import torch

from lazydp_bench.dp.seeds import derive_seed
from lazydp_bench.measure.profiling import StageTimer
from lazydp_bench.runtime.step_scalars import Scalar

__all__ = ["DenseNoiseEngine", "Scalar", "derive_seed"]

Std = float | torch.Tensor  # a scalar, a 0-dim device tensor, or one std per row
SeedArg = int | torch.Tensor  # a seed, or a 0-dim int64 tensor on the target's device


class DenseNoiseEngine(ABC):
    """Adds std * N(0, 1) to every element of a 2-D tensor in place.

    `std` is a scalar (float, or a per-step `Scalar`) or a per-row tensor [rows] on the
    target's device (LazyDP, where each row owes a different amount of noise). In `unit`
    mode every standard normal is replaced by 1.0, so accumulated noise can be checked
    exactly. `reads_device_scalars` engines take seeds and stds from device memory, so a
    captured CUDA graph draws fresh noise every replay.
    """

    name: str = ""
    reads_device_scalars: bool = False

    def __init__(self, chunk_bytes: int, threads: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.threads = threads

    def add_noise(self, target: torch.Tensor, std, seed, timer: StageTimer, unit: bool = False):
        target2d = target if target.dim() == 2 else target.view(-1, 1)
        reads = self.reads_device_scalars
        on_device = target.device.type != "cpu"
        std = Scalar.resolve(std, on_device and (reads or unit))
        seed = Scalar.resolve(seed, on_device and reads)
        if unit:
            from lazydp_bench.measure.stages import Stage

            with timer.stage(Stage.NOISY_UPDATE_FUSED):
                per_row = isinstance(std, torch.Tensor) and std.dim() == 1
                target2d.add_(std.view(-1, 1) if per_row else std)
            return
        # N(0, 1) is symmetric: only unit mode needs the sign of std.
        if isinstance(std, float):
            std = abs(std)
        elif std.dim() == 1:
            std = std.abs()
        self._add_gaussian(target2d, std, seed, timer)

    def add_noise_rows(
        self,
        table: torch.Tensor,
        rows: torch.Tensor,
        std: torch.Tensor,
        seed,
        timer: StageTimer,
        unit: bool = False,
    ) -> None:
        """table[rows[k]] += std[k] * z_k for every slot k with std[k] != 0 (those rows must be
        unique; slots with std 0 are padding and add nothing).

        The noise is the one `add_noise` would draw into a zero [len(rows), D] buffer with the
        same seed, so engines that fuse this (no buffer, draw and add in one pass over the
        rows) can be checked against this reference (equal up to rounding).
        """
        noise = torch.zeros((rows.numel(), table.shape[1]), dtype=table.dtype, device=table.device)
        self.add_noise(noise, std, seed, timer, unit)
        table.index_add_(0, rows, noise)

    def prepare(self, target: torch.Tensor) -> None:  # noqa: B027 (most engines need nothing)
        """Allocate what noising `target` needs and compile its kernels now, so that no
        timed call pays for them (LazyDP's flush is timed once, on its first call)."""

    def std_device(self, target: torch.Tensor) -> torch.device:
        """Where a per-row std for `target` is best computed and handed over (the
        streamed engine reads it on its GPU, so it need not cross PCIe twice)."""
        return target.device

    def add_noise_calls(
        self,
        target: torch.Tensor,
        calls: Iterable[tuple[int, int, Std | Scalar, SeedArg | Scalar]],
        timer: StageTimer,
        unit: bool = False,
    ) -> None:
        """`add_noise(target[start:stop], std, seed)` for each call, in order (LazyDP's
        flush: one call per chunk, each with its own key and per-row std). `calls` may be
        a generator computing each call when it is reached; engines that pipeline (the
        streamed one) overlap the calls."""
        for start, stop, std, seed in calls:
            self.add_noise(target[start:stop], std, seed, timer, unit)

    @abstractmethod
    def _add_gaussian(
        self, target: torch.Tensor, std: Std, seed: SeedArg, timer: StageTimer
    ) -> None: ...

    @abstractmethod
    def describe(self, device: torch.device) -> dict[str, str]:
        """{"engine": ..., "rng": ..., "key_bits": ...} for the record."""

    def draw_only(self, device: torch.device) -> tuple[Callable[[], None], int] | None:
        """A launch of the generator alone (no memory traffic) and the normals it makes,
        where the engine has one (the fused GPU kernel, host-philox): its arithmetic
        bound."""
        return None

    def rows_per_chunk(self, target: torch.Tensor) -> int:
        return max(1, self.chunk_bytes // (target.shape[1] * target.element_size()))
