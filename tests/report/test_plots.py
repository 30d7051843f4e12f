"""Figures from stored records: each renders, bar groups as expected, missing points are
drawn and noted, numbers behind a figure equal the records' medians, and a real tiny sweep
plots. (test_figure_points.py checks point selection, pooling and commits on records built
in code.)"""

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from lazydp_bench.records.store import load_records
from lazydp_bench.report.figures import ALL_FIGURES, make_figure
from tests.conftest import ROOT, cli

FIXTURE = ROOT / "tests" / "data" / "h100_records.jsonl"


@pytest.fixture(scope="module")
def records():
    return load_records([FIXTURE])


def _bars(ax):
    return [p for p in ax.patches if p.get_height() > 0]


@pytest.mark.parametrize(
    ("name", "panels", "groups"),
    [
        ("fig3", 2, [2, 1]),  # gpu: 96MB, 9.6GB; hybrid: 960MB
        ("fig5", 2, [2, 1]),
        ("fig10", 2, [1, 1]),  # batch 2048 at the largest size of each panel
        ("fig11", 2, [1, 1]),
        ("fig13a", 2, [2, 1]),
        ("fig14", 2, [1, 1]),
        ("noise-roofline", 1, [2]),
    ],
)
def test_each_figure_renders_with_expected_groups(records, tmp_path, name, panels, groups):
    res = make_figure(name, records)
    assert res.figure is not None
    axes = [ax for ax in res.figure.axes if ax.get_title() or ax.patches]
    assert len(axes) == panels
    assert [len(ax.get_xticks()) for ax in axes] == groups
    assert all(_bars(ax) for ax in axes)
    path = tmp_path / f"{name}.png"
    res.figure.savefig(path)
    plt.close(res.figure)
    assert path.stat().st_size > 10_000


def test_figures_with_nothing_to_draw_are_skipped_with_a_reason(records):
    for name in ("fig13b", "fig13c", "fig13d", "fig5-torch"):
        res = make_figure(name, records)
        assert res.figure is None and res.notes


def test_missing_points_are_drawn_and_noted(records):
    partial = [
        r
        for r in records
        if not (r["config"]["algo"] == "lazydp" and r["config"].get("table_size") == "9.6GB")
    ]
    res = make_figure("fig13a", partial)
    assert res.figure is not None
    plt.close(res.figure)
    assert any("lazydp at 9.6 GB: not run" in n for n in res.notes)
    missing = res.data[(res.data["algo"] == "lazydp") & (res.data["table_bytes"] == 9.6e9)]
    assert missing[["status", "reason"]].values.tolist() == [["not run", "not run"]]


def test_csv_numbers_equal_record_medians(records):
    res = make_figure("fig13a", records)
    plt.close(res.figure)
    medians = {
        (r["config"]["placement"], r["config"]["table_bytes"], r["config"]["algo"]): r["timing"][
            "step_median_ms"
        ]
        for r in records
        if r.get("kind") == "run"
    }
    ok = res.data[res.data["status"] == "ok"]
    assert len(ok) == 9  # sgd, dpsgd-f, lazydp x (96MB, 9.6GB gpu; 960MB hybrid)
    for row in ok.itertuples():
        placement = row.panel.split(" · ")[-1]
        assert row.value == medians[(placement, row.table_bytes, row.algo)]


def test_runs_from_two_machines_are_not_mixed(records):
    other = json.loads(json.dumps([r for r in records if r.get("kind") == "run"]))
    for r in other:
        r["env"]["gpu_name"] = "NVIDIA H200"
        r["created_utc"] = "2026-11-24T00:00:00+00:00"
    res = make_figure("fig13a", records + other)
    titles = sorted(ax.get_title() for ax in res.figure.axes if ax.get_title())
    assert titles == [
        "NVIDIA H100 80GB HBM3 · gpu",
        "NVIDIA H100 80GB HBM3 · hybrid",
        "NVIDIA H200 · gpu",
        "NVIDIA H200 · hybrid",
    ]
    plt.close(res.figure)


