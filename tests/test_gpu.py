"""GPU-only checks the CPU tests cannot make: the Triton noise kernel's statistics, its
per-row scaling and reproducibility, seeds and stds read from device memory, the fused
row-noise kernel against the engine's reference (same draws, padded slots and a table past
2**31 elements included), the Triton clipping kernels (ghost norms, clip factors with the
scaled pooled gradient, row scaling) and LazyDP's fused owed-noise/history kernel against
torch, and that a CUDA-graph
replay of the step trains the same model as eager steps (with noise on and a decaying lr,
so a value frozen at capture would show), per algorithm, on gpu and hybrid placement.

Run on the GPU machine: PYTHONPATH=$PWD python3 -m pytest -m gpu -s
(`-s` shows one PASS/FAIL line per check with its numbers). Skipped without CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from lazydp_bench.config import LRSchedule, PrivacyConfig, RunConfig
from lazydp_bench.dp.clip_kernels import (
    add_all_linear_sq_norms,
    add_linear_sq_norms,
    finish_clip,
    finish_on_triton,
    scale_rows,
    scale_rows_many,
)
from lazydp_bench.dp.noise.base import DenseNoiseEngine
from lazydp_bench.dp.noise.triton_fused import TritonFusedEngine
from lazydp_bench.dp.owed_noise import owed_std
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.graph_step import GraphedStep
from lazydp_bench.runtime.step_scalars import Scalar
from lazydp_bench.runtime.trainer import build_session, plan_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GRAPH_CASES = [("sgd", None), ("dpsgd-f", None), ("lazydp", None), ("lazydp", "bookkeeping")]
GRAPH_CASES += [("eana", None), ("dpsgd-bk", None)]
GRAPH_CASES = [(*case, "gpu") for case in GRAPH_CASES]
GRAPH_CASES += [(algo, None, "hybrid") for algo in ("sgd", "dpsgd-f", "lazydp", "eana")]
GRAPH_CASES += [("lazydp", "bookkeeping", "hybrid")]
GRAPH_CASES += [("dpsgd-f", None, "hybrid-host")]  # its table noise drawn by host threads


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


@pytest.fixture(scope="module")
def dev() -> torch.device:
    return torch.device("cuda")


@pytest.fixture(scope="module")
def eng() -> TritonFusedEngine:
    return TritonFusedEngine(256 * 2**20, 1)


def test_triton_noise_statistics(dev, eng):
    """Mean, std, every element written, reproducibility, per-row std, float64, device
    scalars."""
    ok = True
    n_rows, dim = 1 << 19, 128  # 64M elements
    x = torch.zeros(n_rows, dim, device=dev)
    eng.add_noise(x, 2.0, 123, NULL_TIMER)
    n = x.numel()
    mean, std = x.mean().item(), x.std().item()
    ok &= check("triton mean", abs(mean) < 6 * 2.0 / math.sqrt(n), f"{mean:.2e}")
    ok &= check("triton std", abs(std / 2.0 - 1) < 6 * math.sqrt(0.5 / n), f"{std:.6f} (want 2)")
    zeros = int((x == 0).sum().item())  # an unwritten program would leave 4096
    ok &= check("every element written", zeros < 16, f"{zeros} zeros of {n}")
    y = torch.zeros_like(x)
    eng.add_noise(y, 2.0, 123, NULL_TIMER)
    ok &= check("same seed reproduces", bool(torch.equal(x, y)), "bitwise")
    eng.add_noise(y, 2.0, 124, NULL_TIMER)
    corr = torch.corrcoef(torch.stack([x.flatten()[: 1 << 20], (y - x).flatten()[: 1 << 20]]))[0, 1]
    ok &= check("other seed independent", abs(corr.item()) < 0.01, f"corr {corr.item():.4f}")
    rows_std = torch.linspace(0, 3, n_rows, device=dev)
    z = torch.zeros_like(x)
    eng.add_noise(z, rows_std, 7, NULL_TIMER)
    ratio = (z.std(dim=1)[1:] / rows_std[1:]).mean().item()
    ok &= check("per-row std", abs(ratio - 1) < 0.01, f"mean ratio {ratio:.4f}")
    ok &= check("zero-std row untouched", bool((z[0] == 0).all().item()), "row 0")
    w = torch.full((3, 5), 1.5, dtype=torch.float64, device=dev)
    eng.add_noise(w, 0.5, 1, NULL_TIMER)
    ok &= check("float64 target", bool((w != 1.5).all().item()), f"dtype {w.dtype}")
    v = torch.zeros_like(x)
    two = torch.full((), 2.0, device=dev)
    seed = torch.full((), 123, dtype=torch.int64, device=dev)
    eng.add_noise(v, Scalar(2.0, two), Scalar(123, seed), NULL_TIMER)
    ok &= check("seed and std from device memory", bool(torch.equal(v, x)), "== float args")
    assert ok


def test_keys(dev, eng):
    assert check_keys(eng, dev)


def test_box_muller_accuracy(dev):
    assert check_box_muller_accuracy(dev)


def test_rows_kernel(dev, eng):
    assert check_rows_kernel(eng, dev)


def test_ghost_norms(dev):
    assert check_ghost_norms(dev)


def test_all_layer_norms(dev):
    assert check_all_layer_norms(dev)


def test_finish_clip_and_scale_rows(dev):
    assert check_finish_and_scale(dev)


def test_owed_std(dev):
    assert check_owed_std(dev)


def test_streamed_equals_fused(dev, eng, monkeypatch):
    assert check_streamed_equals_fused(eng, dev, monkeypatch)


@pytest.mark.parametrize(("algo", "clipping", "placement"), GRAPH_CASES)
def test_graph_equals_eager(algo, clipping, placement):
    assert check_graph_equals_eager(algo, clipping, placement)


# DP-AdaFEST / DP-FEST: hybrid (host table) must train the gpu placement's model
SPARSE_CASES = [("dp-adafest", "off"), ("dp-adafest", "unit"), ("dp-adafest", "gaussian")]
SPARSE_CASES += [("dp-fest", "unit")]


@pytest.mark.parametrize(("algo", "noise_mode"), SPARSE_CASES)
def test_sparse_selection_hybrid_equals_gpu(algo, noise_mode):
    assert check_hybrid_equals_gpu(algo, noise_mode)


@pytest.mark.parametrize("placement", ["gpu", "hybrid", "hybrid-host"])
def test_verify_lazydp_on_each_gpu_placement(placement):
    """LazyDP equals DP-SGD(F) without noise and with unit noise (every read and the flushed
    model), and its Gaussian noise has the right distribution, where the GPU draws the
    queue's noise (`gpu`, `hybrid`) and where host threads draw it (`hybrid-host`)."""
    from lazydp_bench.runtime.verify import verify

    checks = verify(["lazydp"], placement, steps=8, seed=5)
    for c in checks:
        check(f"verify lazydp {placement}: {c.name}", c.ok, c.detail)
    assert checks and all(c.ok for c in checks)


