"""Opacus as a peer (`opacus`, `opacus-ghost`): the same DLRM as modules over our storage,
Opacus' noise-free update equal to ours (pooling 1, multi-hot bags without repeats; ghost
mode with repeats too), the hooks-mode EmbeddingBag per-sample gradient counting a row
repeated inside a bag once (documented, so this fails if Opacus fixes it), our lr schedule,
Opacus' own Gaussian noise, what is refused at plan time, and the records and figures."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch

from lazydp_bench.algorithms import get_algorithm
from lazydp_bench.config import PrivacyConfig
from lazydp_bench.data import Batch
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.profiling import NULL_TIMER
from lazydp_bench.model.torch_dlrm import PerExampleLoss, TorchDLRM
from lazydp_bench.report.figures import FIGURES
from lazydp_bench.runtime.trainer import Session, execute, plan_run
from lazydp_bench.runtime.verify import check_gaussian
from tests.conftest import cli, tiny_config, tiny_session

PEERS = ("opacus", "opacus-ghost")
EXACT = 1e-14  # float64: only the summation order differs
STEPS = 3


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def _model_err(a: Session, b: Session) -> float:
    return max(
        _rel_err(a.model.table, b.model.table),
        _rel_err(a.model.flat_params, b.model.flat_params),
    )


def _distinct_bags(session: Session, seed: int) -> Batch:
    """A batch like the session's, but each bag holds distinct rows of its table."""
    batch = session.source.peek()
    b, _, pooling = batch.rows.shape
    gen = torch.Generator().manual_seed(seed)
    start, bags = 0, []
    for n in session.plan.workload.rows:
        bags.append(torch.rand(b, n, generator=gen).argsort(dim=1)[:, :pooling] + start)
        start += n
    return Batch(batch.dense, batch.labels, torch.stack(bags, dim=1))


def _has_repeat(rows: torch.Tensor) -> bool:
    ordered = rows.sort(dim=-1).values
    return bool((ordered[..., 1:] == ordered[..., :-1]).any())


def _lockstep(algo: str, ref: str = "dpsgd-f", distinct: bool = False, **kw) -> float:
    """`algo` and `ref` stepped on the same batches with noise off: the weights' error."""
    test = tiny_session(algo, noise_mode="off", **kw)
    base = tiny_session(ref, noise_mode="off", **kw)
    for t in range(STEPS):
        batch = _distinct_bags(base, t) if distinct else base.source.advance()
        for session in (test, base):
            session.algo.step(t, batch, batch, NULL_TIMER)
    return _model_err(test, base)


def test_modules_alias_our_storage_and_compute_our_loss():
    """No second copy of the model: every module parameter lies in our table or flat MLP
    buffer; the modules' per-example loss is our DLRM's."""
    session = tiny_session("sgd", pooling=2)
    model = session.model
    batch = session.source.peek()
    owners = {t.untyped_storage().data_ptr(): t for t in (model.table, model.flat_params)}
    for bags in (True, False):
        module = TorchDLRM(model, bags=bags)
        covered = dict.fromkeys(owners, 0)
        for p in module.parameters():
            covered[p.untyped_storage().data_ptr()] += p.numel()  # KeyError: a copy
        assert covered == {ptr: t.numel() for ptr, t in owners.items()}
        loss = PerExampleLoss(model.workload.loss, "none")(
            module(batch.dense, batch.rows), batch.labels
        )
        torch.testing.assert_close(loss, model.forward(batch).loss, rtol=0, atol=EXACT)


@pytest.mark.parametrize("algo", PEERS)
@pytest.mark.parametrize("ref", ["dpsgd-b", "dpsgd-r", "dpsgd-f", "dpsgd-bk", "lazydp"])
def test_noise_off_update_equals_ours_pooling_1(algo, ref):
    assert _lockstep(algo, ref, pooling=1) <= EXACT


@pytest.mark.parametrize("algo", PEERS)
def test_noise_off_update_equals_ours_multi_hot_without_repeats(algo):
    assert _lockstep(algo, distinct=True, pooling=3) <= EXACT


