"""DP-FEST / DP-AdaFEST in hybrid placement, checked on a CPU.

Hybrid differs from gpu placement in one place for these algorithms: their row updates
(computed on the GPU) reach a host table through `SparseOps.add_rows`, which ships only
the update's valid prefix, and FEST's row noise goes through `Placement.add_row_noise`.
`HostTableOps` reproduces that crossing on a CPU (device code on every tensor but the
table, which receives the valid prefix only), so a hybrid session built on it must train
the same model, bitwise, as the gpu form (every sparse op on its device path, noise into
the table in place). A masked update that did not put its valid slots first would ship
the wrong rows and fail this. `tests/test_gpu.py` makes the same check on a real GPU.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lazydp_bench.algorithms.adafest import DPFEST, DPAdaFEST
from lazydp_bench.config import DataConfig, RunConfig, SparsityConfig
from lazydp_bench.dp import selection
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.placement.hybrid import HybridPlacement
from lazydp_bench.placement.layout import MemoryLimits
from lazydp_bench.runtime import trainer
from lazydp_bench.runtime.sparse import SparseOps, SparseRows, valid_first
from tests.conftest import tiny_config

STEPS = 4
CPU = torch.device("cpu")
LIMITS = MemoryLimits(gpu_bytes=2**34, host_bytes=2**34, host_source="test")
PER_EXAMPLE = 4 * 3  # the tiny workload: 4 tables, pooling 3
SIGMA_SEL = selection.split_noise_multiplier(1.0, 0.5)[0]


class HostTableOps(SparseOps):
    """hybrid's sparse ops with the CPU standing in for the GPU: the device code runs on
    every tensor but `table` (host RAM), and an update into the table crosses as
    `to_device` ships a GPU update: its valid prefix only (kept in `shipped`)."""

    def __init__(self, threads: int, **kw) -> None:
        super().__init__(threads, **kw)
        self.table: torch.Tensor | None = None
        self.shipped: list[SparseRows] = []

    def _is_table(self, tensor: torch.Tensor) -> bool:
        table = self.table
        return table is not None and tensor.data_ptr() == table.data_ptr()

    def device_path(self, tensor: torch.Tensor) -> bool:
        return not self._is_table(tensor)

    def apply_rows(self, table, update, alpha=1.0) -> None:
        if self._is_table(table):
            count = int(update.valid.sum())
            ones = torch.ones(count, dtype=torch.bool)
            update = SparseRows(update.rows[:count].clone(), update.values[:count].clone(), ones)
            self.shipped.append(update)
        super().apply_rows(table, update, alpha)


def _session(config: RunConfig, monkeypatch, hybrid: bool):
    """A session in hybrid form (`HostTableOps`, hybrid placement on the CPU) or gpu form
    (cpu placement, every sparse op on its device path)."""
    if hybrid:
        monkeypatch.setattr(trainer, "SparseOps", HostTableOps)
        monkeypatch.setattr(HybridPlacement, "create", classmethod(lambda cls: cls(CPU, CPU)))
        plan = trainer.plan_run(replace(config, placement="hybrid"), limits=LIMITS)
    else:
        forced = lambda threads, **kw: SparseOps(threads, True, **kw)  # noqa: E731
        monkeypatch.setattr(trainer, "SparseOps", forced)
        plan = trainer.plan_run(replace(config, placement="cpu"))
    session = trainer.build_session(plan)
    monkeypatch.undo()
    if hybrid:
        session.algo.ctx.sparse.table = session.model.table
    return session


def _tau(mode: str) -> float:
    """A threshold that keeps a strict subset of the touched rows (those read twice or
    more: the noise-free value is count / 12), so the selected slots are not a prefix of
    the coalesced gradient; Gaussian noise: tau 1, with false positives (p ~ 0.24)."""
    shift = {"off": 0.0, "unit": SIGMA_SEL}.get(mode)
    return 1.0 if shift is None else shift + 2 / PER_EXAMPLE - 1e-9


CASES = [("dp-adafest", "off"), ("dp-adafest", "unit"), ("dp-adafest", "gaussian")]
CASES += [("dp-adafest-plus", "unit"), ("dp-fest", "unit"), ("dp-fest", "gaussian")]


@pytest.mark.parametrize(("algo", "mode"), CASES)
def test_hybrid_form_equals_gpu_form_bitwise(monkeypatch, algo, mode):
    """lr 0.5 / batch 8: alpha = -1/16 is a power of two, so the host's fused
    `table + alpha * v` and the device's `table + (alpha * v)` round alike."""
    params = SparsityConfig(tau=_tau(mode), fest_fraction=0.3)
    config = tiny_config(algo, noise_multiplier=1.0, noise_mode=mode, sparsity=params)
    hybrid = _session(config, monkeypatch, hybrid=True)
    gpu = _session(config, monkeypatch, hybrid=False)
    assert isinstance(hybrid.placement, HybridPlacement) and hybrid.placement.name == "hybrid"
    start = gpu.model.table.clone()
    assert torch.equal(hybrid.model.table, start)
    for t in range(STEPS):
        hybrid.step(t, NULL_TIMER)
        gpu.step(t, NULL_TIMER)
    assert torch.equal(hybrid.model.table, gpu.model.table)
    assert torch.equal(hybrid.model.flat_params, gpu.model.flat_params)
    assert not torch.equal(gpu.model.table, start)
    stats = hybrid.algo.record_extras()["sparsity"]
    assert stats == gpu.algo.record_extras()["sparsity"]
    shipped = hybrid.algo.ctx.sparse.shipped
    assert shipped and all(len(set(u.rows.tolist())) == u.rows.numel() for u in shipped)
    touched = stats["rows_touched_per_step"]
    if algo != "dp-fest":  # a strict subset of the touched rows was selected
        assert 0 < stats["true_positives_per_step"] < touched
    if mode == "gaussian" and algo == "dp-adafest":
        assert stats["false_positives_per_step"] > 0