def test_plot_cli_end_to_end_from_a_real_tiny_sweep(tmp_path):
    runs, figs = tmp_path / "runs", tmp_path / "figs"
    res = cli(
        "sweep",
        "--workload",
        "tiny",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--noise-multiplier",
        "1",
        "--algo",
        "sgd,dpsgd-f,lazydp",
        "--table-size",
        "full,x3",
        "--out",
        str(runs),
    )
    assert res.returncode == 0, res.stderr
    out = cli(
        "plot", str(runs), "--figure", "fig3,fig13a,fig10", "--out", str(figs), "--format", "png"
    )
    assert out.returncode == 0, out.stderr
    for name in ("fig3", "fig13a", "fig10"):
        assert (figs / f"{name}.png").stat().st_size > 10_000
        table = pd.read_csv(figs / f"{name}.csv")
        assert len(table) > 0
    csv = pd.read_csv(figs / "fig13a.csv")
    recs = [json.loads(x) for x in (runs / "runs.jsonl").read_text().splitlines()]
    want = {
        (r["config"]["algo"], r["config"]["table_bytes"]): r["timing"]["step_median_ms"]
        for r in recs
    }
    for row in csv.itertuples():
        assert row.value == pytest.approx(want[(row.algo, row.table_bytes)], rel=1e-12)
    bad = cli("plot", str(runs), "--figure", "fig99", "--out", str(figs))
    assert bad.returncode == 2 and "unknown figure" in bad.stderr


def test_all_figures_listed():
    assert ALL_FIGURES == [
        "fig3",
        "fig5",
        "fig5-torch",
        "fig10",
        "fig11",
        "fig12",
        "fig13a",
        "fig13b",
        "fig13c",
        "fig13d",
        "sparse-step",
        "sparse-grad",
        "fig14",
        "noise-roofline",
        "utility",
    ]


def _variant(rec: dict, **changes) -> dict:
    """A copy of a record with config/timing fields changed (a newer run of another mode)."""
    out = json.loads(json.dumps(rec))
    for key, value in changes.items():
        part, field = key.split("__")
        out[part][field] = value
    out["created_utc"] = "2026-11-20T00:00:00+00:00"  # OLDER than the fixture's records
    return out


def test_step_figures_prefer_graph_replays_even_when_older(records):
    """Where every algorithm of a point has a graph replay (bars side by side share a
    timing mode), it is drawn before a newer eager run."""
    base = [r for r in records if r.get("kind") == "run"]
    sgd = next(r for r in base if r["config"]["algo"] == "sgd")
    eager = _variant(sgd, config__breakdown=False, timing__step_median_ms=111.0)
    eager["created_utc"] = "2026-11-30T00:00:00+00:00"  # newest
    point = ("placement", "table_bytes", "batch_size", "pooling")
    graphs = [
        _variant(r, config__breakdown=False, timing__cuda_graph=True)
        for r in base
        if all(r["config"][k] == sgd["config"][k] for k in point) and r["status"] == "ok"
    ]
    for g in graphs:
        if g["config"]["algo"] == "sgd":
            g["timing"]["step_median_ms"] = 0.5
    res = make_figure("fig13a", [*records, eager, *graphs])
    plt.close(res.figure)
    placement, size = sgd["config"]["placement"], sgd["config"]["table_bytes"]
    rows = res.data[(res.data["algo"] == "sgd") & (res.data["table_bytes"] == size)]
    rows = rows[rows["panel"].str.endswith(placement)]
    assert rows["value"].tolist() == [0.5]


def test_sensitivity_figure_uses_the_size_whose_runs_vary_the_axis(records):
    base = [r for r in records if r.get("kind") == "run" and r["config"]["placement"] == "gpu"]
    small = min(r["config"]["table_bytes"] for r in base)
    extra = [
        _variant(r, config__pooling=10, timing__step_median_ms=r["timing"]["step_median_ms"] * 2)
        for r in base
        if r["config"]["table_bytes"] == small
    ]
    res = make_figure("fig13b", [*records, *extra])
    assert res.figure is not None
    plt.close(res.figure)
    gpu = res.data[res.data["panel"].str.endswith("gpu")]
    assert sorted(gpu["pooling"].unique()) == [1, 10]


def test_torch_engine_runs_only_feed_fig5_torch(records):
    """A newer --noise-impl torch run of a point must not replace the fused-engine run in
    the comparison figures; fig5-torch draws it (and only it)."""
    base = [r for r in records if r.get("kind") == "run"]
    dp = next(r for r in base if r["config"]["algo"] == "dpsgd-f")
    torch_run = _variant(dp, config__noise_impl="torch", timing__step_median_ms=999.0)
    torch_run["created_utc"] = "2026-11-30T00:00:00+00:00"  # newest
    size, placement = dp["config"]["table_bytes"], dp["config"]["placement"]

    def values(name):
        res = make_figure(name, [*records, torch_run])
        plt.close(res.figure)
        rows = res.data[(res.data["algo"] == "dpsgd-f") & (res.data["table_bytes"] == size)]
        return rows[rows["panel"].str.endswith(placement)]

    assert values("fig13a")["value"].tolist() == [dp["timing"]["step_median_ms"]]
    assert not values("fig5-torch").empty  # with the fixture alone it has nothing to draw


