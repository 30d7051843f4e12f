"""`hybrid-host`: the paper's design. Tables, LazyDP's history table and all table noise in
host RAM and on host cores; only the MLPs (and their noise) on the GPU.

It differs from `hybrid` only where the GPU would help the table side: DP-SGD's dense
table noise is drawn by host threads (never streamed from the GPU), and LazyDP keeps its
history table on the host, draws the input queue's noise there and merges it with the
gradient rows into one threaded host update (`Merged`), as the paper's CPU code does.
Running both baselines here gives the paper-style pair (both on the host); `hybrid` gives
the best-effort pair (both may use the GPU).

LazyDP's per-step bookkeeping then runs on the host between GPU kernels, which a captured
CUDA graph cannot replay, so its steps run eagerly (`lazy_graph_blocker`); SGD and the
DP-SGD variants capture their GPU work as in `hybrid`.
"""

from __future__ import annotations

import torch

from lazydp_bench.placement.base import MemoryNeed, Merged, OwedNoiseDelivery
from lazydp_bench.placement.hybrid import HybridPlacement


class HybridHostPlacement(HybridPlacement):
    name = "hybrid-host"
    streams_table_noise = False
    lazy_graph_blocker = (
        "hybrid-host runs LazyDP's bookkeeping and queue noise on host cores between GPU "
        "kernels, which a CUDA graph cannot replay"
    )

    @property
    def work_device(self) -> torch.device:
        return self.table_device

    @classmethod
    def split_need(cls, *, table_side: int, history: int, dense: int, sparse: int) -> MemoryNeed:
        return MemoryNeed(dense + sparse, table_side + history)

    def owed_noise_delivery(self, sparse, table: torch.Tensor) -> OwedNoiseDelivery:
        return Merged()
