"""`--gpus N`: what a sharded run's rank count may be, checked before anything starts, and
whether torchrun started this process (read from its environment, so a one-process run
never imports torch.distributed)."""

from __future__ import annotations

import os

import torch

from lazydp_bench.errors import BenchError

SHARDED_PLACEMENTS = ("cpu", "gpu")  # N CPU processes over gloo, or N GPUs over NCCL
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def under_launcher() -> bool:
    """Whether torchrun started this process (its environment names rank and world)."""
    return all(v in os.environ for v in LAUNCHER_VARS)


def launcher_world() -> int | None:
    """The world size torchrun launched, or None outside torchrun."""
    return int(os.environ["WORLD_SIZE"]) if under_launcher() else None


def is_lead() -> bool:
    """Whether this process reports results: always, except torchrun's ranks above 0."""
    return not under_launcher() or int(os.environ["RANK"]) == 0


def launched_gpus(gpus: int) -> int:
    """Under torchrun the launcher's world size is the rank count (--gpus 1, the default,
    takes it; another --gpus must equal it)."""
    world = launcher_world()
    if world is None or gpus == world:
        return gpus
    if gpus == 1:
        return world
    raise BenchError(f"torchrun started {world} ranks, but --gpus is {gpus}")


def check_gpus(gpus: int, placement: str) -> str | None:
    """Refuse a rank count the machine cannot give; the placement the ranks compute on
    when the run is sharded (N > 1: `auto` is gpu where CUDA is, else cpu), else None.
    With gpu every rank needs its own CUDA device; with cpu, N processes share the host's
    cores over gloo (what the tests run)."""
    if gpus < 1:
        raise BenchError(f"--gpus must be at least 1, got {gpus}")
    if gpus == 1:
        return None
    if placement == "auto":
        placement = "gpu" if torch.cuda.is_available() else "cpu"
    if placement not in SHARDED_PLACEMENTS:
        valid = " or ".join(SHARDED_PLACEMENTS)
        raise BenchError(f"--gpus {gpus} shards the table over ranks on {valid}, not {placement!r}")
    if placement == "gpu":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found < gpus:
            raise BenchError(f"--gpus {gpus} needs {gpus} CUDA devices, found {found}")
    return placement
