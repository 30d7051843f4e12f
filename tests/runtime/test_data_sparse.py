import collections

import pytest
import torch

from lazydp_bench.data import SyntheticBatchSource, parse_distribution
from lazydp_bench.dp.clipping import bag_sum_sq_multiplicity
from lazydp_bench.errors import BenchError
from lazydp_bench.runtime.sparse import (
    SparseOps,
    SparseRows,
    bag_row_gradients,
    coalesce,
    unique_rows,
)

CPU = torch.device("cpu")


def source(dist="uniform", seed=3, rows=(50, 7, 300), pooling=4, batch=16):
    return SyntheticBatchSource(
        rows,
        5,
        batch_size=batch,
        pooling=pooling,
        distribution=parse_distribution(dist),
        table_device=CPU,
        mlp_device=CPU,
        dtype=torch.float32,
        seed=seed,
    )


def test_lookahead_equals_next_batch():
    src = source()
    for _ in range(5):
        ahead = src.peek()
        got = src.advance()
        assert got is ahead
        assert torch.equal(got.rows, ahead.rows)


def test_draw_ahead_keeps_the_stream():
    """Drawing the batch after next early (graph steps) gives the same batches in order."""
    plain, early = source(seed=5), source(seed=5)
    for t in range(6):
        if t % 2 == 0:
            early.draw_ahead()
            early.draw_ahead()  # a second call draws nothing more
        x, y = plain.advance(), early.advance()
        assert torch.equal(x.rows, y.rows) and torch.equal(x.dense, y.dense)
        assert torch.equal(x.labels, y.labels)
        assert torch.equal(plain.peek().rows, early.peek().rows)


def test_seeded_and_reproducible():
    a, b, c = source(seed=1), source(seed=1), source(seed=2)
    for _ in range(3):
        x, y, z = a.advance(), b.advance(), c.advance()
        assert torch.equal(x.rows, y.rows) and torch.equal(x.dense, y.dense)
        assert not torch.equal(x.rows, z.rows)


@pytest.mark.parametrize("dist", ["uniform", "zipf:1.05", "low", "medium", "high", "zipf:1.0"])
def test_rows_stay_inside_their_table(dist):
    rows = (50, 7, 300)
    batch = source(dist, rows=rows, batch=512).advance()
    starts = torch.tensor([0, 50, 57])
    local = batch.rows - starts.view(1, -1, 1)
    assert batch.rows.shape == (512, 3, 4)
    assert local.min() >= 0
    for t, n in enumerate(rows):
        assert local[:, t].max() < n


def test_uniform_is_uniform_and_zipf_is_skewed():
    rows = (1000,)
    uni = source("uniform", rows=rows, batch=4096, pooling=10).advance().rows.flatten()
    zipf = source("zipf:1.2", rows=rows, batch=4096, pooling=10).advance().rows.flatten()
    n = uni.numel()
    top_uni = torch.bincount(uni, minlength=1000).max().item() / n
    top_zipf = torch.bincount(zipf, minlength=1000).max().item() / n
    # uniform: each row has p = 1e-3, max over 1000 rows stays below 2.5e-3 with n = 40960
    assert top_uni < 2.5e-3
    # zipf(1.2) on 1000 ranks: the top rank alone has p ~ 0.24
    assert top_zipf > 0.15
    assert len(torch.unique(zipf)) > 50  # hot rows are scattered, the tail still drawn


def test_bad_distribution():
    with pytest.raises(BenchError, match="valid: uniform"):
        parse_distribution("gauss")
    with pytest.raises(BenchError):
        parse_distribution("zipf:-1")


def _brute_coalesce(rows, values):
    acc = collections.defaultdict(lambda: torch.zeros(values.shape[1], dtype=values.dtype))
    for r, v in zip(rows.tolist(), values, strict=True):
        acc[r] = acc[r] + v
    return acc


def test_coalesce_equals_brute_force_and_pads_with_zeros():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 20, (200,), generator=gen)
    values = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    out = coalesce(rows, values)
    want = _brute_coalesce(rows, values)
    count = int(out.valid.sum())
    assert count == len(want)
    assert out.rows[:count].tolist() == sorted(want)
    for r, v in zip(out.rows[:count].tolist(), out.values[:count], strict=True):
        torch.testing.assert_close(v, want[r])
    assert torch.all(out.values[count:] == 0)
    assert set(out.rows[count:].tolist()) <= set(want)  # pads land on updated rows only
    table = torch.zeros(20, 3, dtype=torch.float64)
    table.index_add_(0, out.rows, out.values)
    ref = torch.zeros(20, 3, dtype=torch.float64)
    ref.index_add_(0, rows, values)
    torch.testing.assert_close(table, ref)


def test_unique_rows_slots_map_back():
    rows = torch.tensor([5, 3, 5, 9, 3, 3])
    uniq, slot = unique_rows(rows)
    assert torch.equal(uniq.rows[slot], rows)
    assert int(uniq.valid.sum()) == 3