def test_repeated_rows_ghost_exact_hooks_not():
    """tiny's pooling-3 bags hold repeated rows: ghost clipping (nn.Embedding) still
    equals ours; hooks mode (nn.EmbeddingBag) does not (see the next test)."""
    assert _has_repeat(tiny_session("sgd").source.peek().rows)
    assert _lockstep("opacus-ghost") <= EXACT
    assert _lockstep("opacus") > 1e-6


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_hooks_embedding_bag_counts_a_repeated_row_once():
    """Opacus 1.6's EmbeddingBag per-sample gradient (`gsm[i][index[begin:end]] +=
    backprops[i]`) adds a row repeated m times in a bag once: its per-sample gradient is
    the brute-force one divided by m on that row, and equal elsewhere."""
    from opacus import GradSampleModule

    session = tiny_session("sgd", pooling=3)
    batch = session.source.peek()
    rows = batch.rows.clone()
    rows[0, 0] = torch.tensor([3, 3, 5])  # example 0, table 0: row 3 twice
    batch = Batch(batch.dense, batch.labels, rows)
    module = TorchDLRM(session.model, bags=True)
    criterion = PerExampleLoss(session.model.workload.loss, "none")
    brute = [
        torch.autograd.grad(loss, module.tables[0].weight, retain_graph=True)[0]
        for loss in criterion(module(batch.dense, batch.rows), batch.labels)
    ]
    wrapped = GradSampleModule(module, loss_reduction="mean")
    criterion.reduction = "mean"
    criterion(wrapped(batch.dense, batch.rows), batch.labels).backward()
    opacus = module.tables[0].weight.grad_sample
    for i, expected in enumerate(brute):
        mult = torch.bincount(rows[i, 0], minlength=expected.shape[0]).clamp(min=1)
        torch.testing.assert_close(opacus[i] * mult[:, None], expected, rtol=1e-12, atol=EXACT)
    torch.testing.assert_close(opacus[0, 3], brute[0][3] / 2, rtol=1e-12, atol=EXACT)
    assert not torch.allclose(opacus[0], brute[0])


@pytest.mark.parametrize("algo", PEERS)
def test_lr_decay_follows_our_schedule(algo):
    assert _lockstep(algo, pooling=1, lr_decay=0.3) <= EXACT


@pytest.mark.parametrize("algo", PEERS)
def test_opacus_noise_has_the_dp_sgd_distribution(algo):
    """verify's real-noise check: (noisy - noise-free weights) / sd is N(0, 1), sd from
    our sigma, C, B and lr schedule, the noise drawn by Opacus' optimizer."""
    check = check_gaussian(algo, "cpu", 4, 1, 0.3)
    assert check.passed, check.detail


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"privacy": PrivacyConfig(noise_multiplier=1.0, noise_mode="unit")}, "'unit' cannot"),
        ({"clipping": "reweight"}, "--clipping 'reweight' is not supported"),
        ({"momentum": 0.9}, "plain SGD"),
    ],
)
def test_plan_refuses_what_opacus_cannot_run(overrides, message):
    config = tiny_config("opacus")
    fields = {k: v for k, v in overrides.items() if k != "momentum"}
    lr = replace(config.lr, momentum=overrides.get("momentum", 0.0))
    config = replace(config, lr=lr, **fields)
    with pytest.raises(BenchError, match=message):
        plan_run(config)


@pytest.mark.parametrize("placement", ["hybrid", "hybrid-host"])
def test_split_placements_are_refused(placement):
    algo = get_algorithm("opacus-ghost")
    with pytest.raises(BenchError, match=f"placement '{placement}' is not supported"):
        algo.check_run(tiny_config("opacus-ghost"), placement=placement, clipping="ghost")


def test_a_missing_or_old_opacus_is_one_line(monkeypatch):
    import opacus

    config = tiny_config("opacus")
    monkeypatch.setattr(opacus, "__version__", "1.5.2")
    with pytest.raises(BenchError, match=r"Opacus >= 1.6, found 1.5.2 \(pip install"):
        plan_run(config)
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(BenchError, match=r"needs Opacus >= 1.6 \(pip install -e \"\.\[peers\]\"\)"):
        plan_run(config)


def test_record_names_the_peer_and_times_its_stages():
    record = execute(plan_run(tiny_config("opacus-ghost", iterations=2)))
    assert record["status"] == "ok", record.get("error")
    assert record["config"]["peer"].startswith("opacus 1.")
    assert record["config"]["grad_sample_mode"] == "ghost"
    assert record["noise"] is None  # Opacus drew the noise, not our engines
    names = {s["name"] for s in record["stages"]}
    assert {"forward", "backward_per_example", "model_update"} <= names


def test_cli_runs_both_peers(tmp_path):
    steps = ("--iterations", "2", "--warmup", "1", "--noise-multiplier", "1")
    res = cli(
        "run",
        "--algo",
        ",".join(PEERS),
        "--workload",
        "tiny",
        "--table-size",
        "full",
        "--placement",
        "cpu",
        *steps,
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["config"]["algo"] for r in recs] == list(PEERS)
    assert all(r["status"] == "ok" and r["config"]["peer"].startswith("opacus") for r in recs)
    assert [r["config"]["grad_sample_mode"] for r in recs] == ["hooks", "ghost"]
    assert "Traceback" not in res.stderr and "backward hook" not in res.stderr


def test_fig3_and_fig13a_draw_the_peers():
    for name in ("fig3", "fig13a"):
        assert set(PEERS) <= set(FIGURES[name].algos)
