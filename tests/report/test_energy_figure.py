"""Fig. 12 and the run tables from records with GPU and host energy: each bar stacks the
GPU's measured energy under the host CPU's (RAPL, or estimated and hatched), the legend
says which is which, and a host energy no record has is drawn as missing, never as 0."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Rectangle
from rich.console import Console

from lazydp_bench.measure.energy import CPU_ESTIMATE
from lazydp_bench.report.figures import make_figure
from lazydp_bench.report.tables import HOST_ESTIMATE_NOTE, run_table, summary_table
from tests.report.test_figure_points import GB96, run

UNKNOWN = "host CPU 'Intel(R) Xeon(R) Processor' is not in the TDP table"


def energy_run(algo: str, gpu: float | None, host: float | None, source: str) -> dict:
    """A hybrid 96 GB run with `gpu` and `host` J per step (`source`: the host's)."""
    rec = run(algo, [10.0, 11.0, 12.0], table_bytes=GB96, placement="hybrid")
    rec["energy"] = {
        "source": "nvml" if gpu is not None else "unavailable",
        "gpu_j_per_step": gpu,
        "gpu_avg_w": 100.0 if gpu is not None else None,
        "gpu_idle_w": 60.0,
        "cpu_source": source if host is not None else "unavailable",
        "cpu_j_per_step": host,
        "cpu_tdp_w": 50.0 if source == CPU_ESTIMATE and host is not None else None,
        "cpu_tdp_source": "--cpu-tdp" if source == CPU_ESTIMATE and host is not None else None,
        "reason": None if host is not None else UNKNOWN,
    }
    return rec


def bars(ax) -> dict[tuple[float, float], Rectangle]:
    """The drawn segments by (x centre, bottom), rounded."""
    return {
        (round(p.get_x() + p.get_width() / 2, 6), round(p.get_y(), 6)): p
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_height() > 0 and p.get_fill()
    }


@pytest.fixture
def estimated():
    records = [
        energy_run("sgd", 2.0, 0.5, CPU_ESTIMATE),
        energy_run("dpsgd-f", 30.0, 120.0, CPU_ESTIMATE),
        energy_run("lazydp", 3.0, None, CPU_ESTIMATE),  # no TDP known: no host energy
    ]
    res = make_figure("fig12", records)
    yield res
    plt.close(res.figure)


def test_fig12_stacks_host_energy_on_gpu_energy(estimated):
    res = estimated
    assert res.figure is not None
    (ax,) = [a for a in res.figure.axes if a.patches]
    data = res.data.set_index(["algo", "stage"])
    assert data.loc[("sgd", "gpu"), "value"] == 2.0
    assert data.loc[("sgd", "host_cpu"), "value"] == 0.5
    assert data.loc[("dpsgd-f", "host_cpu"), "value"] == 120.0
    drawn = bars(ax)
    by_height = {round(p.get_height(), 6): (x, y) for (x, y), p in drawn.items()}
    (x_sgd, y_gpu), (x_host, y_host) = by_height[2.0], by_height[0.5]
    assert x_sgd == x_host and (y_gpu, y_host) == (0.0, 2.0)  # host on top of the GPU
    assert by_height[120.0][1] == 30.0
    hatched = [p for p in drawn.values() if p.get_hatch()]
    assert {round(p.get_height(), 6) for p in hatched} == {0.5, 120.0}  # estimates only
    labels = ax.get_legend().get_texts()
    assert {t.get_text() for t in labels} == {
        "GPU (NVML, measured)",
        "host CPU (TDP x utilisation, estimated)",
    }
    assert ax.get_ylabel().startswith("energy per step (J")


def test_fig12_shows_missing_host_energy_as_missing(estimated):
    res = estimated
    (ax,) = [a for a in res.figure.axes if a.patches]
    row = res.data.set_index(["algo", "stage"]).loc[("lazydp", "host_cpu")]
    assert math.isnan(row["value"]) and row["status"] == "no data"
    assert UNKNOWN in row["reason"]
    lazydp_x = next(x for (x, y), p in bars(ax).items() if round(p.get_height(), 6) == 3.0)
    assert [y for (x, y) in bars(ax) if x == lazydp_x] == [0.0]  # the GPU's bar alone
    assert any("(host n/a)" in t.get_text() for t in ax.texts)
    assert any("lazydp" in n and "missing, not 0" in n for n in res.notes)


def test_fig12_names_rapl_as_a_reading():
    records = [energy_run(a, 2.0, 1.0, "rapl") for a in ("sgd", "dpsgd-f", "lazydp")]
    res = make_figure("fig12", records)
    (ax,) = [a for a in res.figure.axes if a.patches]
    plt.close(res.figure)
    assert "host CPU (RAPL)" in {t.get_text() for t in ax.get_legend().get_texts()}
    assert not any(p.get_hatch() for p in bars(ax).values())


def render(renderable, width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_run_tables_show_host_energy_and_say_it_is_estimated():
    records = [
        energy_run("sgd", 2.0, 0.5, CPU_ESTIMATE),
        energy_run("lazydp", 3.0, None, CPU_ESTIMATE),
    ]
    for r in records:
        r["timing"]["measured_iters"] = 3
    text = render(summary_table(records))
    assert "host J" in text and "~0.500" in text
    assert " ".join(HOST_ESTIMATE_NOTE.split()) in " ".join(text.split())
    assert all(len(line) <= 80 for line in text.splitlines())
    facts = " ".join(render(run_table(records[0])).split())
    assert "host CPU J/step 0.500 (estimated: 50.0 W x utilisation, --cpu-tdp)" in facts
    missing = " ".join(render(run_table(records[1])).split())
    assert "host CPU energy n/a: " + UNKNOWN in missing
    rapl = render(summary_table([energy_run("sgd", 2.0, 0.5, "rapl")]))
    assert "0.500" in rapl and "~" not in rapl


def test_fig12_prefers_a_long_energy_window_and_marks_a_short_one():
    from lazydp_bench.report.figures import SHORT_WINDOW

    warning = "energy window 0.20 s is under ~10 NVML counter updates"
    short_sgd = energy_run("sgd", 9.0, 0.5, CPU_ESTIMATE)
    short_sgd["energy"]["warning"] = warning
    short_lazydp = energy_run("lazydp", 3.0, 0.5, CPU_ESTIMATE)
    short_lazydp["energy"]["warning"] = warning
    records = [short_sgd, energy_run("sgd", 2.0, 0.5, CPU_ESTIMATE), short_lazydp]
    res = make_figure("fig12", records)
    ax = res.figure.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(res.figure)
    gpu = res.data[res.data["stage"] == "gpu"].set_index("algo")["value"]
    assert gpu["sgd"] == 2.0  # the long window, not pooled with the short one
    assert any(SHORT_WINDOW in t and t.startswith("GPU") for t in legend)
    assert sum(SHORT_WINDOW in n for n in res.notes) == 1 and "lazydp" in " ".join(res.notes)


def test_fig12_reads_the_mode_whose_runs_have_the_better_energy():
    """A short-window graph replay and a long-window eager run of every algorithm: the
    eager runs, whose energy is reliable, are drawn (the step-time preference for graph
    replays does not override the energy ranking)."""
    records = []
    for algo in ("sgd", "dpsgd-f", "lazydp"):
        graph = energy_run(algo, 9.0, 0.5, CPU_ESTIMATE)
        graph["energy"]["warning"] = "energy window 0.20 s is under ~10 NVML counter updates"
        eager = energy_run(algo, 2.0, 0.5, CPU_ESTIMATE)
        eager["timing"]["cuda_graph"] = False
        records += [graph, eager]
    res = make_figure("fig12", records)
    plt.close(res.figure)
    gpu = res.data[res.data["stage"] == "gpu"]
    assert set(gpu["value"]) == {2.0} and set(gpu["mode"]) == {"end-to-end"}


def test_a_short_window_keeps_the_estimated_hatch_of_a_host_segment():
    rec = energy_run("sgd", 2.0, 0.5, CPU_ESTIMATE)
    rec["energy"]["warning"] = "energy window 0.20 s is under ~10 NVML counter updates"
    res = make_figure("fig12", [rec])
    hatches = {p.get_hatch() for p in res.figure.axes[0].patches if p.get_height() > 0}
    plt.close(res.figure)
    assert any(h and "////" in h and "...." in h for h in hatches)
