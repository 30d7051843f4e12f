"""Access distributions for embedding lookups.

- `uniform`: every row of a table equally likely (the paper's default).
- `zipf:<alpha>`: rank k (1-based) drawn with probability ~ k^-alpha over the table's rows,
  sampled in O(1) memory from the continuous bounded power law (inverse CDF), then mapped
  to a row by a fixed per-table affine permutation so hot rows are scattered over the
  table instead of packed at its start.
- Locality presets of the paper's Fig. 13(d) (which sampled Criteo Kaggle histograms) are
  approximated by Zipf exponents: `low` = zipf:0.5, `medium` = zipf:0.9, `high` = zipf:1.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lazydp_bench.errors import BenchError

LOCALITY_ALPHA = {"low": 0.5, "medium": 0.9, "high": 1.2}
# A prime larger than any table's row count makes rank -> (rank * P + b) mod N a bijection.
_PERMUTE_PRIME = 2_654_435_761


@dataclass(frozen=True)
class Distribution:
    kind: str  # "uniform" | "zipf"
    alpha: float = 0.0

    @property
    def label(self) -> str:
        return "uniform" if self.kind == "uniform" else f"zipf:{self.alpha:g}"


def parse_distribution(text: str) -> Distribution:
    text = text.strip().lower()
    if text == "uniform":
        return Distribution("uniform")
    if text in LOCALITY_ALPHA:
        return Distribution("zipf", LOCALITY_ALPHA[text])
    if text.startswith("zipf:"):
        try:
            alpha = float(text.split(":", 1)[1])
        except ValueError:
            alpha = -1.0
        if alpha > 0:
            return Distribution("zipf", alpha)
    raise BenchError(
        f"unknown distribution {text!r} (valid: uniform, zipf:<alpha > 0>, low, medium, high)"
    )


def sample_rows(
    dist: Distribution,
    table_rows: torch.Tensor,
    shape: tuple[int, int, int],
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw local row ids of shape [B, T, L] (T = len(table_rows)), vectorized over tables."""
    device = table_rows.device
    u = torch.rand(shape, dtype=torch.float64, device=device, generator=generator)
    n = table_rows.to(torch.float64).view(1, -1, 1)
    ranks = (u * n).long() if dist.kind == "uniform" else _zipf_ranks(u, n, dist.alpha)
    limit = table_rows.view(1, -1, 1)
    ranks = torch.minimum(ranks, limit - 1)
    if dist.kind == "uniform":
        return ranks
    shift = (torch.arange(len(table_rows), device=device) * 7919).view(1, -1, 1)
    return (ranks * _PERMUTE_PRIME + shift) % limit


def _zipf_ranks(u: torch.Tensor, n: torch.Tensor, alpha: float) -> torch.Tensor:
    """Inverse CDF of the continuous power law x^-alpha on [1, n+1), floored to 0-based ranks."""
    if abs(alpha - 1.0) < 1e-9:
        x = torch.exp(u * torch.log1p(n))
    else:
        e = 1.0 - alpha
        x = (1.0 + u * ((n + 1.0) ** e - 1.0)) ** (1.0 / e)
    return (x.floor().long() - 1).clamp_(min=0)


def check_table_rows(max_rows: int) -> None:
    if max_rows >= _PERMUTE_PRIME:
        raise BenchError(f"zipf sampling supports tables below {_PERMUTE_PRIME} rows")
