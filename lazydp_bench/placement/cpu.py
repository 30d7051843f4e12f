"""`cpu`: everything in host RAM; owed noise is merged with the gradient into one threaded
host update (`Merged`), or goes in place when the sparse ops run their device path on the
host (tests do, to check that path without a GPU)."""

from __future__ import annotations

import torch

from lazydp_bench.placement.base import InPlace, MemoryNeed, Merged, OwedNoiseDelivery, Placement


class CpuPlacement(Placement):
    name = "cpu"
    graph_blocker = "cpu placement runs no GPU work"

    @classmethod
    def create(cls) -> CpuPlacement:
        cpu = torch.device("cpu")
        return cls(cpu, cpu)

    @classmethod
    def split_need(cls, *, table_side: int, history: int, dense: int, sparse: int) -> MemoryNeed:
        return MemoryNeed(0, table_side + history + dense)

    def owed_noise_delivery(self, sparse, table: torch.Tensor) -> OwedNoiseDelivery:
        return InPlace() if sparse.device_path(table) else Merged()
