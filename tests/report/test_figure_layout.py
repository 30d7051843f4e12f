"""Figures that read at a glance: each panel's y scale follows the span of its bars, a
stacked bar sums to its whole, and no legend, label or title covers a bar or another
text (checked on the rendered figure's boxes)."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Annotation

from lazydp_bench.records.store import load_records
from lazydp_bench.report.figures import LOG_SPAN, make_figure, y_scale
from tests.report.test_figure_points import GB9_6, MB96, run
from tests.report.test_plots import FIXTURE


@pytest.fixture(scope="module")
def records():
    return load_records([FIXTURE])


def _step_records(name: str, low: float, high: float) -> list[dict]:
    """Bars from `low` to `high` ms in one panel of `name`."""
    if name == "fig14":
        return [run("eana", [low]), run("lazydp", [high])]
    ms = {"sgd": low, "dpsgd-f": high, "lazydp": low * 1.1}
    if name == "fig11":  # a stack's height is its model update
        parts = {
            "sgd": "grad_coalesce",
            "dpsgd-f": "noisy_update_fused",
            "lazydp": "noise_sampling",
        }
        return [
            run(algo, [ms[algo] + 1], stages={"model_update": ms[algo], part: ms[algo]})
            for algo, part in parts.items()
        ]
    sizes = (MB96, GB9_6) if name == "fig13a" else (GB9_6,)
    return [run(a, [v], table_bytes=size) for a, v in ms.items() for size in sizes]


def _axes(res) -> list:
    return [ax for ax in res.figure.axes if ax.patches]


def _scales(name: str, low: float, high: float) -> list[tuple[str, str]]:
    res = make_figure(name, _step_records(name, low, high))
    out = [(ax.get_yscale(), ax.get_ylabel()) for ax in _axes(res)]
    plt.close(res.figure)
    return out


def test_scale_rule():
    assert y_scale([1.0, 300.0]) == "log"
    assert y_scale([88.0, 320.0]) == "linear"  # 3.6x
    assert y_scale([1.0, LOG_SPAN]) == "linear"
    assert y_scale([1.0, LOG_SPAN * 1.01, 0.0, float("nan")]) == "log"
    assert y_scale([5.0]) == y_scale([]) == "linear"


@pytest.mark.parametrize("name", ["fig10", "fig11", "fig13a", "fig14"])
def test_each_bar_figure_takes_its_scale_from_the_span_of_its_bars(name):
    """A 300x span on a linear axis hides the small bars; a 3.6x span on a log axis makes
    the smallest bar look several times smaller than it is."""
    wide = _scales(name, 1.0, 300.0)
    assert [scale for scale, _ in wide] == ["log"]
    assert "log scale" in wide[0][1]
    narrow = _scales(name, 88.0, 320.0)
    assert [scale for scale, _ in narrow] == ["linear"]
    assert "log" not in narrow[0][1]


def test_panels_side_by_side_share_the_scale_kind_and_one_legend():
    """A gpu panel spanning 300x is log; the hybrid panel beside it (1.2x alone) is log
    too, so the two read alike; their legends are the same, so it stands once, right of
    the last panel."""
    records = [
        run(algo, [ms], table_bytes=GB9_6, placement=placement)
        for placement, values in (("gpu", (1.0, 300.0, 1.1)), ("hybrid", (100.0, 120.0, 110.0)))
        for algo, ms in zip(("sgd", "dpsgd-f", "lazydp"), values, strict=True)
    ]
    res = make_figure("fig10", records)
    axes = _axes(res)
    assert [ax.get_title().rsplit(" · ", 1)[-1] for ax in axes] == ["gpu", "hybrid"]
    assert [ax.get_yscale() for ax in axes] == ["log", "log"]
    assert [ax.get_legend() is not None for ax in axes] == [False, True]
    plt.close(res.figure)
    alone = make_figure("fig10", records[3:])
    assert [ax.get_yscale() for ax in _axes(alone)] == ["linear"]
    plt.close(alone.figure)


def test_fig3_stacks_sum_to_the_step_time_normalized_to_sgd(records):
    """The data and `other` stages were dropped, so SGD's stack summed to ~0.87."""
    res = make_figure("fig3", records, allow_mixed_commits=True)  # hybrid SGD: older commit
    plt.close(res.figure)
    ok = res.data[res.data["status"] == "ok"]
    totals = ok.groupby(["panel", "table_bytes", "algo"])["value"].sum()
    steps = ok.groupby(["panel", "table_bytes", "algo"])["step_median_ms"].first()
    sgd = totals.xs("sgd", level="algo")
    assert len(sgd) == 3
    assert all(abs(total - 1.0) < 1e-9 for total in sgd)
    for (panel, size, algo), total in totals.items():
        want = steps[(panel, size, algo)] / steps[(panel, size, "sgd")]
        assert total == pytest.approx(want, rel=1e-9), (panel, size, algo)
    assert (ok[ok["stage"] == "rest_of_step"]["value"] >= 0).all()


