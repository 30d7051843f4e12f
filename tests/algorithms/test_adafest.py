"""DP-FEST and DP-AdaFEST: selection against brute force, the false-positive rate, noise
only on selected rows, the sigma split, select-all = DP-SGD(F), and the records."""

import json
import math
from collections import Counter

import pytest
import torch

from lazydp_bench.config import RunConfig, SparsityConfig
from lazydp_bench.data.distributions import parse_distribution, sample_rows
from lazydp_bench.dp import selection
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.runtime.sparse import SparseRows, unique_rows
from tests.conftest import cli, tiny_session

STEPS = 4


def _touched(rows: torch.Tensor, padded: bool) -> SparseRows:
    """The batch's unique rows: exact (host path) or padded (the GPU's sync-free path)."""
    if padded:
        return unique_rows(rows)[0]
    uniq = torch.unique(rows.reshape(-1))
    return SparseRows(uniq, None, torch.ones_like(uniq, dtype=torch.bool))


@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_sigma_split_composes_back_to_sigma(sigma, fraction):
    sel, grad = selection.split_noise_multiplier(sigma, fraction)
    assert selection.composed_multiplier(sel, grad) == pytest.approx(sigma, rel=1e-12)
    assert sel**-2 + grad**-2 == pytest.approx(sigma**-2, rel=1e-12)
    r = fraction / (1 - fraction)  # TF Privacy's ratio: sigma_grad / sigma_sel = 1 / r
    assert grad / sel == pytest.approx(1 / r, rel=1e-12)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(("mode", "tau_count"), [("off", 2), ("off", 1), ("unit", 3)])
def test_selection_equals_brute_force_counts(padded, mode, tau_count):
    """Noise off: rows with C1 count / (T L) >= tau; unit noise: + sigma_sel C1."""
    c1 = 0.7
    session = tiny_session("dp-adafest", noise_mode=mode, sparsity=SparsityConfig(c1=c1))
    algo = session.algo
    algo.prepare(0)
    batch = session.source.advance()
    per_example = batch.rows.shape[1] * batch.rows.shape[2]
    shift = algo.sigma_sel * c1 if mode == "unit" else 0.0
    tau = c1 * tau_count / per_example + shift - 1e-9
    algo.params = SparsityConfig(tau=tau, c1=c1)
    touched = _touched(batch.rows, padded)
    keep = algo.select_touched(batch.rows, touched)
    counts = Counter(batch.rows.reshape(-1).tolist())
    want = {r for r, n in counts.items() if n >= tau_count}
    got = set(touched.rows[keep].tolist())
    assert got == want and want
    assert (len(want) < len(counts)) == (tau_count > 1)


