"""`lazydp-bench verify`: LazyDP (and friends) against DP-SGD(F) on a small workload.

Checks, each returning PASS/FAIL with its numbers:
- noise off: the final weights equal DP-SGD(F)'s after T steps;
- unit noise (every standard normal replaced by 1, so aggregation must produce exactly the
  sum of the pending contributions): at every step the rows the forward pass reads equal
  DP-SGD(F)'s rows, and after the flush every weight does; with a constant and a decaying lr;
- real noise: (final weights - noise-free weights) / sd per element is N(0, 1), with
  sd = sqrt(sum_t lr_t^2) sigma C / B: a one-sample KS test and a variance-ratio test. To
  make the noise-free trajectory the same, C is tiny (1e-6) and sigma huge (1e6): the
  gradient moves weights by <= lr C per step, ~1e-5 of one step's noise. Noise is drawn
  in chunks of one page (the smallest chunk a run allows), so the flush makes dozens of
  keyed calls, and the correlation between each row and the row one chunk further is
  near 0: a key reused across chunks would repeat the noise of every row owed alike,
  which the pooled distribution alone cannot see.
EANA goes through the same checks; it is expected to FAIL the noisy ones (it is not
DP-SGD-equivalent), and a check that cannot tell it apart would itself be a failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from lazydp_bench.algorithms import get_algorithm
from lazydp_bench.config import MIN_CHUNK_BYTES, LRSchedule, PrivacyConfig, RunConfig
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.trainer import Session, build_session, plan_run

REFERENCE = "dpsgd-f"
EQ_RTOL = 1e-9  # fp64: only summation order differs between the two algorithms
KS_ALPHA_C = 1.95  # KS critical value factor at alpha = 0.001
VAR_SIGMAS = 5.0  # variance ratio within 5 standard errors (sqrt(2/n))
CORR_SIGMAS = 5.0  # a correlation within 5 standard errors (1/sqrt(m)) of 0


@dataclass(frozen=True)
class Check:
    name: str
    algo: str
    passed: bool
    expected: bool  # whether an equivalent algorithm must pass it
    detail: str

    @property
    def ok(self) -> bool:
        return self.passed == self.expected

    @property
    def verdict(self) -> str:
        if self.expected:
            return "PASS" if self.passed else "FAIL"
        return "NOT EQUIVALENT (expected)" if not self.passed else "FAIL (not detected)"


def tiny_config(
    algo: str,
    placement: str = "cpu",
    steps: int = 12,
    seed: int = 0,
    sigma: float = 1.0,
    clip_norm: float = 0.05,
    noise_mode: str = "gaussian",
    lr: float = 0.5,
    lr_decay: float = 0.0,
    **overrides,
) -> RunConfig:
    """fp64 run on the `tiny` workload (pooling 3: bags hold duplicate rows) with an explicit
    sigma, no warm-up; `placement` is cpu, gpu or hybrid; `overrides` replace
    any other RunConfig field."""
    base = RunConfig(
        algo=algo,
        workload="tiny",
        table_size=None,
        placement=placement,
        iterations=steps,
        warmup=0,
        seed=seed,
        lr=LRSchedule(lr, lr_decay),
        privacy=PrivacyConfig(clip_norm=clip_norm, noise_multiplier=sigma, noise_mode=noise_mode),
        dtype="float64",
        noise_impl="auto",
        host_threads=2,
    )
    return replace(base, **overrides)


def _session(algo: str, placement: str, steps: int, seed: int, **kw) -> Session:
    return build_session(plan_run(tiny_config(algo, placement, steps, seed, **kw)))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = max(1.0, b.abs().max().item())
    return (a - b).abs().max().item() / scale


def _final_err(a: Session, b: Session) -> float:
    return max(
        _rel_err(a.model.table, b.model.table), _rel_err(a.model.flat_params, b.model.flat_params)
    )


def _lockstep(algo: str, placement: str, steps: int, seed: int, **kw) -> tuple[float, float]:
    """Run `algo` and DP-SGD(F) side by side; worst per-step error on the rows the forward
    pass reads, and the error of all weights after the flush."""
    ref = _session(REFERENCE, placement, steps, seed, **kw)
    test = _session(algo, placement, steps, seed, **kw)
    worst_read = 0.0
    for t in range(steps):
        rows = ref.source.peek().rows.reshape(-1)
        read = test.algo.rows_as_read(rows).to(ref.model.table.device)
        worst_read = max(worst_read, _rel_err(read, ref.algo.rows_as_read(rows)))
        ref.step(t, NULL_TIMER)
        test.step(t, NULL_TIMER)
    test.algo.finalize()
    ref.algo.finalize()
    return worst_read, _final_err(test, ref)


def check_noise_off(algo: str, placement: str, steps: int, seed: int) -> Check:
    read, final = _lockstep(algo, placement, steps, seed, noise_mode="off")
    ok = read <= EQ_RTOL and final <= EQ_RTOL
    return Check("noise off: weights = DP-SGD(F)", algo, ok, True, f"max rel err {final:.1e}")


def check_unit_noise(algo: str, placement: str, steps: int, seed: int, lr_decay: float) -> Check:
    read, final = _lockstep(algo, placement, steps, seed, noise_mode="unit", lr_decay=lr_decay)
    ok = read <= EQ_RTOL and final <= EQ_RTOL
    lr = "constant lr" if lr_decay == 0 else f"lr/(1+{lr_decay}t)"
    expected = bool(get_algorithm(algo).dp_equivalent)
    detail = f"rows read: max rel err {read:.1e}; after flush {final:.1e}"
    return Check(f"unit noise, {lr}: reads + flushed = DP-SGD(F)", algo, ok, expected, detail)


def ks_normal(z: torch.Tensor) -> float:
    """One-sample KS statistic of z against N(0, 1)."""
    z = z.double().sort().values
    n = z.numel()
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    upper = torch.arange(1, n + 1, dtype=torch.float64, device=z.device) / n
    lower = torch.arange(0, n, dtype=torch.float64, device=z.device) / n
    return max((upper - cdf).max().item(), (cdf - lower).max().item())


def check_gaussian(algo: str, placement: str, steps: int, seed: int, lr_decay: float) -> Check:
    kw = dict(sigma=1e6, clip_norm=1e-6, lr_decay=lr_decay, table_size="x10")
    kw["chunk_bytes"] = MIN_CHUNK_BYTES
    noisy = _session(algo, placement, steps, seed, **kw)
    clean = _session(algo, placement, steps, seed, noise_mode="off", **kw)
    for t in range(steps):
        noisy.step(t, NULL_TIMER)
        clean.step(t, NULL_TIMER)
    noisy.algo.finalize()
    clean.algo.finalize()
    lrs = [noisy.plan.config.lr.lr(t) for t in range(steps)]
    sd = math.sqrt(sum(lr * lr for lr in lrs)) * 1e6 * 1e-6 / noisy.plan.batch_size
    table = noisy.model.table
    z = (table - clean.model.table) / sd
    n = z.numel()
    ks, var = ks_normal(z.flatten()), z.var().item()
    ks_crit, var_tol = KS_ALPHA_C / math.sqrt(n), VAR_SIGMAS * math.sqrt(2 / n)
    lag = noisy.algo.ctx.engines.for_device(table.device).rows_per_chunk(table)  # a chunk
    corr = lag_correlation(z, lag)
    corr_tol = CORR_SIGMAS / math.sqrt(z[lag:].numel())
    ok = ks < ks_crit and abs(var - 1) < var_tol and abs(corr) < corr_tol
    lr = "constant lr" if lr_decay == 0 else f"lr/(1+{lr_decay}t)"
    expected = bool(get_algorithm(algo).dp_equivalent)
    detail = (
        f"n={n}: KS {ks:.4f} (< {ks_crit:.4f}), var ratio {var:.4f} (1 +- {var_tol:.4f}), "
        f"corr one chunk ({lag} rows) apart {corr:+.4f} (0 +- {corr_tol:.4f})"
    )
    return Check(f"real noise, {lr}: N(0, sum lr^2 s^2 C^2/B^2)", algo, ok, expected, detail)


def lag_correlation(z: torch.Tensor, lag: int) -> float:
    """Pearson correlation of each row of z with the row `lag` rows further, element by
    element; under independence about N(0, 1/m) for m pairs."""
    a, b = z[:-lag].flatten().double(), z[lag:].flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return (a @ b / (a.norm() * b.norm()).clamp_min(1e-300)).item()


def verify(algos: list[str], placement: str = "cpu", steps: int = 12, seed: int = 0) -> list[Check]:
    checks = []
    for algo in algos:
        get_algorithm(algo)
        checks.append(check_noise_off(algo, placement, steps, seed))
        for decay in (0.0, 0.3):
            checks.append(check_unit_noise(algo, placement, steps, seed, decay))
            checks.append(check_gaussian(algo, placement, steps, seed, decay))
    return checks
