"""Dense noise: statistics with computed tolerances, engine agreement, reproducibility,
the chunk bound (measured in a fresh process), and epsilon vs Opacus called directly."""

import json
import math
import subprocess
import sys

import pytest
import torch

from lazydp_bench.config import PrivacyConfig
from lazydp_bench.dp.noise.host_threaded import HostThreadedEngine
from lazydp_bench.dp.noise.torch_chunked import TorchChunkedEngine
from lazydp_bench.dp.privacy import plan_privacy
from lazydp_bench.dp.seeds import as_int64, derive_seed, keyed_cpu_generator
from lazydp_bench.measure.profiling import NULL_TIMER
from tests.conftest import ROOT, tiny_session

ENGINES = {"torch": TorchChunkedEngine, "host": HostThreadedEngine}


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov D."""
    both = torch.cat([a, b]).sort().values
    fa = torch.searchsorted(a.sort().values, both, right=True) / a.numel()
    fb = torch.searchsorted(b.sort().values, both, right=True) / b.numel()
    return (fa - fb).abs().max().item()


def test_one_dp_step_noise_has_the_right_mean_and_std():
    """Same weights and batch, noise on vs off: the difference is exactly one step's noise."""
    kw = dict(table_size="x20", noise_multiplier=2.0, clip_norm=0.3, lr=0.5)
    noisy = tiny_session("dpsgd-f", **kw)
    clean = tiny_session("dpsgd-f", noise_mode="off", **kw)
    noisy.step(0, NULL_TIMER)
    clean.step(0, NULL_TIMER)
    diff = (noisy.model.table - clean.model.table).flatten()
    n = diff.numel()
    sd = 0.5 * 2.0 * 0.3 / noisy.plan.batch_size  # lr * sigma * C / B
    # mean of n normals: SE = sd/sqrt(n); sample std: relative SE ~ 1/sqrt(2n); 5 SE each
    assert abs(diff.mean().item()) < 5 * sd / math.sqrt(n)
    assert abs(diff.std().item() / sd - 1) < 5 / math.sqrt(2 * n)
    assert n > 50_000
    mlp = noisy.model.flat_params - clean.model.flat_params
    assert abs(mlp.std().item() / sd - 1) < 5 / math.sqrt(2 * mlp.numel())


def test_eana_noise_on_read_rows_has_the_dp_sgd_std():
    """EANA adds one step's DP-SGD noise, std lr sigma C / B, to exactly the rows read."""
    kw = dict(table_size="x20", noise_multiplier=2.0, clip_norm=0.3, lr=0.5, batch_size=256)
    noisy = tiny_session("eana", **kw)
    clean = tiny_session("eana", noise_mode="off", **kw)
    read = torch.zeros(noisy.model.table.shape[0], dtype=torch.bool)
    read[noisy.source.peek().rows.reshape(-1)] = True
    noisy.step(0, NULL_TIMER)
    clean.step(0, NULL_TIMER)
    diff = noisy.model.table - clean.model.table
    assert torch.all(diff[~read] == 0)
    got = diff[read].flatten()
    n, sd = got.numel(), 0.5 * 2.0 * 0.3 / 256
    assert n > 2_000
    assert abs(got.std().item() / sd - 1) < 5 / math.sqrt(2 * n)