@pytest.mark.parametrize("padded", [False, True])
def test_false_positive_rate_matches_p(padded):
    """Over many steps the untouched rows are selected at rate p (within 5 binomial sd),
    never a touched row, never twice, never past the table; spread over the table."""
    session = tiny_session("dp-adafest", noise_multiplier=1.0, sparsity=SparsityConfig(tau=2.0))
    algo = session.algo
    p, rows = algo.fp_probability, algo.table_rows
    assert 0.01 < p < 0.2 and algo.fp_capacity < rows
    batch = session.source.advance()
    touched = _touched(batch.rows, padded)
    touched_set = set(touched.rows[touched.valid].tolist())
    untouched = rows - len(touched_set)
    total, halves, steps = 0, [0, 0], 300
    for t in range(steps):
        algo.prepare(t)
        fp, valid = algo.false_positives(touched)
        got = fp[valid].tolist()
        assert len(set(got)) == len(got) and not touched_set & set(got)
        assert all(0 <= r < rows for r in got)
        total += len(got)
        halves[0] += sum(r < rows // 2 for r in got)
        halves[1] += sum(r >= rows // 2 for r in got)
    n = steps * untouched
    assert abs(total - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert abs(halves[0] - halves[1]) < 5 * math.sqrt(total)  # uniform over the table
    stats = algo.record_extras()["sparsity"]
    assert stats["fp_capacity_short_steps"] == 0


def _spy(monkeypatch, algo, name, out):
    real = getattr(algo, name)
    monkeypatch.setattr(algo, name, lambda *a: out.append(real(*a)) or out[-1])


def test_adafest_noises_only_selected_rows(monkeypatch):
    session = tiny_session("dp-adafest", noise_multiplier=1.0, sparsity=SparsityConfig(tau=0.5))
    algo, table = session.algo, session.model.table
    keeps, fps, touched = [], [], []
    _spy(monkeypatch, algo, "select_touched", keeps)
    _spy(monkeypatch, algo, "false_positives", fps)
    real_rows = algo.row_gradients
    monkeypatch.setattr(
        algo, "row_gradients", lambda *a: touched.append(real_rows(*a)) or touched[-1]
    )
    before = table.clone()
    session.step(0, NULL_TIMER)
    fp_rows, fp_valid = fps[0]
    selected = set(touched[0].rows[keeps[0]].tolist()) | set(fp_rows[fp_valid].tolist())
    changed = set((table != before).any(1).nonzero().reshape(-1).tolist())
    assert changed == selected and 0 < len(selected) < table.shape[0]
    assert fp_valid.any()  # false positives were drawn and noised


def test_fest_trains_only_its_rows():
    session = tiny_session(
        "dp-fest", noise_multiplier=1.0, sparsity=SparsityConfig(fest_fraction=0.2)
    )
    table = session.model.table
    before = table.clone()
    for t in range(STEPS):
        session.step(t, NULL_TIMER)
    fest = set(session.algo.fest.tolist())
    changed = set((table != before).any(1).nonzero().reshape(-1).tolist())
    assert changed == fest  # every kept row gets noise, no other row moves
    rows = session.model.workload.rows
    assert len(fest) == sum(math.ceil(0.2 * n) for n in rows)


@pytest.mark.parametrize("device_path", [False, True])
def test_select_all_equals_dpsgd_f_with_unit_noise(monkeypatch, device_path):
    """tau = -inf selects every row: AdaFEST is then DP-SGD(F) at sigma_grad, exactly
    (unit noise: every normal is 1)."""
    if device_path:
        from lazydp_bench.runtime import sparse

        init = sparse.SparseOps.__init__
        forced = lambda self, threads, **kw: init(self, threads, True, **kw)  # noqa: E731
        monkeypatch.setattr(sparse.SparseOps, "__init__", forced)
    sigma, everything = 0.7, SparsityConfig(tau=-math.inf, selection_fraction=0.3)
    ada = tiny_session("dp-adafest", noise_multiplier=sigma, noise_mode="unit", sparsity=everything)
    sigma_grad = ada.algo.ctx.noise_multiplier
    assert sigma_grad == pytest.approx(selection.split_noise_multiplier(sigma, 0.3)[1])
    ref = tiny_session("dpsgd-f", noise_multiplier=sigma_grad, noise_mode="unit")
    for t in range(STEPS):
        ada.step(t, NULL_TIMER)
        ref.step(t, NULL_TIMER)
    torch.testing.assert_close(ada.model.table, ref.model.table, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ada.model.flat_params, ref.model.flat_params, rtol=1e-12, atol=1e-13)
    stats = ada.algo.record_extras()["sparsity"]
    assert stats["rows_selected_per_step"] == ada.algo.table_rows


def test_fest_rows_are_the_most_frequent_rows():
    """FEST's public ranks match the synthetic source: each table's top row is its most
    drawn row under zipf."""
    dist = parse_distribution("zipf:1.3")
    table_rows = (50, 200, 31)
    gen = torch.Generator().manual_seed(3)
    drawn = sample_rows(dist, torch.tensor(table_rows), (20000, 3, 1), gen)
    fest = selection.fest_rows(table_rows, dist, 0.01, torch.device("cpu"))
    offsets = [0, 50, 250]
    for t in range(3):
        mode = Counter(drawn[:, t, 0].tolist()).most_common(1)[0][0]
        assert mode + offsets[t] in fest.tolist()


def test_bad_parameters_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="selection-fraction"):
        SparsityConfig(selection_fraction=1.0)
    res = cli("run", "--algo", "dp-adafest", "--tau", "nan", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "--tau must be" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_records_flags_parameters_and_selection(tmp_path):
    res = cli(
        "run",
        "--algo",
        "dp-adafest,dp-fest",
        "--workload",
        "tiny",
        "--table-size",
        "full",
        "--placement",
        "cpu",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--tau",
        "0.05",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["config"]["algo"] for r in recs] == ["dp-adafest", "dp-fest"]
    for rec in recs:
        assert rec["status"] == "ok"
        assert rec["privacy"]["dp_equivalent"] is False
        assert rec["privacy"]["epsilon"] > 0  # the split composes to sigma: accounted
        assert "selection" in {s["name"] for s in rec["stages"]}
        assert rec["sparsity"]["dense_grad_elements"] == rec["config"]["table_rows"] * 8
    ada, fest = (r["config"]["sparsity"] for r in recs)
    assert ada["tau"] == 0.05 and ada["c1"] == 1.0 and ada["selection_fraction"] == 0.5
    assert 1 / ada["sigma_sel"] ** 2 + 1 / ada["sigma_grad"] ** 2 == pytest.approx(
        1 / ada["noise_multiplier"] ** 2
    )
    assert fest["fest_fraction"] == 0.01 and fest["fest_rows"] > 0
    assert recs[0]["sparsity"]["true_positives_per_step"] > 0
    assert "NOT DP-SGD-equivalent" in res.stdout


def test_a_threshold_whose_false_positives_outgrow_the_noise_bound_is_refused():
    """tau = -inf selects every row: its noise rows would be a table-sized temporary once
    the table outgrows --chunk-size, so the run stops with the reason instead."""
    from lazydp_bench.runtime.trainer import execute, plan_run

    config = RunConfig(
        algo="dp-adafest",
        workload="tiny",
        placement="cpu",
        iterations=1,
        warmup=0,
        chunk_bytes=4096,
        sparsity=SparsityConfig(tau=-math.inf),
    )
    record = execute(plan_run(config))
    assert record["status"] == "error"
    assert "above --chunk-size 4.1 KB" in record["error"] and "raise --tau" in record["error"]
