"""The sharded path on CUDA: the Triton kernel of global-keyed noise against the torch
path, its draws per global coordinate whatever the launch, the table's calls syncing
only in the request, and `verify --gpus 2` over NCCL. Run on the GPU machine:
PYTHONPATH=$PWD python3 -m pytest -m gpu -s tests/distributed/test_sharded_gpu.py"""

from __future__ import annotations

import collections
import warnings

import pytest
import torch

from lazydp_bench.dp.noise import global_keyed as gk

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
KEY = 0x0123456789ABCDEF


def _kernel_range(rows: int, cols: int, first: int, std, dtype=torch.float64) -> torch.Tensor:
    target = torch.zeros((rows, cols), dtype=dtype, device="cuda")
    gk.add_range_noise(target, first, std, KEY)
    return target


@pytest.mark.skipif(not gk.AVAILABLE, reason="needs Triton")
def test_kernel_equals_torch_path_to_rounding():
    cols = 7  # rows straddle Philox groups
    got = _kernel_range(300, cols, 11, 1.0)
    z = gk.range_normals(11 * cols, 300 * cols, KEY, torch.device("cuda")).view(300, cols)
    assert (got - z).abs().max().item() < 1e-12
    std = torch.linspace(-2, 2, 300, dtype=torch.float64, device="cuda")
    assert (_kernel_range(300, cols, 11, std) - z * std.view(-1, 1)).abs().max().item() < 1e-11


@pytest.mark.skipif(not gk.AVAILABLE, reason="needs Triton")
def test_kernel_draws_depend_on_global_coordinates_only():
    cols = 5
    whole = _kernel_range(1000, cols, 0, 1.0, torch.float32)
    assert torch.equal(_kernel_range(333, cols, 401, 1.0, torch.float32), whole[401:734])
    table = torch.zeros((50, cols), dtype=torch.float32, device="cuda")
    rows = torch.tensor([999, 3, 401, 0, 77], device="cuda")
    local = torch.tensor([4, 9, 0, 49, 20], device="cuda")
    std = torch.ones(5, dtype=torch.float64, device="cuda")
    gk.add_row_noise(table, local, rows, std, KEY, unit=False)
    assert torch.equal(table[local], whole[rows])


def _syncs_of(name: str, fn, counts: collections.Counter):
    """fn, with the CUDA syncs it makes counted under `name` (sync debug mode "warn")."""

    def call(*args, **kwargs):
        before = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(before)
                counts[name] += sum("synchroniz" in str(w.message) for w in caught)

    return call


@pytest.mark.parametrize("algo", ["sgd", "dpsgd-f", "lazydp"])
def test_table_calls_sync_once_per_request_on_cuda(algo):
    """Of the table's calls in a step, only the request syncs, once (its sizes' read);
    the syncs of the rest of the step (forward, clipping) are printed."""
    from lazydp_bench.runtime.distributed import Rank
    from lazydp_bench.runtime.sharded_session import ShardedSession
    from tests.distributed.test_sharded import SMALL_TABLES, spec
    from tests.distributed.test_sharded_sync import TABLE_CALLS

    me = Rank(0, 1, torch.device("cuda", 0))
    session = ShardedSession(spec(algo, "gaussian", 2, rows=SMALL_TABLES), me)
    session.step(0)
    counts: collections.Counter = collections.Counter()
    for name in TABLE_CALLS:
        setattr(session.table, name, _syncs_of(name, getattr(session.table, name), counts))
    rest: collections.Counter = collections.Counter()
    step = _syncs_of("outside the table's calls", session.step, rest)
    for t in (1, 2):
        step(t)
    print(f"{algo}: CUDA syncs in 2 steps: {dict(counts)}, {dict(rest)}")
    assert +counts == {"request": 2}, dict(counts)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_verify_two_gpus_over_nccl():
    from lazydp_bench.runtime.sharded_verify import verify_sharded

    checks = verify_sharded(["sgd", "dpsgd-f", "lazydp"], 2, use_cuda=True, steps=4)
    assert all(c.ok for c in checks), [(c.algo, c.name, c.detail) for c in checks if not c.ok]
