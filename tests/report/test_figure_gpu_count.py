"""The GPU count is chosen before any other field of a figure's reference point: runs on
two GPUs (which alone reach 192 GB) never move a one-GPU figure's table size, and in
fig. 13(a) each GPU series is fixed on its own runs and commit, so a sharded series keeps
its own noise engine and host thread count instead of vanishing."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from lazydp_bench.report.figures import make_figure
from tests.report.test_figure_points import GB96, NEW, OLD, run

GB24, GB48, GB192 = 24 * 10**9, 48 * 10**9, 2 * GB96
ONE = {"sgd": 2.0, "dpsgd-f": 40.0, "lazydp": 2.5}  # ms per step on one GPU
TWO = {"sgd": 3.0, "dpsgd-f": 21.0, "lazydp": 3.5}  # on two


def _caption(res) -> str:
    ax = next(a for a in res.figure.axes if a.patches)
    text = ax.get_xlabel().replace("\n", " ")
    plt.close(res.figure)
    return text


def _values(res) -> dict[tuple, float]:
    ok = res.data[res.data["status"] == "ok"]
    axis = ok.columns[1]
    return {(r["algo"], r[axis]): r["value"] for _, r in ok.iterrows()}


def _reproduce_set() -> list[dict]:
    """One GPU at 96 GB over three batches; two GPUs at 96 and 192 GB, batch 2048."""
    one = [
        run(a, [v] * 3, table_bytes=GB96, batch=b)
        for a, v in ONE.items()
        for b in (1024, 2048, 4096)
    ]
    two = [run(a, [v] * 3, table_bytes=s, gpus=2) for a, v in TWO.items() for s in (GB96, GB192)]
    return one + two


@pytest.mark.parametrize("name", ["fig10", "fig14"])
def test_two_gpu_runs_never_set_a_one_gpu_figures_table_size(name):
    records = _reproduce_set()
    if name == "fig14":
        records += [run("eana", [2.0] * 3, table_bytes=GB96, batch=b) for b in (1024, 2048, 4096)]
        # two-GPU EANA and LazyDP at two batches at 192 GB: fig. 14's own table rule
        records += [
            run("eana", [3.0] * 3, table_bytes=GB192, gpus=2, batch=b) for b in (1024, 2048)
        ]
        records += [run("lazydp", [3.5] * 3, table_bytes=GB192, gpus=2, batch=1024)]
    res = make_figure(name, records)
    caption = _caption(res)
    assert "table 96 GB" in caption and "1 GPU (runs on 2 GPUs not drawn)" in caption
    values = _values(res)
    assert {b for _, b in values} == {1024, 2048, 4096}
    assert values[("lazydp", 2048)] == ONE["lazydp"]


def test_a_one_gpu_figure_draws_only_one_gpu_runs_at_their_own_size():
    res = make_figure("fig10", _reproduce_set())
    plt.close(res.figure)
    assert set(res.data["algo"]) == set(ONE)
    assert {
        r["algo"]: r["value"] for _, r in res.data[res.data["batch_size"] == 1024].iterrows()
    } == ONE


def _fig13a_set(noise: str | None = None, threads: int | None = None, commit2: str = OLD) -> list:
    """One GPU at 24/48/96 GB (fused engine, 16 threads); two GPUs at 96/192 GB with the
    sharded engine `noise` and `threads` host threads, on `commit2`."""
    records = []
    for a, v in ONE.items():
        for s in (GB24, GB48, GB96):
            r = run(a, [v] * 3, table_bytes=s)
            if a != "sgd":
                r["noise"] = {"impl": "fused"}
            records.append(r)
    for a, v in TWO.items():
        for s in (GB96, GB192):
            r = run(a, [v] * 3, table_bytes=s, gpus=2, commit=commit2, day=2)
            if noise and a != "sgd":
                r["noise"] = {"impl": noise}
            if threads:
                r["config"]["host_threads"] = threads
            records.append(r)
    return records


@pytest.mark.parametrize(
    ("noise", "threads", "differs"),
    [("global-keyed", None, "noise_impl=global-keyed"), (None, 32, "host_threads=32")],
)
def test_fig13a_keeps_a_two_gpu_series_with_its_own_engine_or_threads(noise, threads, differs):
    res = make_figure("fig13a", _fig13a_set(noise, threads))
    caption = _caption(res)
    values = _values(res)
    for a in ONE:
        assert [values[(a, s)] for s in (GB24, GB48, GB96)] == [ONE[a]] * 3
        assert [values[(f"{a}@2", s)] for s in (GB96, GB192)] == [TWO[a]] * 2
    assert f"2 GPUs: {differs}" in caption


def test_fig13a_two_gpu_series_matches_the_first_where_it_ran_alike():
    """A two-GPU series with runs at 16 and 32 host threads draws the 16-thread runs, as
    the one-GPU series does."""
    records = _fig13a_set(threads=32)
    records += [run(a, [v * 10] * 3, table_bytes=GB96, gpus=2, day=2) for a, v in TWO.items()]
    res = make_figure("fig13a", records)
    caption = _caption(res)
    values = _values(res)
    assert values[("lazydp@2", GB96)] == 10 * TWO["lazydp"]
    assert ("lazydp@2", GB192) not in values  # only the 32-thread runs reached it
    assert "host_threads=32" not in caption


def test_fig13a_chooses_the_commit_per_series():
    """The two-GPU runs on a newer commit do not push the one-GPU series off its own."""
    res = make_figure("fig13a", _fig13a_set("global-keyed", commit2=NEW))
    caption = _caption(res)
    commits = res.data.dropna(subset=["commit"]).groupby("algo")["commit"].agg(set)
    assert commits["lazydp"] == {OLD[:7]} and commits["lazydp@2"] == {NEW[:7]}
    assert f"commits {NEW[:7]}, {OLD[:7]}" in caption or f"commits {OLD[:7]}, {NEW[:7]}" in caption
    assert not any("drew only the newest" in n for n in res.notes)
