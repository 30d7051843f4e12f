"""Per-step values in device memory (what a CUDA graph replays) and when graphs are used."""

from __future__ import annotations

import pytest
import torch

from lazydp_bench.config import LRSchedule
from lazydp_bench.dp.seeds import as_int64, derive_seed
from lazydp_bench.runtime.graph_step import graph_blocker
from lazydp_bench.runtime.step_scalars import STREAM_MLP, STREAM_SPARSE, STREAM_TABLE, StepScalars

CPU = torch.device("cpu")


def _scalars(steps: int = 4) -> tuple[StepScalars, LRSchedule]:
    lr = LRSchedule(base=0.5, decay=0.25)
    scalars = StepScalars(lr, 8, 1.5, seed=42, steps=steps, devices=[CPU, CPU], dtype=torch.float64)
    return scalars, lr


@pytest.mark.parametrize("t", [0, 1, 3])
def test_prepare_writes_step_t_values_into_fixed_tensors(t):
    scalars, lr = _scalars()
    scalars.prepare(0)
    alpha_tensor = scalars.get("alpha", CPU).tensor
    scalars.prepare(t)
    alpha = scalars.get("alpha", CPU)
    assert alpha.value == pytest.approx(-lr.lr(t) / 8)
    assert alpha.tensor.item() == pytest.approx(alpha.value)
    assert alpha.tensor.data_ptr() == alpha_tensor.data_ptr()  # same address every step
    noise = scalars.get("noise_alpha", CPU)
    assert noise.tensor.item() == pytest.approx(-lr.lr(t) / 8 * 1.5)
    assert scalars.get("t_next", CPU).tensor.item() == t + 1
    for name, stream in (
        ("seed_table", STREAM_TABLE),
        ("seed_mlp", STREAM_MLP),
        ("seed_sparse", STREAM_SPARSE),
    ):
        seed = scalars.get(name, CPU)
        assert seed.value == derive_seed(42, t, stream)
        assert seed.tensor.item() == as_int64(seed.value)  # the same 64 bits, as int64


def test_schedule_grows_eagerly_but_not_under_a_graph():
    scalars, lr = _scalars(steps=2)
    with pytest.raises(RuntimeError, match="past the 2 steps planned"):
        scalars.prepare(2, fixed_capacity=True)
    scalars.prepare(5)
    assert scalars.capacity >= 6
    assert scalars.get("alpha", CPU).tensor.item() == pytest.approx(-lr.lr(5) / 8)


def test_reading_before_prepare_is_an_error():
    scalars, _ = _scalars()
    with pytest.raises(RuntimeError, match="prepare"):
        scalars.get("alpha", CPU)


GOOD = dict(
    mode="auto",
    placement="gpu",
    graphable=True,
    breakdown=False,
    noise_impl="fused",
    noise_mode="gaussian",
    warmup=3,
    private=True,
)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mode": "off"}, "--cuda-graph off"),
        ({"placement": "cpu"}, "cpu placement"),
        ({"graphable": False}, "changes shape"),
        ({"breakdown": True}, "--no-breakdown"),
        ({"noise_impl": "torch"}, "torch noise engine"),
        ({"noise_mode": "unit"}, "unit-noise"),
        ({"warmup": 1}, "--warmup >= 2"),
        ({"placement": "hybrid-host", "history_table": True}, "LazyDP's bookkeeping"),
    ],
)
def test_graph_blocker_names_the_reason(change, reason):
    assert reason in graph_blocker(**{**GOOD, **change})


def test_graph_blocker_lets_hybrid_steps_be_captured():
    blocker = graph_blocker(**{**GOOD, "placement": "hybrid"})
    assert blocker == (None if torch.cuda.is_available() else "no CUDA device")


@pytest.mark.parametrize("placement", ["hybrid", "hybrid-host"])
def test_graph_blocker_hybrid_host_blocks_only_history_algorithms(placement):
    """hybrid-host runs LazyDP's bookkeeping on the host (not replayable); DP-SGD's steps
    there are hybrid's, captured alike; hybrid keeps LazyDP's work on the GPU."""
    gpu = None if torch.cuda.is_available() else "no CUDA device"
    assert graph_blocker(**{**GOOD, "placement": placement}) == gpu
    lazy = graph_blocker(**{**GOOD, "placement": placement, "history_table": True})
    assert (lazy == gpu) == (placement == "hybrid")


def test_hybrid_host_keeps_the_history_table_in_host_ram():
    from lazydp_bench.placement.layout import estimate_need
    from lazydp_bench.runtime.trainer import resolve_workload

    wl = resolve_workload("mlperf-dlrm", "960MB", 4)
    kw = dict(batch=256, pooling=1, elem=4, chunk_bytes=2**20, clipping="ghost")
    hybrid = estimate_need(wl, "hybrid", history_table=True, **kw)
    paper = estimate_need(wl, "hybrid-host", history_table=True, **kw)
    moved = wl.total_rows * 4
    assert paper.host_bytes == hybrid.host_bytes + moved
    # hybrid's GPU also holds the host table's noise windows (2 x 3 chunks for roundtrip)
    assert paper.gpu_bytes == hybrid.gpu_bytes - moved - 6 * 2**20


def test_graph_blocker_torch_engine_is_fine_for_sgd():
    blocker = graph_blocker(**{**GOOD, "noise_impl": "torch", "private": False})
    assert blocker in (None, "no CUDA device")
    assert blocker == (None if torch.cuda.is_available() else "no CUDA device")


def test_vectorized_schedule_equals_step_values_bit_for_bit():
    """The schedule is built with numpy in one pass; every row must equal the per-step
    Python values (same floats to the bit, same 64-bit keys) the engines and tests use."""
    from lazydp_bench.dp.seeds import as_int64
    from lazydp_bench.runtime.step_scalars import schedule_rows, step_values

    lr = LRSchedule(base=0.3, decay=0.7)
    args = (lr, 24, 1.7, 2**63 - 5)
    floats, ints = schedule_rows(300, *args)
    for t in range(300):
        fl, it = step_values(t, *args)
        assert floats[t].tolist() == fl
        assert ints[t].tolist() == [as_int64(v) for v in it]


def test_per_step_schedules_are_in_the_memory_estimate():
    """A million steps' schedules (and LazyDP's prefix sums) are counted before a run."""
    from lazydp_bench.placement.layout import estimate_need
    from lazydp_bench.workloads import load_workload

    wl = load_workload("tiny")
    kw = dict(batch=8, pooling=3, elem=4, chunk_bytes=2**20, clipping="ghost")
    base = estimate_need(wl, "cpu", history_table=True, **kw)
    more = estimate_need(wl, "cpu", history_table=True, steps=10**6, **kw)
    assert more.host_bytes - base.host_bytes == 10**6 * (2 * 4 + 4 * 8 + 3 * 8)
