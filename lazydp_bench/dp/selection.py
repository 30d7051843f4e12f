"""Row selection for sparsity-preserving DP training: the noise split, AdaFEST's noisy
contribution counts and its false positives, and FEST's public top-k rows.

Sources: Ghazi et al., "Sparsity-Preserving Differentially Private Training of Large
Embedding Models", NeurIPS 2023 (arXiv 2311.08357); TensorFlow Privacy's implementation,
`tensorflow_privacy/privacy/sparsity_preserving_noise/sparse_noise_utils.py` (noise split,
partition selection, geometric-skip sampling) and `registry_functions/embedding.py`
(each example's contribution counts normalised to sum 1).

Everything here is shape-static once a run's parameters are fixed: the false positives
are drawn into a fixed capacity, so a step on a GPU never waits for the host, and no
buffer is table-sized (except when the parameters make p large enough that the selected
set itself is).
"""

from __future__ import annotations

import math

import torch

from lazydp_bench.data.distributions import _PERMUTE_PRIME, Distribution
from lazydp_bench.dp.seeds import keyed_cpu_generator
from lazydp_bench.runtime.sparse import SparseRows

FP_SIGMAS = 10.0  # false-positive capacity: mean + 10 sd of the binomial count, plus slack
FP_SLACK = 16


def split_noise_multiplier(sigma: float, fraction: float) -> tuple[float, float]:
    """(sigma_sel, sigma_grad) whose two Gaussian mechanisms compose to one of `sigma`.

    TF Privacy's convention (`split_noise_multiplier`): `fraction` f of the budget goes
    to selection; with r = f / (1 - f), sigma_sel = sigma sqrt(1 + r^2) and
    sigma_grad = sigma sqrt(1 + r^2) / r, so 1/sigma^2 = 1/sigma_sel^2 + 1/sigma_grad^2
    (the Gaussian mechanisms' rho = 1 / (2 sigma^2) add). One selection runs over the
    whole concatenated table (each example's counts sum to C1 over all its tables), so
    there is no sqrt(#selection layers) factor.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"selection fraction must be in (0, 1), got {fraction}")
    r = fraction / (1.0 - fraction)
    stretch = math.sqrt(1.0 + r * r)
    return sigma * stretch, sigma * stretch / r


def composed_multiplier(sigma_sel: float, sigma_grad: float) -> float:
    """The one noise multiplier equivalent to the two mechanisms (inverse of the split)."""
    if sigma_sel == 0 or sigma_grad == 0:
        return 0.0
    return (sigma_sel**-2 + sigma_grad**-2) ** -0.5


def false_positive_probability(tau: float, std: float, noise_mode: str = "gaussian") -> float:
    """P(N(0, std^2) >= tau): the chance a row no example touched is selected. In `unit`
    mode the draw is +1 (so the row's value is std), with noise `off` it is 0."""
    if noise_mode == "unit":
        return 1.0 if std >= tau else 0.0
    if noise_mode == "off" or std == 0:
        return 1.0 if tau <= 0 else 0.0
    return 0.5 * math.erfc(tau / (std * math.sqrt(2.0)))


def false_positive_capacity(rows: int, p: float) -> int:
    """Slots for the false positives among at most `rows` candidates: the binomial mean
    plus FP_SIGMAS standard deviations (TF Privacy draws 1.2 x the mean and loops; a
    fixed capacity keeps the step sync-free), never more than `rows`."""
    if p <= 0 or rows == 0:
        return 0
    mean = rows * p
    bound = mean + FP_SIGMAS * math.sqrt(mean * (1.0 - p)) + FP_SLACK
    return min(rows, math.ceil(bound))


def keyed_generator(device: torch.device, key: int) -> torch.Generator:
    """A generator keyed by all 64 bits of `key` (seeds.py: CPU mt19937 via SeedSequence;
    CUDA's Philox keeps the whole seed)."""
    if device.type == "cpu":
        return keyed_cpu_generator(key)
    return torch.Generator(device=device).manual_seed(key)


def geometric_ranks(uniform: torch.Tensor, p: float, limit: int) -> torch.Tensor:
    """Sorted ranks of the Bernoulli(p) successes among 0, 1, 2, ..., from one uniform per
    success: gaps floor(log U / log(1 - p)) ~ Geometric(p) failures, ranks their running
    sum (TF Privacy's `sample_false_positive_indices`). Gaps are capped at `limit` (any
    rank >= limit is discarded by the caller), so the running sum cannot overflow."""
    log_q = math.log1p(-p) if p < 1 else -math.inf
    gaps = torch.floor(torch.log(uniform) / log_q).clamp_(max=limit).to(torch.int64)
    return torch.cumsum(gaps + 1, 0) - 1


def untouched_rows(ranks: torch.Tensor, touched: SparseRows) -> torch.Tensor:
    """The row of each rank among the rows NOT in `touched` (its valid slots sorted and
    unique, padding anywhere after them): rank q is row q + #{k : s_k - k <= q}, where
    s_k - k counts the untouched rows below the k-th touched row s_k (TF Privacy's
    `_remap_indices`). A binary search: no table-sized buffer."""
    slot = torch.arange(touched.rows.numel(), device=touched.rows.device)
    below = torch.where(touched.valid, touched.rows - slot, torch.iinfo(torch.int64).max)
    return ranks + torch.searchsorted(below, ranks, right=True)


def touch_counts(rows: torch.Tensor, touched: SparseRows) -> torch.Tensor:
    """How often the batch (`rows`, any shape) reads each slot's row of `touched` (its
    unique rows, padded slots 0): a binary search into the sorted unique rows."""
    keys = touched.rows.masked_fill(~touched.valid, torch.iinfo(touched.rows.dtype).max)
    pos = torch.searchsorted(keys, rows.reshape(-1).to(keys.device))
    counts = torch.zeros(keys.numel(), dtype=torch.int64, device=keys.device)
    return counts.index_add_(0, pos, torch.ones_like(pos))


def fest_rows(
    table_rows: tuple[int, ...], dist: Distribution, fraction: float, device: torch.device
) -> torch.Tensor:
    """DP-FEST's public selection: per table, the ceil(fraction * rows) rows with the
    highest expected frequency under the synthetic source's distribution, as sorted
    global row ids. The source draws popularity ranks 0, 1, ... (most frequent first)
    and maps rank r of table t to row (r * P + 7919 t) mod N_t (`data/distributions.py`);
    uniform draws need no map (every row is equally frequent: any k rows are a top-k)."""
    parts, offset = [], 0
    for t, n in enumerate(table_rows):
        ranks = torch.arange(max(1, math.ceil(fraction * n)), dtype=torch.int64)
        local = ranks if dist.kind == "uniform" else (ranks * _PERMUTE_PRIME + 7919 * t) % n
        parts.append(local + offset)
        offset += n
    return torch.sort(torch.cat(parts)).values.to(device)


def member_of(rows: torch.Tensor, sorted_set: torch.Tensor) -> torch.Tensor:
    """Whether each of `rows` is in `sorted_set` (sorted, non-empty): a binary search."""
    pos = torch.searchsorted(sorted_set, rows).clamp_(max=sorted_set.numel() - 1)
    return sorted_set[pos] == rows