def test_padding_is_spread_over_input_rows_and_narrow_keys_agree():
    """Padded slots hold the input's duplicate rows (so their zero adds do not all collide
    on one row), and 32-bit sort keys give the same result as 64-bit ones."""
    gen = torch.Generator().manual_seed(3)
    rows = torch.randint(0, 2000, (5000,), generator=gen)
    wide, wide_slot = unique_rows(rows)
    narrow, narrow_slot = unique_rows(rows, narrow=True)
    assert torch.equal(wide.rows, narrow.rows) and torch.equal(wide_slot, narrow_slot)
    assert narrow.rows.dtype == torch.int64
    count = int(wide.valid.sum())
    assert count == rows.unique().numel() < rows.numel()
    tail = wide.rows[count:]
    assert set(tail.tolist()) <= set(rows.tolist())
    most_common = torch.bincount(tail).max().item()
    assert most_common <= torch.bincount(rows).max().item()  # no row takes every pad


def test_bag_row_gradients():
    rows = torch.tensor([[[1, 1, 4]], [[4, 2, 2]]])  # B=2, T=1, L=3
    pooled_grad = torch.tensor([[[1.0, 2.0]], [[10.0, 20.0]]])
    out = bag_row_gradients(rows, pooled_grad)
    got = {
        r: v.tolist()
        for r, v, ok in zip(out.rows.tolist(), out.values, out.valid, strict=True)
        if ok
    }
    assert got == {1: [2.0, 4.0], 2: [20.0, 40.0], 4: [11.0, 22.0]}


def test_bag_sum_sq_multiplicity():
    gen = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 4, (6, 3, 5), generator=gen)
    got = bag_sum_sq_multiplicity(rows)
    for b in range(6):
        for t in range(3):
            counts = collections.Counter(rows[b, t].tolist())
            assert got[b, t].item() == sum(m * m for m in counts.values())


def test_host_threaded_sparse_ops_equal_device_path():
    """The host path (exact unique + threaded parts) against the sync-free padded path."""
    from lazydp_bench.runtime.sparse import SparseOps

    ops = SparseOps(threads=4)
    gen = torch.Generator().manual_seed(2)
    rows = torch.randint(0, 30_000, (60_000,), generator=gen)
    values = torch.randn(60_000, 3, generator=gen, dtype=torch.float64)
    host = ops.coalesce(rows, values)
    dev = coalesce(rows, values)
    count = int(dev.valid.sum())
    assert ops._parts(host.rows.numel())[-1] == host.rows.numel() and count > 4 * 4096
    assert torch.equal(host.rows, dev.rows[:count])
    torch.testing.assert_close(host.values, dev.values[:count], rtol=1e-12, atol=1e-12)
    a = torch.zeros(30_000, 3, dtype=torch.float64)
    b = torch.zeros(30_000, 3, dtype=torch.float64)
    ops.add_rows(a, host, alpha=-2.0)
    b.index_add_(0, rows, values, alpha=-2.0)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(ops.unique(rows).rows, dev.rows[:count])


def test_host_merge_equals_device_coalesce():
    from lazydp_bench.runtime.sparse import SparseOps

    ops = SparseOps(threads=3)
    gen = torch.Generator().manual_seed(5)
    grad_rows = torch.randint(0, 5000, (9000,), generator=gen)
    grads = ops.coalesce(grad_rows, torch.randn(9000, 4, generator=gen, dtype=torch.float64))
    queue = ops.unique(torch.randint(0, 5000, (7000,), generator=gen))
    noise = torch.randn(queue.rows.numel(), 4, generator=gen, dtype=torch.float64)
    host = ops.merge(grads, -0.5, queue.rows, noise)
    assert host.rows.unique().numel() == host.rows.numel()  # one update per row
    shared = int(torch.isin(queue.rows, grads.rows).sum())
    assert 0 < shared < queue.rows.numel()  # both the in-place and the appended path ran
    a = torch.zeros(5000, 4, dtype=torch.float64)
    ops.add_rows(a, host)
    dev = coalesce(torch.cat([grads.rows, queue.rows]), torch.cat([grads.values * -0.5, noise]))
    b = torch.zeros(5000, 4, dtype=torch.float64)
    b.index_add_(0, dev.rows, dev.values)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_shipped_rows_come_back_as_their_valid_prefix():
    """A shipped update (no device crossing here) returns its valid slots, a prefix."""
    rows = torch.tensor([3, 9, 1, 4, 7, 7])
    values = torch.arange(12.0).view(6, 2)
    valid = torch.tensor([True, True, True, True, False, False])
    shipped = SparseOps(1).ship_async(SparseRows(rows, values, valid), CPU, "t")
    got = shipped.wait()
    assert got.rows.tolist() == [3, 9, 1, 4]
    assert torch.equal(got.values, values[:4]) and bool(got.valid.all())
