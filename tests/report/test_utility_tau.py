"""The utility figure draws each threshold of DP-AdaFEST as its own series: one colour
shade and marker per tau, in the legend and on every line of its runs."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.colors import to_hex

from lazydp_bench.report.figures import algo_color, make_figure

TAUS = (4.0, 1.0, -1.0)


def _record(algo: str, seed: int, auc: float, *, tau: float | None = None) -> dict:
    config = {"algo": algo, "seed": seed, "workload": "criteo-kaggle", "lr": 4.0}
    privacy = {"private": algo != "sgd", "noise_multiplier": 0.9, "epsilon": 1.0}
    if tau is not None:
        config["sparsity"] = {"tau": tau, "c1": 1.0}
    utility = {"steps": [100, 200], "auc": [auc - 0.01, auc], "logloss": [0.7, 0.6]}
    run_id = f"{algo}-{tau}-{seed}"
    return {"kind": "run", "status": "ok", "run_id": run_id, "config": config,
            "privacy": privacy, "utility": utility}  # fmt: skip


def test_each_tau_is_a_series_with_its_own_shade_and_marker():
    records = [_record("sgd", 0, 0.67), _record("dpsgd-f", 0, 0.66)]
    records += [_record("dp-adafest", s, 0.6 + t / 100, tau=t) for t in TAUS for s in (0, 1)]
    res = make_figure("utility", records)
    assert res.figure is not None and not res.notes
    data = res.data
    assert set(data["series"]) == {"sgd", "dpsgd-f"} | {f"dp-adafest[tau {t:g}]" for t in TAUS}
    for tau in TAUS:  # both seeds of a tau, and only they, form its series
        runs = data[data["series"] == f"dp-adafest[tau {tau:g}]"]
        assert runs["run_id"].nunique() == 2 and set(runs["tau"]) == {tau}
    legend = res.figure.legends[0]
    ada = [t.get_text() for t in legend.get_texts() if t.get_text().startswith("DP-AdaFEST")]
    assert ada == [f"DP-AdaFEST (not DP-SGD-eq.) [tau {t:g}]" for t in TAUS]  # high tau first
    texts = [t.get_text() for t in legend.get_texts()]
    styles = dict(zip(texts, legend.legend_handles, strict=True))
    colors = {label: to_hex(h.get_color()) for label, h in styles.items()}
    markers = {label: h.get_marker() for label, h in styles.items()}
    assert len({colors[a] for a in ada}) == 3 and len({markers[a] for a in ada}) == 3
    assert colors["DP-SGD(F)"] == to_hex(algo_color("dpsgd-f"))  # a lone series keeps its colour
    assert to_hex(algo_color("dp-adafest")) not in {colors[a] for a in ada[:1]}  # shaded
    lines = res.figure.axes[0].lines[:-1]  # the last is AUC 0.5
    assert len(lines) == len(records)
    by_run = dict(zip(data.drop_duplicates("run_id")["run_id"], lines, strict=True))
    for tau, label in zip(TAUS, ada, strict=True):
        for seed in (0, 1):
            line = by_run[f"dp-adafest-{tau}-{seed}"]
            assert to_hex(line.get_color()) == colors[label]
            assert line.get_marker() == markers[label]
    plt.close(res.figure)


def test_runs_without_a_threshold_keep_their_algorithm_colour():
    res = make_figure("utility", [_record("lazydp", 0, 0.66), _record("eana", 1, 0.65)])
    lines = res.figure.axes[0].lines[:-1]
    want = [to_hex(algo_color(a)) for a in ("lazydp", "eana")]
    assert [to_hex(x.get_color()) for x in lines] == want
    assert list(res.data["series"].unique()) == ["lazydp", "eana"]
    plt.close(res.figure)