def test_hybrid_fest_noise_is_drawn_for_its_rows_only(monkeypatch):
    """FEST's noise reaches a host table as row updates of its rows (no table-sized
    buffer), bounded by --chunk-size: 4 KiB of noise = 64 rows of 8 fp64 per update."""
    params = SparsityConfig(fest_fraction=0.6)
    config = tiny_config("dp-fest", noise_multiplier=1.0, sparsity=params, chunk_bytes=4096)
    session = _session(config, monkeypatch, hybrid=True)
    session.step(0, NULL_TIMER)
    fest = session.algo.noise_rows.tolist()
    noise = session.algo.ctx.sparse.shipped[1:]  # after the gradient rows
    assert [u.rows.numel() for u in noise][:-1] == [64] * (len(noise) - 1)
    assert torch.cat([u.rows for u in noise]).tolist() == fest
    assert len(fest) < session.model.table.shape[0]


def test_valid_first_keeps_the_valid_slots_in_order_then_the_rest():
    gen = torch.Generator().manual_seed(4)
    rows = torch.randperm(50, generator=gen)
    values = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    valid = torch.rand(50, generator=gen) < 0.4
    out = valid_first(SparseRows(rows, values, valid))
    n = int(valid.sum())
    assert out.valid[:n].all() and not out.valid[n:].any()
    assert out.rows[:n].tolist() == rows[valid].tolist()
    assert out.rows[n:].tolist() == rows[~valid].tolist()
    assert torch.equal(out.values[:n], values[valid])
    assert torch.equal(out.values[n:], values[~valid])


def test_hybrid_runs_are_planned_and_fest_still_refuses_data_files():
    """The hybrid refusal is gone; DP-FEST's public ranks still need the synthetic source."""
    for cls in (DPAdaFEST, DPFEST):
        cls.check_run(RunConfig(), placement="hybrid", clipping="ghost")
    plan = trainer.plan_run(
        RunConfig(algo="dp-adafest", workload="tiny", placement="hybrid"), limits=LIMITS
    )
    assert plan.placement == "hybrid"
    files = RunConfig(data=DataConfig(("train.tsv",)))
    with pytest.raises(BenchError, match="synthetic source's public frequencies"):
        DPFEST.check_run(files, placement="hybrid", clipping="ghost")
