"""The host row-update kernel: bitwise `index_add_`, its fallback, and its use by SparseOps."""

from __future__ import annotations

import pytest
import torch

from lazydp_bench.runtime.host_rows import SCALAR_CAPABILITIES, HostRowAdder
from lazydp_bench.runtime.sparse import SparseOps, SparseRows

BUILT = HostRowAdder().kernels().lib is not None
VECTOR = torch.backends.cpu.get_cpu_capability() not in SCALAR_CAPABILITIES
needs_compiler = pytest.mark.skipif(
    not (BUILT and VECTOR), reason="no working C compiler, or torch runs scalar CPU kernels"
)


def _update(rows: int, n: int, dim: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, dim, dtype=dtype, generator=gen)
    ids = torch.randperm(rows, generator=gen)[:n].sort().values
    values = torch.randn(n, dim, dtype=dtype, generator=gen)
    return table, ids, values


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [1.0, 0.3712, -1e-3])
def test_kernel_is_index_add_bitwise(dtype, alpha):
    table, ids, values = _update(5000, 1800, 96, dtype)
    expected = table.clone().index_add_(0, ids, values, alpha=alpha)
    adder = HostRowAdder()
    assert adder.native(table, ids, values)
    for lo, hi in [(0, 700), (700, 701), (701, 1800)]:  # disjoint ranges, as threads split
        adder.add(table, ids, values, alpha, lo=lo, hi=hi)
    assert torch.equal(table, expected)


@needs_compiler
def test_out_of_range_row_raises():
    table, ids, values = _update(100, 10, 8, torch.float32)
    ids[7] = 100
    with pytest.raises(IndexError, match="row 100 is out of range for 100 rows"):
        HostRowAdder().add(table, ids, values, 1.0, lo=0, hi=10)


@needs_compiler
def test_mismatched_shapes_and_ranges_are_refused():
    """A shape the kernel would read past goes to index_add_, which raises; a range past
    the update raises before anything is written."""
    table, ids, values = _update(300, 40, 16, torch.float32)
    adder = HostRowAdder()
    assert not adder.native(table, ids, values[:20])
    assert not adder.native(table, ids.view(4, 10), values)
    before = table.clone()
    with pytest.raises((IndexError, RuntimeError)):
        adder.add(table, ids, values[:20], 1.0, lo=0, hi=40)
    with pytest.raises(IndexError, match=r"rows \[30, 41\) outside an update of 40 rows"):
        adder.add(table, ids, values, 1.0, lo=30, hi=41)
    assert torch.equal(table, before)


def test_scalar_torch_kernels_take_index_add(monkeypatch):
    """Where torch's CPU kernels do not fuse multiply and add, neither does the update."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    table, ids, values = _update(300, 40, 16, torch.float32)
    assert not HostRowAdder().native(table, ids, values)


def test_without_compiler_index_add_runs():
    adder = HostRowAdder(compiler=None)
    assert "index_add_" in adder.describe() and "no C compiler" in adder.describe()
    table, ids, values = _update(300, 120, 16, torch.float32)
    expected = table.clone().index_add_(0, ids, values, alpha=0.5)
    adder.add(table, ids, values, 0.5, lo=0, hi=120)
    assert torch.equal(table, expected)


@needs_compiler
def test_unsupported_layouts_fall_back():
    table, ids, values = _update(300, 50, 16, torch.float32)
    strided = torch.randn(16, 50).t()  # not contiguous
    adder = HostRowAdder()
    assert not adder.native(table, ids, strided)
    assert not adder.native(table.to(torch.bfloat16), ids, values.to(torch.bfloat16))
    expected = table.clone().index_add_(0, ids, strided, alpha=2.0)
    adder.add(table, ids, strided, 2.0, lo=0, hi=50)
    assert torch.equal(table, expected)


@pytest.mark.parametrize("compiler", ["", None])
def test_sparse_ops_apply_rows_in_parts(compiler):
    """More rows than one part (4096): threads apply disjoint parts; same as one index_add_."""
    table, ids, values = _update(40_000, 13_000, 8, torch.float32, seed=3)
    expected = table.clone().index_add_(0, ids, values, alpha=-0.25)
    ops = SparseOps(3, row_adder=HostRowAdder(compiler=compiler))
    assert len(ops._parts(ids.numel())) - 1 == 3
    ops.apply_rows(table, SparseRows(ids, values, torch.ones_like(ids, dtype=torch.bool)), -0.25)
    assert torch.equal(table, expected)
