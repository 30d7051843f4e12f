"""Figures as a reader sees them: fig. 13(a) draws each (algorithm, GPU count) as its own
series while every other figure draws one GPU and says what it left out; a missing point
is a short labelled stub with a legend entry; a log axis spanning few decades is readable
between powers of ten; speedup labels are explained; the noise roofline orders its bars
by size and colours them by engine."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex

from lazydp_bench.records.store import load_records
from lazydp_bench.report.figures import (
    MISSING_HEIGHT,
    MISSING_LABEL,
    SPEEDUP_NOTE,
    algo_color,
    algo_label,
    make_figure,
    scale_y,
    split_series,
)
from tests.report.test_figure_points import GB9_6, GB96, MB96, failed, run
from tests.report.test_plots import FIXTURE

ONE = {"sgd": 2.0, "dpsgd-f": 40.0, "lazydp": 2.5}  # ms per step on one GPU
TWO = {"sgd": 3.0, "dpsgd-f": 21.0, "lazydp": 3.5}  # on two


def _runs(ms: dict[str, float], gpus: int, sizes=(MB96, GB9_6), **kw) -> list[dict]:
    extra = {"gpus": gpus} if gpus > 1 else {}
    return [
        run(a, [v, v, v], table_bytes=size, **extra, **kw) for a, v in ms.items() for size in sizes
    ]


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _figure(name: str, records: list[dict]):
    res = make_figure(name, records)
    assert res.figure is not None, res.notes
    return res


def test_fig13a_draws_each_gpu_count_as_its_own_series():
    records = _runs(ONE, 1) + _runs(TWO, 2)
    res = _figure("fig13a", records)
    ax = next(a for a in res.figure.axes if a.patches)
    values = {(r.algo, r.table_bytes): r.value for r in res.data.itertuples()}
    speedups = {t.get_text() for t in ax.texts}
    legend = _legend_texts(ax)
    plt.close(res.figure)
    for algo in ONE:
        for size in (MB96, GB9_6):
            assert values[(algo, size)] == pytest.approx(ONE[algo])
            assert values[(f"{algo}@2", size)] == pytest.approx(TWO[algo])
    assert {"SGD", "LazyDP", "SGD, 2 GPUs", "LazyDP, 2 GPUs"} <= set(legend)
    assert any(t.startswith("DP-SGD(F)") and t.endswith(", 2 GPUs") for t in legend)
    # each series' speedup is DP-SGD(F) / LazyDP on its own GPU count
    assert {f"{40 / 2.5:.1f}x", f"{21 / 3.5:.1f}x"} <= speedups


def test_fig13a_one_gpu_series_is_unchanged_by_two_gpu_runs():
    alone = _figure("fig13a", _runs(ONE, 1))
    both = _figure("fig13a", _runs(ONE, 1) + _runs(TWO, 2))
    plt.close(alone.figure)
    plt.close(both.figure)
    one = both.data[~both.data["algo"].str.contains("@")].reset_index(drop=True)
    assert one["value"].tolist() == alone.data["value"].tolist()
    assert one["algo"].tolist() == alone.data["algo"].tolist()


def test_a_panel_without_several_gpu_runs_gets_no_empty_two_gpu_slots():
    records = _runs(ONE, 1) + _runs(TWO, 2) + _runs(ONE, 1, placement="hybrid")
    res = _figure("fig13a", records)
    plt.close(res.figure)
    hybrid = res.data[res.data["panel"].str.endswith("hybrid")]
    assert set(hybrid["algo"]) == set(ONE)
    assert (hybrid["status"] == "ok").all()


def test_other_figures_draw_one_gpu_and_say_what_they_left_out():
    records = _runs(ONE, 1, sizes=(GB96,)) + _runs(TWO, 2, sizes=(GB96,))
    res = _figure("fig10", records)
    ax = next(a for a in res.figure.axes if a.patches)
    caption = ax.get_xlabel().replace("\n", " ")
    plt.close(res.figure)
    assert dict(zip(res.data["algo"], res.data["value"], strict=True)) == pytest.approx(ONE)
    assert "1 GPU (runs on 2 GPUs not drawn)" in caption
    assert any("measured but left out" in n and "gpus 2" in n for n in res.notes)


def test_a_panel_of_only_two_gpu_runs_names_its_gpu_count():
    res = _figure("fig10", _runs(TWO, 2, sizes=(GB96,)))
    ax = next(a for a in res.figure.axes if a.patches)
    caption = ax.get_xlabel()
    plt.close(res.figure)
    assert "2 GPUs" in caption
    assert dict(zip(res.data["algo"], res.data["value"], strict=True)) == pytest.approx(TWO)


def test_a_one_gpu_panel_with_nothing_left_out_names_no_gpu_count():
    res = _figure("fig10", _runs(ONE, 1, sizes=(GB96,)))
    ax = next(a for a in res.figure.axes if a.patches)
    caption = ax.get_xlabel()
    plt.close(res.figure)
    assert "GPU" not in caption


def test_series_names_labels_and_colours():
    assert split_series("lazydp[bookkeeping]@2") == ("lazydp[bookkeeping]", 2)
    assert split_series("sgd") == ("sgd", 1)
    assert algo_label("lazydp@2") == "LazyDP, 2 GPUs"
    assert algo_label("lazydp[bookkeeping]@4") == "LazyDP [bookkeeping], 4 GPUs"
    lighter, base = algo_color("dpsgd-f@2"), algo_color("dpsgd-f")
    assert lighter != base
    # lightened: every channel at or above the one-GPU colour's
    assert all(int(lighter[i : i + 2], 16) >= int(base[i : i + 2], 16) for i in (1, 3, 5)), (
        lighter,
        base,
    )
    assert to_hex(lighter) == lighter


def test_a_missing_point_is_a_short_labelled_stub_with_a_legend_entry():
    records = [run(a, [v]) for a, v in (("sgd", 2.0), ("dpsgd-f", 7.0))]
    records.append(failed("lazydp", "oom"))
    res = _figure("fig10", records)
    ax = next(a for a in res.figure.axes if a.patches)
    stubs = [p for p in ax.patches if p.get_gid() == "missing"]
    texts = [t.get_text() for t in ax.texts]
    legend = _legend_texts(ax)
    plt.close(res.figure)
    assert len(stubs) == 1
    assert stubs[0].get_height() == MISSING_HEIGHT < 0.2  # axes fraction
    assert "LazyDP: OOM" in texts
    assert MISSING_LABEL in legend


def test_a_panel_with_every_point_present_has_no_missing_entry():
    res = _figure("fig10", [run(a, [v]) for a, v in ONE.items()])
    ax = next(a for a in res.figure.axes if a.patches)
    legend = _legend_texts(ax)
    plt.close(res.figure)
    assert MISSING_LABEL not in legend and len(legend) == 3


def _tick_labels(values: list[float]) -> tuple[str, list[str]]:
    fig, ax = plt.subplots()
    ax.bar(range(len(values)), values)
    scale = scale_y(ax, values, "step time (ms)")
    fig.canvas.draw()
    low, high = ax.get_ylim()
    labels = [
        t.get_text()
        for t in ax.get_yticklabels()
        if t.get_text() and low <= t.get_position()[1] <= high
    ]
    plt.close(fig)
    return scale, labels


def test_a_log_axis_of_few_decades_labels_two_and_five_in_plain_numbers():
    scale, labels = _tick_labels([2.0, 7.0, 58.0])
    assert scale == "log"
    assert {"2", "5", "10", "20", "50"} <= set(labels)
    assert not any("^" in t or "$" in t for t in labels)  # no 10^x mathtext


def test_a_log_axis_of_many_decades_labels_powers_of_ten_only():
    scale, labels = _tick_labels([0.5, 30.0, 20000.0])
    assert scale == "log"
    assert {"1", "10", "100", "1000", "10000"} <= set(labels)
    assert "20" not in labels and "5" not in labels


@pytest.mark.parametrize(
    ("name", "explained"), [("fig10", True), ("fig13a", True), ("fig14", False)]
)
def test_speedup_labels_are_explained_in_the_title(name, explained):
    records = [run(a, [v], table_bytes=s) for a, v in ONE.items() for s in (MB96, GB9_6)]
    records += [run("eana", [1.0], table_bytes=s) for s in (MB96, GB9_6)]
    res = _figure(name, records)
    title = res.figure._suptitle.get_text()
    plt.close(res.figure)
    assert (SPEEDUP_NOTE in title) is explained


def test_noise_roofline_orders_bars_by_size_and_colours_them_by_engine():
    bench = next(r for r in load_records([FIXTURE]) if r.get("kind") == "bench_noise")
    recs = []
    for i, (engine, size) in enumerate(
        [("streamed", 96), ("fused", 8), ("streamed", 8), ("fused", 96), ("streamed", 24)]
    ):
        r = json.loads(json.dumps(bench))
        r["config"]["placement"] = "hybrid"
        r["config"]["table_bytes"] = size * 10**9
        r["noise"]["engine"] = engine
        r["created_utc"] = f"2026-12-01T00:00:0{i}+00:00"
        recs.append(r)
    res = make_figure("noise-roofline", recs)
    ax = next(a for a in res.figure.axes if a.patches)
    bars = list(ax.patches)
    labels = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    footer = res.figure.texts[-1].get_text()
    plt.close(res.figure)
    assert labels == [
        "fused 8 GB",
        "streamed 8 GB",
        "streamed 24 GB",
        "fused 96 GB",
        "streamed 96 GB",
    ]
    colors = {}
    for label, bar in zip(labels, bars, strict=True):
        colors.setdefault(label.split()[0], set()).add(to_hex(bar.get_facecolor()))
    assert all(len(c) == 1 for c in colors.values()) and colors["fused"] != colors["streamed"]
    assert "commit" in footer


def test_a_segment_no_stack_has_is_named_once_in_the_legend():
    from lazydp_bench.measure.cpu_power import CPU_ESTIMATE
    from tests.report.test_energy_figure import energy_run

    none = [energy_run(a, 2.0, None, CPU_ESTIMATE) for a in ("sgd", "dpsgd-f", "lazydp")]
    res = _figure("fig12", none)
    ax = next(a for a in res.figure.axes if a.patches)
    on_bars = [t.get_text() for t in ax.texts]
    legend = _legend_texts(ax)
    plt.close(res.figure)
    assert not any("n/a" in t for t in on_bars)
    assert "host: not measured\n(no bar here has it)" in legend
    some = [*none[:2], energy_run("lazydp", 2.0, 1.0, CPU_ESTIMATE)]
    res = _figure("fig12", some)
    ax = next(a for a in res.figure.axes if a.patches)
    on_bars = [t.get_text() for t in ax.texts]
    legend = _legend_texts(ax)
    plt.close(res.figure)
    assert sum("(host n/a)" in t for t in on_bars) == 2
    assert not any("not measured" in t for t in legend)


def test_noise_roofline_names_the_memory_of_an_engine_run_in_both_and_shares_a_log_scale():
    bench = next(r for r in load_records([FIXTURE]) if r.get("kind") == "bench_noise")
    recs = []
    for i, (placement, achieved) in enumerate([("gpu", 1.5e12), ("cpu", 2e9), ("hybrid", 9e10)]):
        r = json.loads(json.dumps(bench))
        r["config"]["placement"] = placement
        r["config"]["table_bytes"] = 8 * 10**9
        r["noise"]["engine"] = "torch-chunked"
        r["bench"]["achieved_bytes_per_s"] = achieved
        r["bench"]["copy_bytes_per_s"] = 7e10 if placement == "cpu" else 3e12
        # the host's generator alone: 0.5 G samples/s = 4 GB/s of table, below its copy
        r["bench"]["arithmetic_bound_samples_per_s"] = 5e8 if placement == "cpu" else None
        r["created_utc"] = f"2026-12-01T00:00:0{i}+00:00"
        recs.append(r)
    res = make_figure("noise-roofline", recs)
    axes = [a for a in res.figure.axes if a.patches]
    labels = [[t.get_text().split("\n")[0] for t in a.get_xticklabels()] for a in axes]
    scales = {a.get_yscale() for a in axes}
    pcts = [t.get_text() for t in axes[0].texts]
    styles = [str(c.get_linestyle()) for c in axes[0].collections]
    plt.close(res.figure)
    assert labels == [["GPU · torch-chunked", "host · torch-chunked"], ["torch-chunked"]]
    assert scales == {"log"}  # the memory panel spans decades; the hybrid one follows it
    assert pcts == ["50%", "50%"]  # GPU: of its copy; host: of its generator's rate
    assert len(styles) == 3 and len(set(styles)) == 2  # two copy lines, one generator line


def test_speedup_labels_stand_upright_on_narrow_bars():
    def upright(name: str, records: list[dict]) -> set[float]:
        res = _figure(name, records)
        ax = next(a for a in res.figure.axes if a.patches)
        turns = {t.get_rotation() for t in ax.texts if t.get_text().endswith("x")}
        plt.close(res.figure)
        return turns

    three = _runs(ONE, 1)  # SGD, DP-SGD(F), LazyDP: wide slots
    peers = []
    for peer, clipping in (("opacus", "materialize"), ("opacus-ghost", "ghost")):
        for r in _runs({"sgd": 50.0}, 1):
            r["config"].update(algo=peer, clipping=clipping)
            peers.append(r)
    assert upright("fig13a", three) == {0.0}
    assert upright("fig13a", three + peers) == {90.0}


def test_a_two_gpu_series_that_replays_no_graphs_leaves_the_one_gpu_bars_in_theirs():
    eager_two = _runs(TWO, 2)
    for r in eager_two:
        r["timing"]["cuda_graph"] = False
    eager_one = _runs({a: 10 * v for a, v in ONE.items()}, 1)
    for r in eager_one:
        r["timing"]["cuda_graph"] = False
    res = _figure("fig13a", _runs(ONE, 1) + eager_one + eager_two)
    ax = next(a for a in res.figure.axes if a.patches)
    speedups = {t.get_text() for t in ax.texts}
    plt.close(res.figure)
    values = {(r.algo, r.table_bytes): r.value for r in res.data.itertuples()}
    assert values["lazydp", MB96] == ONE["lazydp"]  # the graph replay, not 25.0
    assert values["lazydp@2", MB96] == TWO["lazydp"]
    assert "16.0x" in speedups  # 40 / 2.5 on one GPU