def test_energy_figure_skips_runs_too_short_for_the_counter(records):
    """A newer graph replay without energy (window under the NVML update period) must not
    blank the point: fig12 takes the run that measured energy."""
    base = [r for r in records if r.get("kind") == "run"]
    before = make_figure("fig12", records)
    plt.close(before.figure)
    short = []
    for r in base:
        v = _variant(r, config__breakdown=False, timing__cuda_graph=True)
        v["energy"]["gpu_j_per_step"] = None
        v["created_utc"] = "2026-11-30T00:00:00+00:00"
        short.append(v)
    after = make_figure("fig12", [*records, *short])
    plt.close(after.figure)
    assert not before.data.empty
    assert after.data["value"].equals(before.data["value"])  # NaN: host energy not recorded


def test_figure_styles_come_from_the_registry(monkeypatch):
    """A newly registered algorithm gets its order, label and colour in every figure; an
    unregistered name or a clipping variant still gets a bar, a label and a stable colour."""
    from lazydp_bench.algorithms import ALGORITHMS, Algorithm
    from lazydp_bench.report import figures

    class Toy(Algorithm):
        name = "toy"
        label = "Toy DP"
        color = "#123456"
        plot_order = 1

    monkeypatch.setitem(ALGORITHMS, "toy", Toy)
    order, labels, colors = figures.algo_styles()
    assert order.index("sgd") < order.index("toy") < order.index("lazydp")
    assert labels["toy"] == "Toy DP" and colors["toy"] == "#123456"
    assert figures.algo_label("lazydp[bookkeeping]") == "LazyDP [bookkeeping]"
    assert figures.algo_color("new-algo") == figures.algo_color("new-algo")
    assert figures.algo_color("new-algo") in figures.SPARE_COLORS
    frame = pd.DataFrame({"algo": ["lazydp", "sgd", "lazydp[bookkeeping]", "zeta"]})
    assert figures._algos(frame, None) == ["sgd", "lazydp", "lazydp[bookkeeping]", "zeta"]


def test_noise_roofline_draws_the_hybrid_bound(records):
    """A hybrid bench gets its own panel whose line is the PCIe / host-add / draw bound
    (GB/s of table read + written), not the copy bandwidth; the CSV carries both bounds."""
    bench = next(r for r in records if r.get("kind") == "bench_noise")
    hybrid = json.loads(json.dumps(bench))
    hybrid["config"]["placement"] = "hybrid"
    hybrid["noise"]["engine"] = "streamed (draw on cuda, add on 16 host threads)"
    table = hybrid["config"]["table_bytes"]
    hybrid["bench"]["hybrid"] = {"bound_ms": 2000.0, "bound_unshared_ms": 1500.0}
    res = make_figure("noise-roofline", [bench, hybrid])
    assert len([ax for ax in res.figure.axes if ax.patches]) == 2
    row = res.data[res.data["placement"] == "hybrid"].iloc[0]
    assert row["bound_gbps"] == pytest.approx(2 * table / 2.0 / 1e9)
    assert row["unshared_bound_gbps"] == pytest.approx(2 * table / 1.5 / 1e9)
    plt.close(res.figure)


def test_sparse_grad_figure_draws_each_algorithms_share_of_rows_written(records):
    """DP-SGD(F) writes every row (1.0); DP-AdaFEST its selected share, from the record's
    `sparsity` section; LazyDP is not drawn (its writes are not counted)."""
    dense = next(r for r in records if r.get("kind") == "run" and r["config"]["algo"] == "dpsgd-f")
    sparse = json.loads(json.dumps(dense))
    sparse["run_id"] = "adafest-variant"
    sparse["config"]["algo"] = "dp-adafest"
    sparse["sparsity"] = {"grad_size_fraction": 0.0125}
    others = [r for r in records if r is not dense and r.get("kind") == "run"]
    res = make_figure("sparse-grad", [dense, sparse, *others])
    data = res.data[res.data["status"] == "ok"]
    here = data[data["table_bytes"] == dense["config"]["table_bytes"]]
    assert dict(zip(here["algo"], here["value"], strict=True)) == {
        "dpsgd-f": 1.0,
        "dp-adafest": 0.0125,
    }
    assert "lazydp" not in set(res.data["algo"])
    plt.close(res.figure)
