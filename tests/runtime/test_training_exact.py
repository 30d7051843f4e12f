"""Exactness against brute-force references (fp64): sparse SGD vs dense autograd SGD,
every clipping mode vs per-example autograd, DP-SGD without noise vs SGD."""

import pytest
import torch

from lazydp_bench.dp.clipping import CLIPPING_MODES
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.sparse import bag_row_gradients
from tests.conftest import force_delivery, tiny_session
from tests.reference import clone_params, per_example_clipped_sum, ref_losses

STEPS = 4


def _step(session, steps=STEPS):
    for t in range(steps):
        session.step(t, NULL_TIMER)


def test_sparse_sgd_equals_dense_autograd_sgd():
    session = tiny_session("sgd", lr=0.5)
    ref = tiny_session("sgd", lr=0.5)  # same seed: same init and same batches
    table, mlp = clone_params(ref)
    lr, batch_size = 0.5, ref.plan.batch_size
    for _ in range(STEPS):
        batch = ref.source.advance()
        loss = ref_losses(ref, table, mlp, batch).sum()
        grads = torch.autograd.grad(loss, [table, *mlp])
        with torch.no_grad():
            for p, g in zip([table, *mlp], grads, strict=True):
                p -= lr / batch_size * g
    _step(session)
    torch.testing.assert_close(session.model.table, table.detach(), rtol=1e-10, atol=1e-12)
    flat = torch.cat([p.detach().reshape(-1) for p in mlp])
    torch.testing.assert_close(session.model.flat_params, flat, rtol=1e-10, atol=1e-12)
    assert not torch.equal(session.model.table, ref.model.table)  # it did train


@pytest.mark.parametrize("mode", ["materialize", "reweight", "ghost", "bookkeeping"])
@pytest.mark.parametrize("clip_norm", [0.05, 1e3])
def test_clipping_equals_brute_force(mode, clip_norm):
    session = tiny_session("dpsgd-f", clipping=mode, clip_norm=clip_norm)
    _step(session, 2)  # leave the init point so gradients are generic
    batch = session.source.advance()
    rows = batch.rows
    assert any(len(set(bag.tolist())) < rows.shape[-1] for bag in rows.reshape(-1, rows.shape[-1]))
    want_table, want_mlp, want_norms = per_example_clipped_sum(session, batch, clip_norm)
    fs = session.model.forward(batch)
    got = CLIPPING_MODES[mode](session.model, fs, clip_norm, NULL_TIMER)
    torch.testing.assert_close(got.mlp_grad, want_mlp, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.norms, want_norms, rtol=1e-9, atol=1e-12)
    sparse = bag_row_gradients(rows, got.pooled_grad)
    dense = torch.zeros_like(want_table)
    dense.index_add_(0, sparse.rows, sparse.values)
    torch.testing.assert_close(dense, want_table, rtol=1e-9, atol=1e-12)
    if clip_norm < 1:
        assert (want_norms > clip_norm).any()  # clipping was really exercised


@pytest.mark.parametrize("algo", ["dpsgd-b", "dpsgd-r", "dpsgd-f", "dpsgd-bk", "lazydp", "eana"])
def test_noise_free_unclipped_dp_equals_sgd(algo):
    sgd = tiny_session("sgd")
    dp = tiny_session(algo, noise_multiplier=0.0, clip_norm=1e9)
    _step(sgd)
    _step(dp)
    dp.algo.finalize()
    torch.testing.assert_close(dp.model.table, sgd.model.table, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dp.model.flat_params, sgd.model.flat_params, rtol=1e-10, atol=1e-12)


@pytest.fixture
def device_sparse_path(monkeypatch):
    """Route the CPU runs through the sync-free padded code the GPU path uses, including
    per-step scales read from tensors."""
    from lazydp_bench.runtime import sparse

    init = sparse.SparseOps.__init__
    monkeypatch.setattr(
        sparse.SparseOps, "__init__", lambda self, threads, **kw: init(self, threads, True, **kw)
    )


@pytest.mark.usefixtures("device_sparse_path")
def test_device_sparse_path_sgd():
    test_sparse_sgd_equals_dense_autograd_sgd()


@pytest.mark.usefixtures("device_sparse_path")
@pytest.mark.parametrize("mode", ["in-place", "merged", "carried"])
def test_device_sparse_path_lazydp_noise_update_modes(monkeypatch, mode):
    """Every way LazyDP's queue noise reaches the table, through the device path, against
    DP-SGD(F): straight into the table rows (gpu placement), carried to the next step's
    lookup and gradient update (hybrid), merged with the gradient into one update (host)."""
    from lazydp_bench.placement.cpu import CpuPlacement
    from lazydp_bench.runtime.sparse import SparseOps
    from lazydp_bench.runtime.verify import check_gaussian, check_unit_noise

    device_ops = SparseOps(1)  # the fixture routes it through the device path
    delivery = CpuPlacement.create().owed_noise_delivery(device_ops, torch.zeros(2, 2))
    assert delivery.mode == "in-place"
    force_delivery(monkeypatch, mode)
    session = tiny_session("lazydp")
    assert session.algo.noise_update == mode
    check = check_unit_noise("lazydp", "cpu", 8, 0, 0.3)
    assert check.passed, check.detail
    check = check_gaussian("lazydp", "cpu", 8, 1, 0.3)
    assert check.passed, check.detail


