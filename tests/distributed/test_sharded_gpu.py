"""The sharded path on CUDA: the Triton kernel of global-keyed noise against the torch
path, its draws per global coordinate whatever the launch, and `verify --gpus 2` over
NCCL. Run on the GPU machine: PYTHONPATH=$PWD python3 -m pytest -m gpu -s
tests/distributed/test_sharded_gpu.py"""

from __future__ import annotations

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


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_verify_two_gpus_over_nccl():
    from lazydp_bench.runtime.sharded_verify import verify_sharded

    checks = verify_sharded(["sgd", "dpsgd-f", "lazydp"], 2, use_cuda=True, steps=4)
    assert all(c.ok for c in checks), [(c.algo, c.name, c.detail) for c in checks if not c.ok]
