"""`gpu`: table, history table and MLPs in GPU memory; owed noise goes into the table rows
in place (`InPlace`). All work on one GPU, so stages are timed with CUDA events."""

from __future__ import annotations

import torch

from lazydp_bench.placement.base import InPlace, MemoryNeed, OwedNoiseDelivery, Placement


class GpuPlacement(Placement):
    name = "gpu"
    timer_mode = "cuda_events"

    @classmethod
    def create(cls) -> GpuPlacement:
        cuda = torch.device("cuda")
        return cls(cuda, cuda)

    @classmethod
    def split_need(cls, *, table_side: int, history: int, dense: int, sparse: int) -> MemoryNeed:
        return MemoryNeed(table_side + history + dense, 0)

    def owed_noise_delivery(self, sparse, table: torch.Tensor) -> OwedNoiseDelivery:
        return InPlace()
