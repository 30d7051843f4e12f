"""`verify --gpus N`: a row-wise sharded run on N ranks gives the one-rank model bit for bit.

For each algorithm and noise mode (off; unit, where every standard normal is 1; real
noise) the tiny fp64 workload trains `steps` steps on N ranks (N GPUs over NCCL, or N
CPU processes over gloo) and, in this process, on one rank that computes the same N
example groups; the final tables (after LazyDP's flush) and MLPs must be equal in every
bit. A real-noise check on the N-rank results then tests that the sharded noise is
DP-SGD's: (noisy - noise-free) / sd is N(0, 1) per table element (as `verify` does).
The one-rank sharded step is checked against the single-process trainer in the tests
(tests/distributed/test_sharded.py): equal up to summation order.
"""

from __future__ import annotations

import math

import torch

from lazydp_bench.runtime.sharded_run import train_sharded
from lazydp_bench.runtime.sharded_session import ShardedSpec, sharded_update
from lazydp_bench.runtime.trainer import plan_run
from lazydp_bench.runtime.verify import KS_ALPHA_C, VAR_SIGMAS, Check, ks_normal, tiny_config

SHARDED_VERIFY_ALGOS = ("sgd", "dpsgd-f", "lazydp")
MODES = ("off", "unit", "gaussian")
BATCH = 12  # splits into 1, 2, 3, 4, 6 or 12 example groups
NOISY = {"sigma": 1e6, "clip_norm": 1e-6, "table_size": "x10"}  # as verify's real-noise check


def _spec(algo: str, mode: str, world: int, steps: int, seed: int, **kw) -> ShardedSpec:
    cfg = tiny_config(algo, steps=steps, seed=seed, noise_mode=mode, batch_size=BATCH, **kw)
    return ShardedSpec.from_plan(plan_run(cfg), world)


def _modes(algo: str) -> tuple[str, ...]:
    return MODES if sharded_update(algo).private else ("off",)


def verify_sharded(
    algos: list[str], world: int, *, use_cuda: bool, steps: int = 6, seed: int = 0
) -> list[Check]:
    """The checks, each PASS/FAIL with its numbers (one launch of N ranks, then one rank
    here); none on a torchrun rank above 0."""
    cases = [(algo, mode) for algo in algos for mode in _modes(algo)]
    specs = [_spec(algo, mode, world, steps, seed, lr_decay=0.3) for algo, mode in cases]
    noisy_algos = [a for a in algos if sharded_update(a).private]
    stat = [
        _spec(a, m, world, steps, seed, lr_decay=0.3, **NOISY)
        for a in noisy_algos
        for m in ("gaussian", "off")
    ]
    many = train_sharded(specs + stat, steps, world, use_cuda=use_cuda)
    if many is None:  # a torchrun rank above 0: rank 0 checks and reports
        return []
    one = train_sharded(specs, steps, 1, use_cuda=use_cuda)
    checks = [
        _bitwise(algo, mode, world, got, ref)
        for (algo, mode), got, ref in zip(cases, many[: len(specs)], one, strict=True)
    ]
    pairs = many[len(specs) :]
    for i, algo in enumerate(noisy_algos):
        noisy, clean = pairs[2 * i][0], pairs[2 * i + 1][0]
        checks.append(_gaussian(algo, world, noisy, clean, stat[2 * i]))
    return checks


def _bitwise(algo: str, mode: str, world: int, got, ref) -> Check:
    (table, params), (ref_table, ref_params) = got, ref
    same = torch.equal(table, ref_table) and torch.equal(params, ref_params)
    diff = max((table - ref_table).abs().max().item(), (params - ref_params).abs().max().item())
    weights = table.numel() + params.numel()
    detail = f"{weights} weights; max abs diff {diff:.1e}"
    return Check(f"noise {mode}: {world} ranks == 1 rank bit for bit", algo, same, True, detail)


def _gaussian(algo: str, world: int, noisy, clean, spec: ShardedSpec) -> Check:
    """(noisy - clean) / sd ~ N(0, 1), sd = sqrt(sum_t lr_t^2) sigma C / B."""
    steps = spec.total_steps
    lrs = [spec.lr.lr(t) for t in range(steps)]
    sd = math.sqrt(sum(lr * lr for lr in lrs)) * spec.noise_multiplier * spec.clip_norm
    z = ((noisy - clean) / (sd / spec.batch_size)).flatten()
    n = z.numel()
    ks, var = ks_normal(z), z.var().item()
    ks_crit, var_tol = KS_ALPHA_C / math.sqrt(n), VAR_SIGMAS * math.sqrt(2 / n)
    ok = ks < ks_crit and abs(var - 1) < var_tol
    detail = f"n={n}: KS {ks:.4f} (< {ks_crit:.4f}), var ratio {var:.4f} (1 +- {var_tol:.4f})"
    return Check(f"real noise on {world} ranks: N(0, sum lr^2 s^2 C^2/B^2)", algo, ok, True, detail)