@pytest.mark.parametrize("name", ENGINES)
def test_add_noise_rows_touches_each_listed_row_once(name):
    """table[rows[k]] += std[k] z_k; a padded slot (std 0) repeats a listed row and adds
    nothing. Unit mode checks the amounts exactly, real noise the per-row std."""
    engine = ENGINES[name](2**16, 2)
    rows = torch.tensor([5, 2, 9, 2, 5])
    std = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    base = torch.randn(12, 4000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    unit = base.clone()
    engine.add_noise_rows(unit, rows, std, 7, NULL_TIMER, unit=True)
    want = base.clone()
    want[[5, 2, 9]] += torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(-1, 1)
    assert torch.equal(unit, want)
    noisy = base.clone()
    engine.add_noise_rows(noisy, rows, std, 7, NULL_TIMER)
    untouched = [r for r in range(12) if r not in (5, 2, 9)]
    assert torch.equal(noisy[untouched], base[untouched])
    for row, sd in ((5, 0.5), (2, 1.0), (9, 2.0)):
        got = (noisy[row] - base[row]).std().item()
        assert abs(got / sd - 1) < 5 / math.sqrt(2 * 4000)


def test_torch_and_host_engines_agree_in_distribution():
    n = 200_000
    a, b = torch.zeros(n // 8, 8), torch.zeros(n // 8, 8)
    TorchChunkedEngine(2**16, 2).add_noise(a, 0.7, 11, NULL_TIMER)
    HostThreadedEngine(2**16, 2).add_noise(b, 0.7, 11, NULL_TIMER)
    # KS critical value at alpha = 0.001: 1.95 * sqrt(2/n)
    assert ks_statistic(a.flatten(), b.flatten()) < 1.95 * math.sqrt(2 / n)
    for x in (a, b):
        assert abs(x.std().item() / 0.7 - 1) < 5 / math.sqrt(2 * n)


@pytest.mark.parametrize("name", ENGINES)
def test_fixed_seed_reproduces_and_other_seed_differs(name):
    make = ENGINES[name]
    x, y, z = (torch.zeros(3000, 4) for _ in range(3))
    make(2**14, 2).add_noise(x, 1.0, 5, NULL_TIMER)
    make(2**14, 3).add_noise(y, 1.0, 5, NULL_TIMER)  # thread count must not matter
    make(2**14, 2).add_noise(z, 1.0, 6, NULL_TIMER)
    assert torch.equal(x, y)
    assert not torch.equal(x, z)


@pytest.mark.parametrize("name", ENGINES)
def test_per_row_std(name):
    x = torch.zeros(4000, 16)
    std = torch.linspace(0, 2, 4000)
    ENGINES[name](2**14, 2).add_noise(x, std, 1, NULL_TIMER)
    assert torch.all(x[0] == 0)
    ratio = x[1:].pow(2).sum() / (std[1:].pow(2).sum() * 16)
    assert abs(ratio.item() - 1) < 5 * math.sqrt(2 / (3999 * 16))


_CHUNK_PROBE = """
import json, resource, sys, torch
from lazydp_bench.dp.noise.host_threaded import HostThreadedEngine
from lazydp_bench.dp.noise.torch_chunked import TorchChunkedEngine
from lazydp_bench.measure.profiling import NULL_TIMER
torch.set_num_threads(1)
engine = {"torch": TorchChunkedEngine, "host": HostThreadedEngine}[sys.argv[1]](8 * 2**20, 2)
table = torch.zeros(2**21, 32)  # 256 MiB, touched
before = table.clone()[:1]
peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
engine.add_noise(table, 1.0, 3, NULL_TIMER)
peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
changed = bool((table != 0).any(1).all())
print(json.dumps({"extra_bytes": (peak1 - peak0) * 1024, "rows_changed": changed}))
"""


@pytest.mark.parametrize("name", ENGINES)
def test_table_beyond_chunk_bound_is_fully_noised_in_bounded_memory(name):
    out = subprocess.run(
        [sys.executable, "-c", _CHUNK_PROBE, name],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    probe = json.loads(out.stdout)
    assert probe["rows_changed"]
    # the table is 256 MiB and the chunk bound 8 MiB; a table-sized buffer would add 256 MiB
    assert probe["extra_bytes"] < 48 * 2**20, probe


def test_epsilon_matches_opacus_directly():
    from opacus.accountants import PRVAccountant, RDPAccountant

    cfg = PrivacyConfig(noise_multiplier=0.8, delta=1e-6, dataset_size=60_000, epochs=2)
    plan = plan_privacy(cfg, 256)
    assert plan.sample_rate == 256 / 60_000
    assert plan.steps == math.ceil(2 * 60_000 / 256)
    for cls, got in ((RDPAccountant, plan.epsilon_rdp), (PRVAccountant, plan.epsilon_prv)):
        acc = cls()
        acc.history = [(0.8, 256 / 60_000, plan.steps)]
        assert got == pytest.approx(acc.get_epsilon(delta=1e-6), rel=1e-9)


def test_sigma_derived_from_target_epsilon_spends_it():
    cfg = PrivacyConfig(
        noise_multiplier=None, epsilon=3.0, delta=1e-5, dataset_size=60_000, epochs=1
    )
    plan = plan_privacy(cfg, 256)
    assert plan.noise_source.startswith("derived")
    assert plan.epsilon_rdp <= 3.0 + 0.05
    assert plan.epsilon_rdp > 2.8


# ----- keys: every noise stream keyed by >= 64 bits -------------------------------------


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("high_bit", [32, 40, 48, 63])
def test_keys_that_differ_only_above_bit_32_draw_other_noise(name, high_bit):
    """torch's manual_seed keeps 32 bits: 7 and 7 + 2**40 drew the same normals before."""
    x, y, z = (torch.zeros(2000, 8) for _ in range(3))
    ENGINES[name](2**14, 2).add_noise(x, 1.0, 7, NULL_TIMER)
    ENGINES[name](2**14, 2).add_noise(y, 1.0, 7 + 2**high_bit, NULL_TIMER)
    ENGINES[name](2**14, 2).add_noise(z, 1.0, 7, NULL_TIMER)
    assert torch.equal(x, z)
    assert int((x == y).sum()) < 5  # independent draws: equal floats essentially never


def test_keyed_generator_uses_every_bit_of_every_key_word():
    draws = set()
    keys = [(7,), (7 + 2**32,), (7 + 2**48,), (7 + 2**63,), (7, 0), (7, 1), (7, 2**40)]
    keys += [(1 << 32, 0), (0, 1, 0), (1, 0)]  # word boundaries and trailing zeros
    keys += [(7 + 5 * 2**32, 3), (7, 5 + 3 * 2**32)]  # the same 32-bit words, split apart
    for key in keys:
        gen = keyed_cpu_generator(*key)
        draws.add(tuple(torch.empty(4).normal_(generator=gen).tolist()))
    assert len(draws) == len(keys)
    again = torch.empty(4).normal_(generator=keyed_cpu_generator(7 + 2**63))
    assert tuple(again.tolist()) in draws


def test_no_two_chunks_of_one_call_share_a_stream():
    """The host engine's tasks (1 MiB each here) start their streams at distinct draws."""
    engine = HostThreadedEngine(2**20, 3)
    x = torch.zeros(2**18, 64)  # 64 MiB: 64 tasks of 2**12 rows
    engine.add_noise(x, 1.0, 5, NULL_TIMER)
    task_rows = engine.task_rows(x.shape[0], x.shape[1], x.element_size())
    starts = x[::task_rows, :4]
    assert starts.shape[0] == x.shape[0] // task_rows > 10
    assert torch.unique(starts, dim=0).shape[0] == starts.shape[0]


def test_derived_keys_are_64_bit_and_length_separated():
    keys = {derive_seed(1, t, s) for t in range(200) for s in range(4)}
    assert len(keys) == 800
    assert max(keys) >= 2**63  # the top bit is used
    assert derive_seed(1, 2) != derive_seed(1, 2, 0)
    assert as_int64(2**64 - 1) == -1 and as_int64(5) == 5


# ----- distribution per engine, on >= 10**6 samples -------------------------------------


@pytest.mark.parametrize("name", ENGINES)
def test_engine_draws_are_standard_normal(name):
    """One-sample KS against the normal CDF (alpha = 0.001: D < 1.95 / sqrt(n)), variance
    within 5 standard errors (sqrt(2 / n)), mean within 5 / sqrt(n); 4 threads == 1."""
    n = 2**20
    x = torch.zeros(n // 16, 16)
    ENGINES[name](2**18, 4).add_noise(x, 1.0, 2**40 + 3, NULL_TIMER)
    one = torch.zeros_like(x)
    ENGINES[name](2**18, 1).add_noise(one, 1.0, 2**40 + 3, NULL_TIMER)
    assert torch.equal(x, one)
    z = x.flatten().double().sort().values
    cdf = torch.special.ndtr(z)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max().item()
    assert d < 1.95 / math.sqrt(n), d
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(z.mean().item()) < 5 / math.sqrt(n)


def test_prv_mesh_stops_growing_and_its_error_is_stated():
    """PRV's mesh has ~sqrt(steps) / eps_error points: past PRV_REF_STEPS the error grows
    so the mesh does not, and the plan states the error it used."""
    from lazydp_bench.dp.privacy import PRV_EPS_ERROR, PRV_REF_STEPS, prv_eps_error

    def mesh(steps):
        return math.sqrt(steps) / prv_eps_error(steps)

    assert prv_eps_error(1_000) == prv_eps_error(PRV_REF_STEPS) == PRV_EPS_ERROR
    for steps in (10**5, 5_730_078, 10**9):
        assert mesh(steps) == pytest.approx(mesh(PRV_REF_STEPS))
    plan = plan_privacy(PrivacyConfig(noise_multiplier=1.0), 2048)
    assert plan.epsilon_prv_error == prv_eps_error(plan.steps)


_ACCOUNTING_PROBE = """
import json, resource
from lazydp_bench.config import PrivacyConfig
from lazydp_bench.dp.privacy import plan_privacy
plan = plan_privacy(PrivacyConfig(), 8)  # the paper's epsilon 50 at batch 8: 5.7 M steps
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "rdp": plan.epsilon_rdp, "prv": plan.epsilon_prv,
                  "err": plan.epsilon_prv_error}))
"""


def test_accounting_at_a_tiny_batch_stays_in_bounded_memory():
    """At batch 8 (5.7 M steps per Criteo epoch) PRV took 7.6 GB before its mesh was bounded."""
    out = subprocess.run(
        [sys.executable, "-c", _ACCOUNTING_PROBE], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["peak"] < 3 * 2**30, got
    assert got["rdp"] == pytest.approx(50, rel=1e-3)  # sigma derived for epsilon 50
    assert got["prv"] <= got["rdp"] and got["err"] > 0.01


def test_vectorized_keys_equal_derive_seed():
    """Per-step schedules take their keys from `derive_seeds` (numpy, one pass); each must
    be `derive_seed`'s key, including seeds and steps past 2**63 and negative parts."""
    import numpy as np

    from lazydp_bench.dp.seeds import derive_seeds

    steps = np.array([0, 1, 2**40 + 3, 2**63 - 1], dtype=np.int64)
    for seed in (0, 12345, 2**63 - 1, 2**64 - 1, -7):
        for stream in (0, 3):
            keys = derive_seeds(seed, steps, stream)
            assert keys.dtype == np.uint64
            assert [int(k) for k in keys] == [derive_seed(seed, int(t), stream) for t in steps]
