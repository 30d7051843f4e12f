"""The compiled host engine (`host-philox`): its Philox words against a pure-Python Philox,
its normals against float64 Box-Muller of those words in the Triton kernel's element
layout, keying by all 64 bits, independence from the thread count, per-row std, the
distribution, the fallback without a compiler, and (on a GPU) equality with the fused
Triton kernel's draws."""

from __future__ import annotations

import ctypes
import json
import math

import numpy as np
import pytest
import torch

from lazydp_bench.dp.noise import make_engine
from lazydp_bench.dp.noise.host_philox import (
    PROGRAM,
    HostPhiloxEngine,
    find_compiler,
    load_kernels,
    philox_words,
)
from lazydp_bench.dp.noise.host_threaded import HostThreadedEngine
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.verify import ks_normal
from tests.conftest import cli, tiny_session

M32 = 0xFFFFFFFF
KEY = (1 << 63) | (0xDEADBEEF << 32) | 12345  # high bits set in both key words

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="needs a C compiler")


def philox_ref(key: int, counter: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Philox-4x32-10 in Python ints (Salmon et al. 2011; Triton's philox_impl)."""
    k0, k1 = key & M32, key >> 32
    c0, c1, c2, c3 = counter
    for _ in range(10):
        pb, pa = 0xCD9E8D57 * c2, 0xD2511F53 * c0
        c0, c1, c2, c3 = (pb >> 32) ^ c1 ^ k0, pb & M32, (pa >> 32) ^ c3 ^ k1, pa & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def reference_noise(key: int, rows: int, cols: int, launch_elems: int) -> np.ndarray:
    """float64 Box-Muller of the reference words, in the Triton kernel's layout: launch
    `chunk` of rows_per_launch rows, element i of it gets normal (i % 4096) // 1024 of
    group (i // 4096) * 1024 + i % 1024 under counter (group, chunk, 0, 0)."""
    per_launch = max(1, launch_elems // cols)
    out = []
    for chunk, start in enumerate(range(0, rows, per_launch)):
        i = np.arange((min(rows, start + per_launch) - start) * cols)
        group = (i // PROGRAM) * 1024 + i % 1024
        w = np.array([philox_ref(key, (int(g), chunk, 0, 0)) for g in group], dtype=np.float64)
        normals = []
        for c1, c2 in ((w[:, 0], w[:, 1]), (w[:, 2], w[:, 3])):
            r = np.sqrt(-2.0 * np.log((c1 + 0.5) / 2**32))
            theta = 2.0 * np.pi * (c2 + 0.5) / 2**32 - np.pi / 4  # the kernel's turn
            normals += [r * np.cos(theta), r * np.sin(theta)]
        out.append(np.choose((i % PROGRAM) // 1024, normals))
    return np.concatenate(out).reshape(rows, cols)


@pytest.fixture(scope="module")
def kernels():
    k = load_kernels(find_compiler())
    assert k.lib is not None, k.reason
    return k


def noise(shape, key, *, std=1.0, threads=2, dtype=torch.float32, **kw) -> torch.Tensor:
    x = torch.zeros(shape, dtype=dtype)
    HostPhiloxEngine(2**20, threads, **kw).add_noise(x, std, key, NULL_TIMER)
    return x


def test_philox_words_equal_a_pure_python_philox(kernels):
    zero = philox_words(kernels, 0, 0, 0, 1)
    assert zero.tolist() == [[0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]]  # Random123 KAT
    got = philox_words(kernels, KEY, 3, 5000, 300)  # crosses draw blocks, unaligned start
    want = [philox_ref(KEY, (5000 + g, 3, 0, 0)) for g in range(300)]
    assert got.tolist() == [list(w) for w in want]


def test_noise_is_box_muller_of_the_reference_words_in_the_kernel_layout():
    """Three launches (counter chunks 0, 1, 2) of 6000, 6000 and 2000 elements, each
    ending in a partial program; float32 normals within 1e-6 x max(1, |z|) of float64."""
    got = noise((70, 200), KEY, launch_elems=6000).double().numpy()
    want = reference_noise(KEY, 70, 200, 6000)
    err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    assert err.max() < 1e-6, err.max()


def test_thread_count_and_task_split_do_not_change_the_noise():
    rows, cols = 3 * 256 * PROGRAM // 512 + 7, 512  # three pool tasks and a partial one
    one = noise((rows, cols), 99, threads=1)
    assert torch.equal(one, noise((rows, cols), 99, threads=3))
    std = torch.rand(rows) + 0.5
    assert torch.equal(
        noise((rows, cols), 99, std=std, threads=1), noise((rows, cols), 99, std=std)
    )


def test_block_size_and_scalar_build_draw_the_same_noise():
    """The lanes drawn per block (SUB) and the SIMD path are layout, not stream: builds
    with other blocks, and the plain-C Philox (as on a CPU without AVX2), agree bit for bit."""
    want = noise((33, 1000), KEY, launch_elems=20000)
    simd = HostPhiloxEngine(2**20, 2).kernels().simd
    for defines in (("SUB=64",), ("SUB=1024",), ("PHILOX_SCALAR",)):
        engine = HostPhiloxEngine(2**20, 2, defines=defines)
        assert engine.kernels().simd == ("scalar" if defines[0] == "PHILOX_SCALAR" else simd)
        assert engine.kernels().lanes == (int(defines[0][4:]) if "=" in defines[0] else 128)
        got = noise((33, 1000), KEY, launch_elems=20000, defines=defines)
        assert torch.equal(got, want), defines


@pytest.mark.parametrize("bit", [32, 48, 63])
def test_keys_that_differ_only_in_high_bits_draw_other_noise(bit):
    a = noise((64, 1024), KEY)
    b = noise((64, 1024), KEY ^ (1 << bit))
    assert torch.equal(a, noise((64, 1024), KEY))
    corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
    assert abs(corr) < 0.02, corr  # 65536 pairs: independent draws give |r| < 0.02 (5 sigma)


def test_per_row_std_scales_each_row_and_float64_gets_the_same_normals():
    z = noise((37, 300), 5)
    std = torch.rand(37) * 3
    assert torch.equal(noise((37, 300), 5, std=std), std.view(-1, 1) * z)
    assert torch.equal(noise((37, 300), 5, dtype=torch.float64), z.double())
    base = torch.randn(37, 300)
    moved = base.clone()
    HostPhiloxEngine(2**20, 2).add_noise(moved, 0.5, 5, NULL_TIMER)
    assert torch.allclose(moved, base + 0.5 * z, atol=1e-6, rtol=0)


def test_draws_are_standard_normal():
    """2**21 draws: mean and variance within 5 standard errors, KS distance to N(0, 1)
    below its 1 % critical value (1.63 / sqrt(n)), no exact zeros, |z| within the
    largest radius the words allow (sqrt(-2 ln 2**-33) = 6.76)."""
    z = noise((2048, 1024), 2024, std=-1.0).double().flatten()  # the sign of std is dropped
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    s, _ = torch.sort(z)
    cdf = torch.special.ndtr(s)
    ks = torch.maximum(torch.arange(1, n + 1) / n - cdf, cdf - torch.arange(n) / n).max()
    assert ks.item() < 1.63 / math.sqrt(n), ks.item()
    assert (z != 0).all() and z.abs().max().item() < 6.77


def test_without_a_compiler_the_engine_falls_back_and_says_why(tmp_path):
    cpu = torch.device("cpu")
    none = HostPhiloxEngine(2**20, 2, compiler=None)
    assert "host-philox unavailable: no C compiler" in none.describe(cpu)["engine"]
    broken = HostPhiloxEngine(2**20, 2, compiler=str(tmp_path / "cc"))
    assert "host-philox unavailable: building with" in broken.describe(cpu)["engine"]
    x = torch.zeros(256, 256)
    none.add_noise(x, 2.0, 7, NULL_TIMER)
    y = torch.zeros(256, 256)
    HostThreadedEngine(2**20, 2).add_noise(y, 2.0, 7, NULL_TIMER)
    assert torch.equal(x, y)  # the host-threaded engine's draws, same key


@pytest.mark.parametrize("algo", ["lazydp", "dpsgd-f"])
def test_training_noise_through_host_philox_has_the_dp_sgd_distribution(algo):
    """A float64 table trained with --noise-impl host-philox (LazyDP: per-row owed stds
    in its flush) minus the same run without noise, over the DP-SGD std
    sqrt(sum lr^2) sigma C / B: N(0, 1) by KS (1 % critical value) and variance (5 sigma)."""
    kw = dict(sigma=1e6, clip_norm=1e-6, table_size="x10", noise_impl="host-philox")
    noisy, clean = tiny_session(algo, **kw), tiny_session(algo, noise_mode="off", **kw)
    for t in range(6):
        noisy.step(t, NULL_TIMER)
        clean.step(t, NULL_TIMER)
    noisy.algo.finalize()
    clean.algo.finalize()
    lr = noisy.plan.config.lr.lr(0)
    z = (noisy.model.table - clean.model.table) / (math.sqrt(6) * lr / noisy.plan.batch_size)
    n = z.numel()
    assert ks_normal(z.flatten()) < 1.63 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert isinstance(noisy.engines.cpu, HostPhiloxEngine)


def test_registry_serves_host_philox_on_the_host():
    engines = make_engine("host-philox", 2**20, 2)
    assert isinstance(engines.for_device(torch.device("cpu")), HostPhiloxEngine)
    info = engines.cpu.describe(torch.device("cpu"))
    assert info["engine"].startswith("host-philox (2 threads")
    assert "64-bit key" in info["key_bits"]


def test_bench_noise_measures_host_philox_from_the_cli(tmp_path):
    res = cli(
        "bench", "noise", "--placement", "cpu", "--impl", "host-philox", "--size", "4MiB",
        "--repeats", "1", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (rec,) = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert rec["config"]["noise_impl"] == "host-philox"
    assert rec["noise"]["engine"].startswith("host-philox (")
    assert rec["bench"]["samples_per_s"] > 0
    bound = rec["bench"]["arithmetic_bound_samples_per_s"]  # the generator alone
    lowest = min(bound, rec["bench"]["memory_bound_samples_per_s"])
    assert rec["bench"]["pct_of_bound"] == pytest.approx(
        100 * rec["bench"]["samples_per_s"] / lowest
    )


def test_draw_only_spins_each_threads_block_and_counts_its_normals(monkeypatch):
    """The host's arithmetic bound: one library call per thread noises that thread's
    cache-resident block for every pass (std 1e-30 leaves a trace in float32), and the
    count is threads x block x passes."""
    from lazydp_bench.dp.noise import host_philox as hp

    calls = []
    real = hp.Kernels.spin_fn

    def recording(self):
        spin = real(self)

        def call(*args):
            calls.append(args)
            spin(*args)

        return call

    monkeypatch.setattr(hp.Kernels, "spin_fn", recording)
    launch, normals = HostPhiloxEngine(2**20, 3).draw_only(torch.device("cpu"))
    block = hp.DRAW_ONLY_PROGRAMS * PROGRAM
    assert normals == 3 * block * hp.DRAW_ONLY_REPEATS
    launch()
    assert len(calls) == 3  # one call per thread's block
    assert len({c[0] for c in calls}) == 3
    assert {c[1:] for c in calls} == {(block, 1e-30, hp.DRAW_ONLY_REPEATS)}
    blocks = [
        torch.frombuffer((ctypes.c_float * block).from_address(c[0]), dtype=torch.float32)
        for c in calls
    ]
    assert all((b != 0).float().mean() > 0.99 for b in blocks)
    assert HostPhiloxEngine(2**20, 2, compiler=None).draw_only(torch.device("cpu")) is None


def test_spin_is_the_add_repeated_with_key_per_pass():
    """philox_spin_f32 equals the add over every program, pass r under key r, bit for bit,
    on a block that ends inside a program."""
    kernels = HostPhiloxEngine(2**20, 1).kernels()
    n = 3 * PROGRAM + 100
    spun, added = torch.zeros(n), torch.zeros(n)
    kernels.spin_fn()(spun.data_ptr(), n, 0.5, 3)
    add = kernels.add_fn(torch.float32)
    for key in range(3):
        add(added.data_ptr(), n, n, None, 0.5, key, 0, 0, 4)
    assert torch.equal(spun, added)
    assert spun.std().item() == pytest.approx(0.5 * 3**0.5, rel=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_and_gpu_draw_the_same_stream():
    """The fused Triton kernel and host-philox under one key: the same normals up to float32
    rounding of ln/sin/cos (the kernel's sin/cos.approx: absolute error 2**-20.9, times a
    radius up to 6.8), on a table past one launch (two counter chunks)."""
    from lazydp_bench.dp.noise.triton_fused import TritonFusedEngine

    rows, cols = (1 << 30) // 4096 + 3, 4096
    gpu = torch.zeros(rows, cols, device="cuda")
    TritonFusedEngine(2**28, 1).add_noise(gpu, 1.0, KEY, NULL_TIMER)
    host = noise((rows, cols), KEY, threads=8)
    err = 0.0
    for part in (slice(0, 64), slice(rows - 64, rows)):  # both launches
        h = host[part]
        err = max(err, ((gpu[part].cpu() - h).abs() / h.abs().clamp(min=1.0)).max().item())
    print(f"host-philox vs Triton fused: max |diff| / max(1, |z|) = {err:.2e}")
    assert err < 1e-5, err
