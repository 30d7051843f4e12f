"""Per-step values (learning rate, noise std, step index, noise seeds) kept in device memory.

A CUDA graph replays the launches it captured with the arguments they had at capture: a
Python float or int passed to a kernel would freeze step t's learning rate and seed into
every replay. So every value that changes between steps lives in a tensor at a fixed
address on each device the step runs on, and `prepare(t)` copies step t's row of a
precomputed schedule into it (one small device-to-device copy per dtype per device,
launched before the step, never waiting for the host). Host code and engines that take
plain arguments read the Python copy (`Scalar.value`); code on a GPU reads `Scalar.tensor`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
import torch

from lazydp_bench.dp.seeds import derive_seed, derive_seeds

# Noise streams: one seed space per purpose so no two draws share randomness.
STREAM_TABLE, STREAM_MLP, STREAM_SPARSE, STREAM_FLUSH = 0, 1, 2, 3

FLOAT_FIELDS = ("alpha", "noise_alpha")  # -lr_t / B and -lr_t sigma C / B
INT_FIELDS = ("t_next", "seed_table", "seed_mlp", "seed_sparse")  # t + 1 and seeds of step t
SEED_STREAMS = (STREAM_TABLE, STREAM_MLP, STREAM_SPARSE)


class Schedule(Protocol):
    """A learning-rate schedule: one step's rate, and many steps' at once (`LRSchedule`)."""

    def lr(self, step: int) -> float: ...

    def rates(self, steps: np.ndarray) -> np.ndarray: ...


def schedule_bytes(steps: int, elem: int) -> int:
    """Device bytes of `steps` steps' schedule on one device (the memory estimate's share)."""
    return steps * (len(FLOAT_FIELDS) * elem + len(INT_FIELDS) * 8)


@dataclass(frozen=True)
class Scalar:
    """One per-step value, as a Python number and as a 0-dim tensor on one device.

    `source` is the number or, for `StepScalars`' values, a function that returns the
    CURRENT step's number: host work recorded once while a CUDA graph captures a hybrid
    step, and run after every replay (`host_work.py`), then reads step t's value, not the
    value of the step that was captured."""

    source: float | int | Callable[[], float | int]
    tensor: torch.Tensor

    @property
    def value(self) -> float | int:
        return self.source() if callable(self.source) else self.source

    @staticmethod
    def resolve(x, use_tensor: bool):
        """A `Scalar` as code reads it: its device tensor where that code may be replayed by
        a CUDA graph (`use_tensor`), its Python value elsewhere; anything else passes."""
        if isinstance(x, Scalar):
            return x.tensor if use_tensor else x.value
        return x


def step_values(
    t: int, lr: Schedule, batch: int, noise: float, seed: int
) -> tuple[list[float], list[int]]:
    """Step t's floats (FLOAT_FIELDS order) and ints (INT_FIELDS order)."""
    alpha = -lr.lr(t) / batch
    seeds = [derive_seed(seed, t, s) for s in SEED_STREAMS]
    return [alpha, alpha * noise], [t + 1, *seeds]


def schedule_rows(
    steps: int, lr: Schedule, batch: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`step_values` of steps 0..steps-1 as (float64 [steps, 2], int64 [steps, 4]) tensors,
    computed with numpy in one pass (a Python loop costs ~12 us a step: 12 s a million)."""
    t = np.arange(steps, dtype=np.int64)
    alpha = -lr.rates(t) / batch
    floats = np.stack([alpha, alpha * noise], axis=1)
    seeds = [derive_seeds(seed, t, s).view(np.int64) for s in SEED_STREAMS]
    ints = np.stack([t + 1, *seeds], axis=1)
    return torch.from_numpy(floats), torch.from_numpy(ints)


class StepScalars:
    """The schedule of every step's values on each device, and step t's current values.

    `noise` is sigma * C (the std of one step's summed noise before lr / B).
    """

    def __init__(
        self,
        lr: Schedule,
        batch: int,
        noise: float,
        *,
        seed: int,
        steps: int,
        devices: Iterable[torch.device],
        dtype: torch.dtype,
    ) -> None:
        self._args = (lr, batch, noise, seed)
        self._dtype = dtype
        self._devices = list(dict.fromkeys(_key(d) for d in devices))
        self._current = {
            d: (
                torch.zeros(len(FLOAT_FIELDS), dtype=dtype, device=d),
                torch.zeros(len(INT_FIELDS), dtype=torch.int64, device=d),
            )
            for d in self._devices
        }
        self._build(max(1, steps))
        self.t: int | None = None
        self._values: dict[str, float | int] = {}

    @property
    def capacity(self) -> int:
        return self._steps

    def _build(self, steps: int) -> None:
        floats, ints = schedule_rows(steps, *self._args)
        floats = floats.to(self._dtype)
        self._schedule = {d: (floats.to(d), ints.to(d)) for d in self._devices}
        self._steps = steps

    def prepare(self, t: int, fixed_capacity: bool = False) -> None:
        """Make step t's values current. A graph replay needs `fixed_capacity`: growing the
        schedule would move nothing the graph reads, but it must never be needed there."""
        if t >= self._steps:
            if fixed_capacity:
                raise RuntimeError(f"step {t} is past the {self._steps} steps planned")
            self._build(max(t + 1, 2 * self._steps))
        for d in self._devices:
            floats, ints = self._schedule[d]
            cur_f, cur_i = self._current[d]
            cur_f.copy_(floats[t], non_blocking=True)
            cur_i.copy_(ints[t], non_blocking=True)
        fl, it = step_values(t, *self._args)
        self._values = dict(zip(FLOAT_FIELDS + INT_FIELDS, fl + it, strict=True))
        self.t = t

    def get(self, name: str, device: torch.device) -> Scalar:
        """`name`'s Scalar on `device`; its `.value` follows later `prepare` calls."""
        if self.t is None:
            raise RuntimeError("StepScalars.prepare(t) must run before the step reads values")
        cur_f, cur_i = self._current[_key(device)]
        current = partial(self.current_value, name)
        if name in FLOAT_FIELDS:
            return Scalar(current, cur_f[FLOAT_FIELDS.index(name)])
        return Scalar(current, cur_i[INT_FIELDS.index(name)])

    def current_value(self, name: str) -> float | int:
        """The Python value of `name` for the step `prepare` made current."""
        return self._values[name]


def _key(device: torch.device | str) -> torch.device:
    """`cuda` and `cuda:0` name the same device: key both by their index."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