def check_streamed_equals_fused(eng: TritonFusedEngine, dev: torch.device, monkeypatch) -> bool:
    """A host table noised by the streamed engine (windows drawn on the GPU, copied down,
    added by host threads) or the roundtrip engine (rows up, noised on the GPU, back into
    the registered table) gets the noise the fused kernel adds to the same table on the
    GPU with the same key: scalar and per-row std, windows across launch chunks (launches
    shrunk to 2**20 elements), odd column counts, several calls, unit mode exactly."""
    from lazydp_bench.dp.noise import triton_fused
    from lazydp_bench.dp.noise.round_trip import RoundTripEngine
    from lazydp_bench.dp.noise.streamed import StreamedEngine

    monkeypatch.setattr(triton_fused, "_MAX_LAUNCH_ELEMS", 1 << 20)
    ok = True
    for kind in (StreamedEngine, RoundTripEngine):
        for rows, cols, chunk in ((50_000, 128, 2**20), (30_011, 33, 3 * 2**20 + 4096)):
            host = torch.randn(rows, cols)
            engine = kind(chunk, 4, drawer=eng, via=dev)
            per_row = torch.rand(rows) + 0.1
            for std in (0.5, per_row, per_row.to(dev)):  # a GPU std: LazyDP's flush in hybrid
                gpu = host.to(dev)
                dstd = std.to(dev) if isinstance(std, torch.Tensor) else std
                eng.add_noise(gpu, dstd, 2**63 + 9, NULL_TIMER)
                eng.add_noise(gpu[: rows // 2], 0.25, 11, NULL_TIMER)
                got = host.clone()
                engine.add_noise(got, std, 2**63 + 9, NULL_TIMER)
                engine.add_noise_calls(got, [(0, rows // 2, 0.25, 11)], NULL_TIMER)
                err = (got - gpu.cpu()).abs().max().item()
                what = f"per-row on {std.device}" if isinstance(std, torch.Tensor) else "scalar"
                ok &= check(
                    f"{kind.name} == fused ({rows}x{cols}, {what} std)",
                    err < 1e-5,
                    f"max |diff| {err:.1e}",
                )
            unit = host.clone()
            engine.add_noise(unit, 0.25, 3, NULL_TIMER, unit=True)
            ok &= check(f"{kind.name} unit mode", bool(torch.equal(unit, host + 0.25)), "bitwise")
    return ok


def check_keys(eng: TritonFusedEngine, dev: torch.device) -> bool:
    """Keys that differ only above bit 32 or bit 48 draw other noise, the same key the same
    noise, a key >= 2**63 works (int64 in device memory), and the two launch chunks of one
    call (counter word 1) draw different noise at the same offset."""
    ok = True
    draws = {}
    for key in (7, 7 + 2**40, 7 + 2**50, 2**64 - 5):
        x = torch.zeros(4096, 128, device=dev)
        eng.add_noise(x, 1.0, key, NULL_TIMER)
        draws[key] = x
    again = torch.zeros(4096, 128, device=dev)
    eng.add_noise(again, 1.0, 2**64 - 5, NULL_TIMER)
    ok &= check("key >= 2**63 reproduces", bool(torch.equal(again, draws[2**64 - 5])), "bitwise")
    for key in (7 + 2**40, 7 + 2**50, 2**64 - 5):
        same = int((draws[key] == draws[7]).sum().item())
        ok &= check(f"key 7 vs {key:#x} differ", same < 5, f"{same} equal elements of 524288")
    rows = (1 << 30) // 128  # rows of one launch
    big = torch.zeros(rows + 64, 128, device=dev)
    eng.add_noise(big, 1.0, 11, NULL_TIMER)
    same = int((big[:64] == big[rows:]).sum().item())
    ok &= check("launch chunks draw other noise", same < 5, f"{same} equal of {64 * 128}")
    del big
    return ok


def check_box_muller_accuracy(dev: torch.device) -> bool:
    """Each math path's normals against float64 Box-Muller of the same Philox words (read
    back from a kernel that stores them): the engine's default path within 4e-6 absolute
    for |z| < 7 (float32 keeps ~1e-7 relative), no NaN or inf, no exact 0, and the tails
    reached (|z| > 5 has ~38 expected draws in 64 M)."""
    import triton
    import triton.language as tl

    from lazydp_bench.dp.noise import triton_fused as tf

    @triton.jit
    def words(out_ptr, seed_ptr, n_groups, BLOCK: tl.constexpr):
        g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = g < n_groups
        zero = g.to(tl.uint32) * 0
        c0, c1, c2, c3 = tl.philox(tl.load(seed_ptr), g.to(tl.uint32), zero, zero, zero)
        tl.store(out_ptr + 4 * g, c0.to(tl.int64) & 0xFFFFFFFF, mask=m)
        tl.store(out_ptr + 4 * g + 1, c1.to(tl.int64) & 0xFFFFFFFF, mask=m)
        tl.store(out_ptr + 4 * g + 2, c2.to(tl.int64) & 0xFFFFFFFF, mask=m)
        tl.store(out_ptr + 4 * g + 3, c3.to(tl.int64) & 0xFFFFFFFF, mask=m)

    n_groups = 1 << 24  # 64 M normals
    seed = torch.full((), 99, dtype=torch.int64, device=dev)
    w = torch.empty(n_groups, 4, dtype=torch.int64, device=dev)
    words[(n_groups // 1024,)](w, seed, n_groups, BLOCK=1024)
    ok = True
    for math_path in (0, 1, 2):
        eng = tf.TritonFusedEngine(256 * 2**20, 1, math=math_path)
        z = torch.zeros(n_groups * 4 // 128, 128, device=dev)
        eng.add_noise(z, 1.0, Scalar(99, seed), NULL_TIMER)
        # element i of program p lies at p*4*BLOCK + k*BLOCK + j for group p*BLOCK + j
        z = z.view(-1, 4, tf.BLOCK).transpose(1, 2).reshape(-1, 4).double()
        want = _box_muller64(w, math_path)
        err = (z - want).abs().max().item()
        finite = bool(torch.isfinite(z).all().item()) and bool((z != 0).all().item())
        top = z.abs().max().item()
        limit = 4e-6 if math_path == tf.MATH else 1e-3
        ok &= check(
            f"Box-Muller path {math_path}{' (default)' if math_path == tf.MATH else ''} vs float64",
            err < limit and finite and top > 5,
            f"max |z - z64| {err:.2e}, max |z| {top:.2f}",
        )
    return ok


def _box_muller64(w: torch.Tensor, math_path: int) -> torch.Tensor:
    """float64 Box-Muller of Philox words [n, 4] as `triton_fused` maps them."""
    u = (w.double() + 0.5) / 2**32
    r0, r1 = (-2 * u[:, 0].log()).sqrt(), (-2 * u[:, 2].log()).sqrt()
    start = -math.pi if math_path == 0 else -math.pi / 4  # where the turn (c + 1/2) / 2**32 starts
    t0 = 2 * math.pi * u[:, 1] + start
    t1 = 2 * math.pi * u[:, 3] + start
    return torch.stack([r0 * t0.cos(), r0 * t0.sin(), r1 * t1.cos(), r1 * t1.sin()], dim=1)


def check_rows_kernel(eng: TritonFusedEngine, dev: torch.device) -> bool:
    """add_noise_rows (one fused pass into the table rows) == the base class's reference
    (noise drawn into a [slots, D] buffer by the dense kernel, then index_add), the same
    draws up to rounding;
    rows past 2**31 elements exercise 64-bit offsets; padded slots (std 0) repeat rows."""
    ok = True
    big = torch.zeros(17_000_000, 128, device=dev)  # 2.2e9 elements
    slots = 300_000
    rows = torch.randperm(big.shape[0], device=dev)[:slots]
    rows[-1] = big.shape[0] - 1
    pad = 1000
    all_rows = torch.cat([rows, rows[:pad]])
    std = torch.cat([torch.rand(slots, device=dev) + 0.1, torch.zeros(pad, device=dev)])
    std[::2] *= -1  # the sign only matters in unit mode
    seed = Scalar(5, torch.full((), 5, dtype=torch.int64, device=dev))
    local_rows = torch.cat([torch.arange(slots, device=dev), torch.arange(pad, device=dev)])
    for unit in (False, True):
        big[rows] = 1.0
        eng.add_noise_rows(big, all_rows, std, seed, NULL_TIMER, unit)
        ref = torch.ones(slots, 128, device=dev)
        DenseNoiseEngine.add_noise_rows(eng, ref, local_rows, std, seed, NULL_TIMER, unit)
        err = (big[rows] - ref).abs().max().item()
        touched = int((big != 0).any(1).sum().item())
        ok &= check(
            f"fused row noise == reference ({'unit' if unit else 'gaussian'})",
            err <= 1e-6 and touched == slots,
            f"max |diff| {err:.1e} (w + z*s fused to one FMA: rounding only; other draws "
            f"would differ by ~1), rows touched {touched} of {slots}",
        )
    del big
    return ok


def check_ghost_norms(dev: torch.device) -> bool:
    gen = torch.Generator(device=dev).manual_seed(0)
    ok = True
    for cols_in, cols_out in ((13, 512), (479, 1024), (256, 1)):
        a = torch.randn(2048, cols_in, device=dev, generator=gen)
        d = torch.randn(2048, cols_out, device=dev, generator=gen)
        got = torch.ones(2048, device=dev)
        add_linear_sq_norms(got, a, d)
        d_sq = d.double().square().sum(1)
        want = 1 + a.double().square().sum(1) * d_sq + d_sq
        err = ((got.double() - want).abs() / want).max().item()
        ok &= check(f"triton ghost norms {cols_in}x{cols_out}", err < 1e-5, f"max rel {err:.1e}")
    return ok


def check_all_layer_norms(dev: torch.device) -> bool:
    """All layers in one launch (10 layers: two launches; strided activations) against
    fp64 and against one launch per layer (the same sums; the compiler may contract the
    multiply-adds differently, so rounding may differ)."""
    gen = torch.Generator(device=dev).manual_seed(2)
    widths = [13, 512, 256, 128, 479, 1024, 1024, 512, 256, 1, 7]
    inputs = [torch.randn(2048, w + 2, device=dev, generator=gen)[:, :w] for w in widths[:-1]]
    deltas = [torch.randn(2048, w, device=dev, generator=gen) for w in widths[1:]]
    start = torch.rand(2048, device=dev, generator=gen)
    want, got = start.clone(), start.clone()
    exact = start.double()
    for a, d in zip(inputs, deltas, strict=True):
        add_linear_sq_norms(want, a, d)
        d_sq = d.double().square().sum(1)
        exact += a.double().square().sum(1) * d_sq + d_sq
    add_all_linear_sq_norms(got, inputs, deltas)
    err = ((got.double() - exact).abs() / exact).max().item()
    err_layer = ((got - want).abs() / want).max().item()
    return check(
        "triton ghost norms, all layers in one launch",
        err < 1e-5 and err_layer < 1e-5,
        f"max rel vs fp64 {err:.1e}, vs one launch per layer {err_layer:.1e}",
    )


def check_finish_and_scale(dev: torch.device) -> bool:
    """finish_clip (bag norms + clip factors + scaled pooled gradient in one kernel) and
    scale_rows against the torch path in fp64 (the same functions on fp64 tensors)."""
    gen = torch.Generator(device=dev).manual_seed(1)
    ok = True
    # a slice of a [B, T + 1, D] gradient, as the DLRM's: each example's block contiguous
    d_pooled = (torch.randn(2048, 27, 128, device=dev, generator=gen) * 0.05)[:, 1:]
    layers = torch.rand(2048, device=dev, generator=gen) * 2
    for scale in (True, False):
        sq = layers.clone()
        c, pooled = finish_clip(sq, d_pooled, None, 3.0, scale)
        sq64 = layers.double()
        c64, pooled64 = finish_clip(sq64, d_pooled.double(), None, 3.0, True)
        err_sq = ((sq.double() - sq64).abs() / sq64).max().item()
        err_c = ((c.double() - c64).abs() / c64).max().item()
        err_p = (pooled.double() - pooled64).abs().max().item() if scale else 0.0
        clipped = (c64 < 1).float().mean().item()
        ok &= check(
            f"triton finish_clip (scale pooled: {scale})",
            max(err_sq, err_c) < 1e-5
            and err_p < 1e-6
            and 0 < clipped < 1
            and (pooled is None) != scale
            and (pooled is None or pooled.is_contiguous())
            and finish_on_triton(sq, d_pooled),
            f"rel sq {err_sq:.1e}, rel c {err_c:.1e}, pooled {err_p:.1e}; clipped {clipped:.0%}",
        )
    for cols in (1, 13, 479, 1024):
        x = torch.randn(2048, cols + 3, device=dev, generator=gen)[:, :cols]  # strided rows
        c = torch.rand(2048, device=dev, generator=gen)
        got = scale_rows(x, c)
        err = (got - x * c.view(-1, 1)).abs().max().item()
        ok &= check(f"triton scale_rows 2048x{cols}", err == 0 and got.is_contiguous(), f"{err}")
    xs = [torch.randn(2048, w + 1, device=dev, generator=gen)[:, :w] for w in range(1, 1100, 100)]
    c = torch.rand(2048, device=dev, generator=gen)
    many = scale_rows_many(xs, c)  # 11 tensors: two launches
    same = all(torch.equal(m, scale_rows(x, c)) for m, x in zip(many, xs, strict=True))
    return ok & check("triton scale_rows_many == scale_rows, 11 tensors", same, "")


def check_owed_std(dev: torch.device) -> bool:
    """The fused owed-noise kernel against its torch path: same std per slot (0 on padded
    slots), same history afterwards; int32 and int64 history, unit and gaussian."""
    gen = torch.Generator(device=dev).manual_seed(2)
    ok = True
    steps, n_rows, slots = 50, 1_000_000, 60_000
    lrs = torch.rand(steps, dtype=torch.float64) + 0.5
    zero = torch.zeros(1, dtype=torch.float64)
    for hist_dtype in (torch.int32, torch.int64):
        for unit in (False, True):
            prefix = torch.cat([zero, (lrs if unit else lrs.square()).cumsum(0)]).to(dev)
            hist = torch.randint(0, 30, (n_rows,), device=dev, generator=gen).to(hist_dtype)
            uniq = torch.randperm(n_rows, device=dev, generator=gen)[:slots].sort().values
            rows = torch.cat([uniq, uniq[:500]])  # padded slots repeat valid rows
            valid = torch.arange(rows.numel(), device=dev) < slots
            upto = torch.full((), 31, dtype=torch.int64, device=dev)
            h_ref = hist.clone()
            want = owed_std(h_ref, rows, valid, upto, prefix, 4e-5, unit, torch.float32, False)
            got = owed_std(hist, rows, valid, upto, prefix, 4e-5, unit, torch.float32)
            err = ((got - want).abs() / want.abs().clamp(min=1e-30)).max().item()
            ok &= check(
                f"fused owed std ({hist_dtype}, {'unit' if unit else 'gaussian'})",
                err < 1e-6 and torch.equal(hist, h_ref) and bool((got[slots:] == 0).all()),
                f"max rel {err:.1e}, history equal {torch.equal(hist, h_ref)}",
            )
    return ok


def _graph_config(algo: str, clipping: str | None, placement: str) -> RunConfig:
    return RunConfig(
        algo=algo,
        table_size="96MB",
        batch_size=256,
        placement=placement,
        iterations=6,
        warmup=2,
        lr=LRSchedule(base=1.0, decay=0.3),
        privacy=PrivacyConfig(clip_norm=1.0, noise_multiplier=1.0),
        clipping=clipping,
        breakdown=False,
        cuda_graph="on",
    )


def check_graph_equals_eager(algo: str, clipping: str | None, placement: str) -> bool:
    """Same seeds, eager vs warm-up + capture + replays; the noise per step (~4e-3 per
    element, so ~2e-2 at the largest element) is far above the drift of fp32 reordering
    (1e-6 to 1e-4: book-keeping clipping's matmuls, lr 1.0, amplify it over the steps), so
    a frozen seed or lr fails, and so does hybrid host work that reads a pinned buffer
    before its copy landed."""
    plan = plan_run(_graph_config(algo, clipping, placement))
    steps = plan.config.total_steps
    eager = build_session(plan)
    for t in range(steps):
        eager.step(t, NULL_TIMER)
    graphed_session = build_session(plan)
    graphed = GraphedStep(graphed_session)
    for t in range(plan.config.warmup):
        graphed.warm_step(t, NULL_TIMER)
    graphed.capture()
    for t in range(plan.config.warmup, steps):
        graphed.step(t, NULL_TIMER)
    for s in (eager, graphed_session):
        s.algo.finalize()
    torch.cuda.synchronize()
    diffs = [
        (eager.model.table - graphed_session.model.table).abs().max().item(),
        (eager.model.flat_params - graphed_session.model.flat_params).abs().max().item(),
    ]
    moved = (eager.model.table != build_session(plan).model.table).float().mean().item()
    name = f"graph == eager ({algo}{'[' + clipping + ']' if clipping else ''}, {placement})"
    detail = f"max |diff| table {diffs[0]:.1e}, mlp {diffs[1]:.1e}; rows changed {moved:.1%}"
    return check(name, max(diffs) < 1e-3 and moved > 0, detail)


class _Replay:
    """A batch source that hands out given batches, moved to a session's devices."""

    def __init__(self, batches: list, table_device: torch.device, mlp_device: torch.device):
        from lazydp_bench.data.synthetic import Batch

        self._batches = [
            Batch(b.dense.to(mlp_device), b.labels.to(mlp_device), b.rows.to(table_device))
            for b in batches
        ]
        self._next = 0

    def peek(self):
        return self._batches[self._next]

    def advance(self):
        self._next += 1
        return self._batches[self._next - 1]


def check_hybrid_equals_gpu(algo: str, noise_mode: str, steps: int = 6) -> bool:
    """The same run (fp64 `tiny`, seed 3) in gpu and in hybrid placement: the selection,
    its noise and the row updates are made on the GPU in both (same draws, same keys), and
    hybrid ships the selected rows' updates to its host table, so the models must be
    equal bitwise. lr 0.5 / batch 8 makes alpha = -1/16 a power of two, so the host's fused
    `table + alpha * v` rounds as the GPU's `table + (alpha * v)`. The threshold keeps a
    strict subset of the touched rows (noise off / unit: those read twice or more, whose
    noise-free value is count / 12; Gaussian: tau 1, with false positives)."""
    from lazydp_bench.config import SparsityConfig
    from lazydp_bench.dp.selection import split_noise_multiplier
    from lazydp_bench.runtime.verify import tiny_config

    shift = {"off": 0.0, "unit": split_noise_multiplier(1.0, 0.5)[0]}.get(noise_mode)
    tau = 1.0 if shift is None else shift + 2 / 12 - 1e-9
    params = SparsityConfig(tau=tau, fest_fraction=0.3)
    sessions = []
    for placement in ("gpu", "hybrid"):
        config = tiny_config(algo, placement, steps, 3, noise_mode=noise_mode, sparsity=params)
        sessions.append(build_session(plan_run(config)))
    gpu, hybrid = sessions
    # one start and one data stream for both (synthetic ids come from a generator on the
    # table's device, so the two placements would otherwise draw different batches)
    batches = [hybrid.source.advance() for _ in range(steps + 1)]
    with torch.no_grad():
        gpu.model.table.copy_(hybrid.model.table)
        gpu.model.flat_params.copy_(hybrid.model.flat_params)
    for session in sessions:
        session.source = _Replay(batches, session.model.table.device, session.model.mlp_device)
        for t in range(steps):
            session.step(t, NULL_TIMER)
    torch.cuda.synchronize()
    tables = gpu.model.table.cpu(), hybrid.model.table
    mlps = gpu.model.flat_params, hybrid.model.flat_params
    same = torch.equal(*tables) and torch.equal(*mlps)
    stats = [s.algo.record_extras()["sparsity"] for s in sessions]
    start = build_session(plan_run(config)).model.table
    moved = (tables[1] != start).any(1).float().mean().item()
    diffs = [(a - b.to(a.device)).abs().max().item() for a, b in (tables, mlps)]
    detail = (
        f"max |diff| table {diffs[0]:.1e}, mlp {diffs[1]:.1e}; selection counts equal "
        f"{stats[0] == stats[1]}; rows changed {moved:.1%}"
    )
    name = f"hybrid == gpu bitwise ({algo}, noise {noise_mode})"
    return check(name, same and stats[0] == stats[1] and 0 < moved < 1, detail)
