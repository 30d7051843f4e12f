"""Placement name -> strategy class (`--placement` choices, besides `auto`)."""

from __future__ import annotations

from lazydp_bench.errors import BenchError
from lazydp_bench.placement.base import Placement
from lazydp_bench.placement.cpu import CpuPlacement
from lazydp_bench.placement.gpu import GpuPlacement
from lazydp_bench.placement.hybrid import HybridPlacement
from lazydp_bench.placement.hybrid_host import HybridHostPlacement

PLACEMENTS: dict[str, type[Placement]] = {
    cls.name: cls for cls in (GpuPlacement, HybridPlacement, HybridHostPlacement, CpuPlacement)
}


def make_placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise BenchError(f"unknown placement {name!r} (valid: auto, {', '.join(PLACEMENTS)})")
    return PLACEMENTS[name].create()