@pytest.mark.parametrize("name", ["fig5", "fig11"])
def test_update_stacks_sum_to_the_model_update(records, name):
    """The update's children leave part of it out (syncs, small ops): the stack carries
    that part, so it stands as tall as the model update stage."""
    update = {  # the fixture has one run per point, each its own step median
        r["timing"]["step_median_ms"]: s["median_ms"]
        for r in records
        for s in r.get("stages") or []
        if s["name"] == "model_update"
    }
    res = make_figure(name, records)
    plt.close(res.figure)
    ok = res.data[res.data["status"] == "ok"]
    assert len(ok) > 0
    for step, stack in ok.groupby("step_median_ms"):
        assert stack["value"].sum() == pytest.approx(update[step], rel=1e-9)
    assert (ok[ok["stage"] == "rest_of_update"]["value"] >= 0).all()


def _level_records(name: str) -> list[dict]:
    """Tall bars filling the panel, so no place inside it is free of bars (fig10: one
    short bar, which a log axis would otherwise leave free room above)."""
    if name == "fig11":
        return _step_records(name, 10.0, 11.0)
    return [
        run(algo, [1.0 if (algo, batch) == ("lazydp", 1024) else 100.0 + i], batch=batch)
        for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp"))
        for batch in (1024, 2048)
    ]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("name", ["fig10", "fig11"])
def test_no_legend_covers_a_bar(records, name):
    for recs in (_level_records(name), records):
        res = make_figure(name, recs)
        fig = res.figure
        fig.canvas.draw()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        bars = [p for ax in fig.axes for p in ax.patches if p.get_height() > 0]
        assert legends and bars
        for legend, bar in itertools.product(legends, bars):
            assert not _overlaps(legend.get_window_extent(), bar.get_window_extent())
        plt.close(fig)


def test_fig11_titles_do_not_overlap_any_label(records):
    """The labels standing on the tallest bars ran into the panel's title."""
    for recs in (_level_records("fig11"), records):
        res = make_figure("fig11", recs)
        fig = res.figure
        fig.canvas.draw()
        titles = [fig._suptitle, *(ax.title for ax in fig.axes)]
        labels = [t for ax in fig.axes for t in ax.texts if t.get_text()]
        assert any(isinstance(t, Annotation) for t in labels)
        for title, label in itertools.product(titles, labels):
            assert not _overlaps(title.get_window_extent(), label.get_window_extent()), (
                title.get_text(),
                label.get_text(),
            )
        plt.close(fig)


def test_crowded_x_tick_labels_do_not_overlap():
    dists = [f"zipf:0.{n:02d}5" for n in range(10, 100, 9)]
    records = [
        run(algo, [1.0 + i], distribution=d)
        for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp"))
        for d in dists
    ]
    res = make_figure("fig13d", records)
    fig = res.figure
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(boxes) == len(dists)
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlaps(a, b)
    plt.close(fig)
