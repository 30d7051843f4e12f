"""Batch sources: where training examples come from (synthetic and seeded, or Criteo files)."""

from lazydp_bench.data.criteo import CriteoBatchSource
from lazydp_bench.data.distributions import Distribution, parse_distribution
from lazydp_bench.data.synthetic import Batch, SyntheticBatchSource

__all__ = [
    "Batch",
    "CriteoBatchSource",
    "Distribution",
    "SyntheticBatchSource",
    "parse_distribution",
]
