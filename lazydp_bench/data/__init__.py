"""Batch sources: where training examples come from (synthetic, seeded)."""

from lazydp_bench.data.distributions import Distribution, parse_distribution
from lazydp_bench.data.synthetic import Batch, SyntheticBatchSource

__all__ = ["Batch", "Distribution", "SyntheticBatchSource", "parse_distribution"]
