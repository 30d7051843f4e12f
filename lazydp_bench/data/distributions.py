"""Access distributions for embedding lookups.

- `uniform`: every row of a table equally likely (the paper's default).
- `zipf:<alpha>`: rank k (1-based) drawn with probability ~ k^-alpha over the table's rows,
  sampled in O(1) memory from the continuous bounded power law (inverse CDF), then mapped
  to a row by a fixed per-table affine permutation so hot rows are scattered over the
  table instead of packed at its start.
- Locality presets of the paper's Fig. 13(d) (which sampled Criteo Kaggle histograms) are
  approximated by Zipf exponents: `low` = zipf:0.5, `medium` = zipf:0.9, `high` = zipf:1.2.
- `profile:<file>`: each table replays the access curve that `data profile` measured on
  real data (piecewise-linear inverse CDF over its knots), folded modulo the table's rows
  and scattered by the same permutation as Zipf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lazydp_bench.errors import BenchError

LOCALITY_ALPHA = {"low": 0.5, "medium": 0.9, "high": 1.2}
# A prime larger than any table's row count makes rank -> (rank * P + b) mod N a bijection.
_PERMUTE_PRIME = 2_654_435_761


@dataclass(frozen=True)
class Distribution:
    kind: str  # "uniform" | "zipf" | "profile"
    alpha: float = 0.0
    source: str | None = None  # profile: the file
    curves: ProfileCurves | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        if self.source is not None:
            return f"{self.kind}:{self.source}"
        return "uniform" if self.kind == "uniform" else f"zipf:{self.alpha:g}"

    def check_tables(self, num_tables: int) -> None:
        """A replayed profile has one access curve per table of the workload."""
        if self.curves is not None and self.curves.num_tables != num_tables:
            raise BenchError(
                f"{self.label} has {self.curves.num_tables} tables' access curves; the "
                f"workload has {num_tables} tables"
            )


class ProfileCurves:
    """Per-table access curves (knots: the top `ranks` rows take `shares` of the lookups)
    as padded [T, K] tensors, copied once to each device they are sampled on."""

    def __init__(self, curves: list[tuple[tuple[int, ...], tuple[float, ...]]]) -> None:
        width = max(len(r) for r, _ in curves)
        self.num_tables = len(curves)
        ranks = [list(r) + [r[-1]] * (width - len(r)) for r, _ in curves]
        shares = [list(s) + [1.0] * (width - len(s)) for _, s in curves]
        self._host = tuple(torch.tensor(x, dtype=torch.float64) for x in (ranks, shares))
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = tuple(x.to(device) for x in self._host)
        return self._on[device]


def _profile(path: str) -> Distribution:
    from lazydp_bench.data.profile import load_profile

    tables = load_profile(path).tables
    curves = ProfileCurves([(t.cdf_ranks, t.cdf_shares) for t in tables])
    return Distribution("profile", source=path, curves=curves)


# `<name>:<argument>` forms whose argument keeps its case (a file path)
PREFIXED: dict[str, Callable[[str], Distribution]] = {"profile": _profile}


def parse_distribution(text: str) -> Distribution:
    name, sep, argument = text.strip().partition(":")
    if sep and name.lower() in PREFIXED and argument.strip():
        return PREFIXED[name.lower()](argument.strip())
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
        f"unknown distribution {text!r} (valid: uniform, zipf:<alpha > 0>, low, medium, high, "
        "profile:<file of `data profile`>)"
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
    ranks = RANKS[dist.kind](u, n, dist)
    limit = table_rows.view(1, -1, 1)
    ranks = torch.minimum(ranks, limit - 1)
    if dist.kind == "uniform":
        return ranks
    shift = (torch.arange(len(table_rows), device=device) * 7919).view(1, -1, 1)
    return (ranks * _PERMUTE_PRIME + shift) % limit


def _profile_ranks(u: torch.Tensor, n: torch.Tensor, dist: Distribution) -> torch.Tensor:
    """Inverse of each table's piecewise-linear access curve, floored to 0-based ranks and
    folded modulo the table's rows (a profile of larger tables maps onto smaller ones)."""
    ranks, shares = dist.curves.on(u.device)
    b, t, pooling = u.shape
    flat = u.permute(1, 0, 2).reshape(t, -1).contiguous()
    j = torch.searchsorted(shares, flat).clamp_(1, shares.shape[1] - 1)
    s0, s1 = shares.gather(1, j - 1), shares.gather(1, j)
    r0, r1 = ranks.gather(1, j - 1), ranks.gather(1, j)
    x = r0 + (flat - s0) / (s1 - s0).clamp_(min=1e-300) * (r1 - r0)
    rank = torch.minimum(x.floor(), r1 - 1).long().clamp_(min=0)
    rank = rank.view(t, b, pooling).permute(1, 0, 2).contiguous()
    return rank % n.long()


RANKS: dict[str, Callable[[torch.Tensor, torch.Tensor, Distribution], torch.Tensor]] = {
    "uniform": lambda u, n, _: (u * n).long(),
    "zipf": lambda u, n, dist: _zipf_ranks(u, n, dist.alpha),
    "profile": _profile_ranks,
}


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