@pytest.mark.parametrize("device_path", [False, True])
def test_carried_noise_touches_the_table_once_per_step(monkeypatch, device_path):
    """`carried` writes the table once per step (the gradient rows with the kept noise of
    the same rows), never for the noise alone, and the forward reads each row with its
    owed noise: the bags it sees equal DP-SGD(F)'s at every step (unit noise, fp64)."""
    from lazydp_bench.runtime import sparse

    force_delivery(monkeypatch, "carried")
    if device_path:
        init = sparse.SparseOps.__init__
        forced = lambda self, threads, **kw: init(self, threads, True, **kw)  # noqa: E731
        monkeypatch.setattr(sparse.SparseOps, "__init__", forced)
    test = tiny_session("lazydp", noise_mode="unit", iterations=6)
    ref = tiny_session("dpsgd-f", noise_mode="unit", iterations=6)
    writes, seen = [], []
    real_apply, real_forward = test.algo.ctx.sparse.apply_rows, test.model.forward

    def apply_rows(*args, **kwargs):
        writes.append(1)
        return real_apply(*args, **kwargs)

    def forward(batch, pooled=None):
        seen.append(pooled)
        return real_forward(batch, pooled)

    delivery = test.algo.delivery
    real_update = delivery.update
    aligned = []

    def update(grads, owed, tools):  # the kept noise's rows are the gradient's, slot by slot
        kept = delivery._kept
        if kept is not None:
            aligned.append(torch.equal(grads.rows[grads.valid], kept.rows[kept.valid]))
        return real_update(grads, owed, tools)

    monkeypatch.setattr(test.algo.ctx.sparse, "apply_rows", apply_rows)
    monkeypatch.setattr(test.model, "forward", forward)
    monkeypatch.setattr(delivery, "update", update)
    for t in range(6):
        rows = ref.source.peek().rows
        want = ref.model.lookup(rows)
        writes.clear()
        test.step(t, NULL_TIMER)
        ref.step(t, NULL_TIMER)
        assert len(writes) == 1
        torch.testing.assert_close(seen[-1], want, rtol=1e-12, atol=1e-12)
    assert aligned == [True] * 5
    assert test.algo.delivery._kept.values.abs().sum() > 0  # noise is kept for step 6
    outside = torch.arange(test.model.table.shape[0])
    outside = outside[~torch.isin(outside, test.source.peek().rows.reshape(-1))]
    assert torch.equal(test.algo.rows_as_read(outside), test.model.table[outside])
    test.algo.finalize()
    ref.algo.finalize()
    torch.testing.assert_close(test.model.table, ref.model.table, rtol=1e-12, atol=1e-12)


def test_carried_noise_survives_a_flush_in_the_middle(monkeypatch):
    """A flush between steps (held-out evaluation does one) writes the kept noise into
    the table once: training on equals training without it (unit noise, fp64)."""
    force_delivery(monkeypatch, "carried")
    a = tiny_session("lazydp", noise_mode="unit", iterations=6)
    b = tiny_session("lazydp", noise_mode="unit", iterations=6)
    for t in range(6):
        a.step(t, NULL_TIMER)
        b.step(t, NULL_TIMER)
        if t in (2, 3):
            b.algo.flush()
            b.algo.flush()  # idempotent
    assert not torch.equal(a.model.table, b.model.table)  # b holds noise a still keeps
    a.algo.finalize()
    b.algo.finalize()
    torch.testing.assert_close(a.model.table, b.model.table, rtol=1e-12, atol=1e-12)


def test_all_clipping_modes_registered():
    assert set(CLIPPING_MODES) == {"none", "materialize", "reweight", "ghost", "bookkeeping"}


@pytest.mark.usefixtures("device_sparse_path")
@pytest.mark.parametrize("algo", ["lazydp", "sgd", "dpsgd-f", "eana"])
def test_each_batch_is_sorted_once(monkeypatch, algo):
    """Batch t+1's unique rows, sorted in step t (LazyDP's input queue, the others'
    `sort_ahead`), are carried to step t+1's gradient coalescing: after step 0, one sort
    per step, and the carried rows are the next batch's. (The trained models' equality
    with brute force on this path is checked above.)"""
    from lazydp_bench.runtime import sparse

    calls = []
    real = sparse.unique_rows
    monkeypatch.setattr(sparse, "unique_rows", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    session = tiny_session(algo, iterations=4)
    for t in range(4):
        calls.clear()
        session.step(t, NULL_TIMER)
        assert len(calls) == (2 if t == 0 else 1)
        held, _slot = session.algo.carry.get()
        want = session.source.peek().rows.unique()
        assert torch.equal(held.rows[held.valid], want)
