"""Held-out utility (`run --data ... --eval-data ... --eval-every K --eval-lines M`): a tiny
run learns the generator's planted model, the metrics equal a brute-force computation on
the same logits, evaluation stays out of the timed steps, bad options are one line.

The held-out lines are a separate file written with another seed: the generator's planted
model is fixed (not seeded), so both files draw from one distribution."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch

from lazydp_bench.config import DataConfig, EvalConfig, LRSchedule, PrivacyConfig, RunConfig
from lazydp_bench.data.criteo import CriteoBatchSource, scan
from lazydp_bench.data.criteo_gen import GenSpec, make_criteo
from lazydp_bench.errors import BenchError
from lazydp_bench.runtime import trainer
from lazydp_bench.runtime.utility import Evaluator, load_heldout
from tests.conftest import cli

TRAIN_LINES, EVAL_LINES = 30_000, 4_000
BATCH, STEPS = 128, 200  # 201 batches (look-ahead included) < 30,000 lines: no wrap-around
# AUC of a model that learned nothing: 0.5 with a standard deviation of about
# sqrt((n1 + n0 + 1) / (12 n1 n0)) ~ 0.011 for ~1,000 clicks among 4,000 lines; 0.6 is
# about 9 of them above chance. The planted model's own AUC is ~0.75; 200 steps reach
# ~0.66 here.
AUC_FLOOR = 0.6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("criteo")
    train, held = root / "train.txt", root / "held.txt"
    make_criteo(train, GenSpec(lines=TRAIN_LINES, seed=1))
    make_criteo(held, GenSpec(lines=EVAL_LINES + 500, seed=2))
    return train, held


RUN = (
    "run",
    "--workload",
    "criteo-kaggle",
    "--table-size",
    "2MB",
    "--placement",
    "cpu",
    "--batch-size",
    str(BATCH),
    "--no-breakdown",
)


def test_a_tiny_run_learns_and_equivalent_algorithms_agree(files, tmp_path):
    """SGD, DP-SGD(F) and LazyDP with noise off and a clipping norm no gradient reaches
    are the same training: the same held-out AUC and log-loss at every evaluation, to
    rounding (LazyDP's merged host update rounds alpha * gradient before adding it, SGD's
    update is one fused multiply-add), which float64 keeps far below the tolerances
    (in float32 it grew to 7e-4 in AUC over 200 steps on an AVX-512 host). With noise on they
    are equal only in distribution (DP-SGD's dense draws and LazyDP's owed-noise draws
    use different keys), so only noise off is compared exactly."""
    train, held = files
    out = tmp_path / "runs"
    res = cli(
        *RUN,
        "--algo",
        "sgd,dpsgd-f,lazydp",
        "--iterations",
        str(STEPS),
        "--warmup",
        "0",
        "--lr",
        "0.05",
        "--noise-multiplier",
        "0",
        "--clip-norm",
        "1e6",
        "--dtype",
        "float64",
        "--data",
        f"criteo:{train}",
        "--eval-data",
        f"criteo:{held}",
        "--eval-lines",
        str(EVAL_LINES),
        "--eval-every",
        "100",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "held-out AUC / log-loss" in res.stdout and "AUC" in res.stdout
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["config"]["algo"] for r in records] == ["sgd", "dpsgd-f", "lazydp"]
    for rec in records:
        u = rec["utility"]
        assert rec["status"] == "ok"
        assert u["steps"] == [100, 200] and u["eval_every"] == 100
        assert u["final_auc"] == u["auc"][-1] > AUC_FLOOR
        assert u["flushed_before_eval"] == (rec["config"]["algo"] == "lazydp")
        # held out: its own file, M lines of it; training read only its own file, once
        assert u["eval_files"] == [str(held)] and rec["data"]["files"] == [str(train)]
        assert u["eval_lines"] == EVAL_LINES and u["eval_skipped_lines"] == 0
        assert u["eval_lines_read"] == EVAL_LINES + 500  # parsed in whole blocks
        assert rec["data"]["lines_used"] == (STEPS + 1) * BATCH <= TRAIN_LINES
        assert rec["data"]["passes"] == 0
    sgd = records[0]["utility"]
    for rec in records[1:]:
        np.testing.assert_allclose(rec["utility"]["auc"], sgd["auc"], atol=1e-5)
        np.testing.assert_allclose(rec["utility"]["logloss"], sgd["logloss"], rtol=1e-5)

    from lazydp_bench.records.tidy import load_runs

    runs = load_runs(out)
    assert runs["auc"].tolist() == [r["utility"]["final_auc"] for r in records]
    assert runs["logloss"].tolist() == [r["utility"]["final_logloss"] for r in records]


def _config(train, held, algo: str = "sgd", **kw) -> RunConfig:
    every = kw.pop("every", None)
    return RunConfig(
        algo=algo,
        workload="criteo-kaggle",
        table_size="2MB",
        placement="cpu",
        batch_size=BATCH,
        iterations=kw.pop("iterations", 20),
        warmup=kw.pop("warmup", 0),
        lr=LRSchedule(0.05),
        privacy=PrivacyConfig(noise_multiplier=1.0, clip_norm=1.0),
        data=DataConfig((str(train),)),
        evaluation=EvalConfig((str(held),), every=every, lines=EVAL_LINES),
        **kw,
    )


def _brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a click > score of a non-click), ties half: over every pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def test_metrics_equal_a_brute_force_computation_on_the_same_logits(files):
    train, held = files
    plan = trainer.plan_run(_config(train, held, "dpsgd-f"))
    session = trainer.build_session(plan)
    timer = trainer.StageTimer("sync_wall", breakdown=False)
    for t in range(20):
        session.step(t, timer)
    session.source.close()
    evaluator = trainer._evaluator(plan, session)
    point = evaluator.evaluate(session.model, 20)
    logits = evaluator.logits(session.model).numpy()
    labels = plan.heldout.labels.astype(np.float64)
    assert len(logits) == EVAL_LINES and len(np.unique(logits)) > EVAL_LINES // 2
    assert point["auc"] == pytest.approx(_brute_auc(logits, labels), abs=1e-6)
    logloss = np.mean(np.logaddexp(0.0, logits) - labels * logits)  # -log sigmoid(+-z)
    assert point["logloss"] == pytest.approx(logloss, rel=1e-12)
    # the held-out lines become rows and features exactly as training lines do
    source = CriteoBatchSource(
        scan(DataConfig((str(held),)), need_lines=None),
        plan.workload.rows,
        batch_size=1000,
        table_device=torch.device("cpu"),
        mlp_device=torch.device("cpu"),
        dtype=torch.float32,
    )
    first = source.advance()
    source.close()
    torch.testing.assert_close(evaluator.batches[0].rows[:1000], first.rows)
    torch.testing.assert_close(evaluator.batches[0].dense[:1000], first.dense)


def test_evaluation_stays_out_of_timed_steps_and_energy_window(files, monkeypatch):
    """Every evaluation runs with no step open in the timer, and the intermediate ones
    with the energy meter (and host-CPU window) paused; the meter's window then leaves a
    paused span out."""
    train, held = files
    seen: list[tuple[bool, bool]] = []  # (a timed step is open, the meter is paused)
    state = {"open": False, "paused": False}

    class Timer(trainer.StageTimer):
        def begin_step(self):
            state["open"] = self.enabled
            super().begin_step()

        def end_step(self):
            super().end_step()
            state["open"] = False

    class Meter(trainer.EnergyMeter):
        def pause(self):
            super().pause()
            state["paused"] = True

        def resume(self):
            super().resume()
            state["paused"] = False

    evaluate = Evaluator.evaluate

    def watched(self, model, step):
        seen.append((state["open"], state["paused"]))
        return evaluate(self, model, step)

    monkeypatch.setattr(trainer, "StageTimer", Timer)
    monkeypatch.setattr(trainer, "EnergyMeter", Meter)
    monkeypatch.setattr(Evaluator, "evaluate", watched)
    config = _config(train, held, "lazydp", every=2, iterations=6, warmup=1)
    record = trainer.execute(trainer.plan_run(config))
    assert record["status"] == "ok", record.get("traceback")
    assert record["utility"]["steps"] == [3, 5, 7]  # after measured steps 2 and 4, the end
    assert seen == [(False, True), (False, True), (False, False)]  # the end: after timing

    meter = trainer.EnergyMeter(use_gpu=False)
    meter.begin()
    meter.pause()
    time.sleep(0.3)
    meter.resume()
    assert meter.end(1, 1).window_s < 0.2


def test_without_torchmetrics_the_error_names_the_extra(files, monkeypatch):
    train, held = files
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # import fails
    with pytest.raises(BenchError, match=r'pip install -e "\.\[utility\]"'):
        trainer.plan_run(_config(train, held))
    data = scan(DataConfig((str(train),)), need_lines=BATCH)
    with pytest.raises(BenchError, match="needs torchmetrics"):
        load_heldout(EvalConfig((str(held),)), data)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--eval-every", "5"), "--eval-every applies to --eval-data criteo:PATH"),
        (("--eval-data", "criteo:{held}"), "--eval-data evaluates a --data criteo:PATH run"),
        (("{data}", "--eval-data", "criteo:{train}"), "is also training data"),
        (("{data}", "--eval-data", "criteo:{held}", "--eval-every", "0"), "must be positive"),
    ],
)
def test_bad_options_are_one_line_exit_2(files, tmp_path, args, message):
    train, held = files
    values = {"train": train, "held": held}
    expanded: list[str] = []
    for a in args:
        expanded += ["--data", f"criteo:{train}"] if a == "{data}" else [a.format(**values)]
    out = tmp_path / "never"
    res = cli(*RUN, "--algo", "sgd,lazydp", "--iterations", "2", *expanded, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and message in " ".join(res.stderr.split())
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "every", "lines", "message"),
    [
        (None, None, 5, "--eval-lines applies to --eval-data criteo:PATH"),
        ("held.txt", None, None, "--eval-data takes criteo:PATH"),
        ("criteo:", None, None, "--eval-data criteo: needs one or more paths"),
        ("criteo:held.txt", None, -1, "--eval-lines must be positive, got -1"),
        ("criteo:{train}.nope", None, None, "does not exist"),
    ],
)
def test_bad_eval_options_are_refused(files, spec, every, lines, message):
    """The rest of the option checks, in-process (the CLI shows any of them as above)."""
    train, _ = files
    data = DataConfig((str(train),))
    with pytest.raises(BenchError, match=message):
        ev = EvalConfig.parse(
            spec and spec.format(train=train), every=every, lines=lines, data=data
        )
        load_heldout(ev, scan(data, need_lines=BATCH))


def test_the_utility_figure_draws_one_line_per_run():
    from lazydp_bench.report.figures import make_figure

    def record(algo: str, seed: int, auc: list[float]) -> dict:
        utility = {"steps": [10, 20], "auc": auc, "logloss": [0.6, 0.55]}
        config = {"algo": algo, "seed": seed, "workload": "criteo-kaggle", "batch_size": 128}
        return {"kind": "run", "status": "ok", "run_id": f"{algo}{seed}", "config": config,
                "utility": utility}  # fmt: skip

    records = [record("sgd", 0, [0.6, 0.65]), record("lazydp", 0, [0.6, 0.64])]
    records += [record("lazydp", 1, [0.59, 0.63]), {"kind": "run", "status": "ok"}]
    res = make_figure("utility", records)
    assert res.figure is not None and not res.notes
    assert len(res.data) == 6 and res.data["run_id"].nunique() == 3
    assert res.data[res.data["run_id"] == "lazydp1"]["auc"].tolist() == [0.59, 0.63]
    assert len(res.figure.axes[0].lines) == 3 + 1  # a line per run, and AUC 0.5
    empty = make_figure("utility", records[-1:])
    assert empty.figure is None and "no runs with --eval-data" in empty.notes[0]
