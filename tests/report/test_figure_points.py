"""How figures pick and draw their points, on records built here: every field off the
axis is fixed (a bar never stands on another pooling or batch size), repeats of a point
pool their raw steps, a panel draws one commit unless mixed commits are allowed, and a
point without a successful run is a hatched bar labelled with its reason."""

from __future__ import annotations

import itertools
import json
import statistics

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from lazydp_bench.records.schema import from_dict, to_dict
from lazydp_bench.report.figures import MISSING_HATCH, make_figure
from tests.conftest import cli

OLD, NEW = "a" * 40, "b" * 40
GB96, GB9_6, MB96 = 96_000_000_000, 9_600_000_000, 96_000_000
CLIPPING = {"sgd": "none", "dpsgd-f": "ghost", "lazydp": "ghost", "eana": "ghost"}
SIZE_TEXT = {GB96: "96GB", GB9_6: "9.6GB", 960_000_000: "960MB", MB96: "96MB"}


def _created(day: int) -> str:
    """Records of one day tie; the figures then keep their input order."""
    return f"2026-12-{day:02d}T00:00:00+00:00"


def _env(commit: str) -> dict:
    return {"gpu_name": "NVIDIA H100 80GB HBM3", "cpu": "Xeon", "commit": commit, "dirty": False}


def _config(algo: str, table_bytes: int | None, batch: int, pooling: int, **extra) -> dict:
    return {
        "algo": algo,
        "workload": "mlperf-dlrm",
        "table_size": extra.pop("table_size", SIZE_TEXT.get(table_bytes)),
        "table_bytes": table_bytes,
        "batch_size": batch,
        "pooling": pooling,
        "distribution": extra.pop("distribution", "uniform"),
        "placement": extra.pop("placement", "gpu"),
        "placement_requested": "gpu",
        "iterations": 7,
        "warmup": 3,
        "seed": 0,
        **extra,
    }


def run(
    algo: str,
    steps: list[float] | None,
    *,
    median: float | None = None,
    table_bytes: int = GB9_6,
    batch: int = 2048,
    pooling: int = 1,
    commit: str = OLD,
    day: int = 1,
    stages: dict[str, float] | None = None,
    **config,
) -> dict:
    """A successful run record as the trainer writes it (raw steps, or only a median)."""
    med = median if median is not None else statistics.median(steps)
    breakdown = stages is not None
    rec = {
        "kind": "run",
        "created_utc": _created(day),
        "status": "ok",
        "config": _config(
            algo,
            table_bytes,
            batch,
            pooling,
            clipping=CLIPPING[algo],
            noise_impl="auto",
            noise_mode="gaussian",
            breakdown=breakdown,
            cuda_graph="auto",
            dtype="float32",
            chunk_bytes=268435456,
            host_threads=16,
            lr=0.01,
            lr_decay=0.0,
            **config,
        ),
        "env": _env(commit),
        "timing": {
            "step_median_ms": med,
            "step_p25_ms": med,
            "step_p75_ms": med,
            "step_ms_raw": steps,
            "cuda_graph": not breakdown,
        },
        "stages": [{"name": n, "parent": None, "median_ms": v} for n, v in (stages or {}).items()],
        "memory": {"gpu_peak_bytes": 1},
        "energy": {"gpu_j_per_step": None},
    }
    return to_dict(from_dict(rec))


def failed(
    algo: str,
    status: str,
    *,
    table_bytes: int | None = GB9_6,
    table_size: str = "9.6GB",
    batch: int = 2048,
    pooling: int = 1,
    commit: str = OLD,
    day: int = 1,
    memory: dict | None = None,
    error: str = "",
) -> dict:
    """A sweep's stub for a point that produced no measurements."""
    rec = {
        "kind": "run",
        "created_utc": _created(day),
        "status": status,
        "error": error,
        "config": _config(algo, table_bytes, batch, pooling, table_size=table_size),
        "env": _env(commit),
        "stages": [],
        "memory": memory or {},
    }
    return to_dict(from_dict(rec))


def _rows(res, axis: str, x, algo: str) -> pd.DataFrame:
    d = res.data
    return d[(d[axis] == x) & (d["algo"] == algo)]


def _value(res, axis: str, x, algo: str) -> float:
    rows = _rows(res, axis, x, algo)
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


def _draw(name: str, records: list[dict], **kw):
    res = make_figure(name, records, **kw)
    if res.figure is not None:
        plt.close(res.figure)
    return res


# ---- item 11: every field off the axis is fixed -------------------------------------------


def test_fig14_batch_bars_fix_pooling_to_the_workload_default():
    """The committed fig14 drew a pooling-10 record as LazyDP's batch-2048 bar."""
    records = [
        run("lazydp", [99.0], pooling=10, day=1),  # older, off the reference pooling
        *(run("eana", [float(b // 512)], batch=b, day=2) for b in (1024, 2048, 4096)),
        *(run("lazydp", [float(b // 256)], batch=b, day=2) for b in (1024, 2048, 4096)),
    ]
    res = _draw("fig14", records)
    assert _value(res, "batch_size", 2048, "lazydp") == 8.0
    assert _rows(res, "batch_size", 2048, "lazydp")["runs"].tolist() == [1]
    assert any("reference point" in n and "left out: pooling 10" in n for n in res.notes)


def test_fig13d_uniform_bars_are_at_the_same_pooling_as_the_zipf_bars():
    """The committed fig13d drew pooling-10 'uniform' bars beside pooling-1 Zipf bars."""
    records = []
    for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp")):
        records.append(run(algo, [100.0 + i], pooling=10, day=1))  # older, pooling 10
        records.append(run(algo, [1.0 + i], day=2))
        records.append(run(algo, [2.0 + i], distribution="zipf:0.9", day=2))
    res = _draw("fig13d", records)
    for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp")):
        assert _value(res, "distribution", "uniform", algo) == 1.0 + i
        assert _value(res, "distribution", "zipf:0.9", algo) == 2.0 + i


def test_fig13b_pooling_bars_fix_the_batch_size():
    """The committed fig13b drew the batch-1024 record as LazyDP's pooling-1 bar."""
    records = [run("lazydp", [77.0], batch=1024, day=1)]  # older, off the reference batch
    for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp")):
        records += [run(algo, [1.0 + i], day=2), run(algo, [10.0 + i], pooling=10, day=2)]
    res = _draw("fig13b", records)
    assert _value(res, "pooling", 1, "lazydp") == 3.0
    assert _value(res, "pooling", 10, "lazydp") == 12.0
    assert set(res.data["pooling"]) == {1, 10}


# ---- item 12: repeats pool, commits do not mix ----------------------------------------------


def _fig13a_base(commit: str = OLD, day: int = 1, sizes=(MB96, GB9_6), base: float = 1.0):
    return [
        run(algo, [base + i + j], table_bytes=size, commit=commit, day=day)
        for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp"))
        for j, size in enumerate(sizes)
    ]


def test_repeats_of_a_point_pool_their_raw_steps():
    records = [
        *[r for r in _fig13a_base() if r["config"]["algo"] != "lazydp"],
        run("lazydp", [1.0, 2.0, 3.0], table_bytes=MB96),
        run("lazydp", [4.0, 5.0, 6.0, 7.0], table_bytes=MB96),
        run("lazydp", [50.0], table_bytes=MB96, pooling=10),  # another configuration
        run("lazydp", [3.0], table_bytes=GB9_6),
    ]
    res = _draw("fig13a", records)
    row = _rows(res, "table_bytes", MB96, "lazydp").iloc[0]
    assert row["value"] == 4.0  # the median of all 7 steps, not of either run
    assert (row["step_p25_ms"], row["step_p75_ms"]) == (2.5, 5.5)
    assert (row["runs"], row["steps"], row["pooled"]) == (2, 7, "raw steps")


def test_repeats_without_raw_steps_take_the_median_of_their_medians():
    records = [
        *[r for r in _fig13a_base() if r["config"]["algo"] != "lazydp"],
        *(run("lazydp", None, median=m, table_bytes=MB96) for m in (10.0, 12.0, 30.0)),
        run("lazydp", [3.0], table_bytes=GB9_6),
    ]
    res = _draw("fig13a", records)
    row = _rows(res, "table_bytes", MB96, "lazydp").iloc[0]
    assert row["value"] == 12.0
    assert row["runs"] == 3
    assert row["pooled"].startswith("median of run medians")


def test_stacked_figures_pool_stage_medians():
    stages = [{"forward": f, "noise_sampling": 2 * f} for f in (1.0, 2.0, 3.0)]
    records = [
        run("sgd", [4.0], stages={"forward": 4.0}),
        *(run("lazydp", [f * 5], stages=s) for f, s in zip((1.0, 2.0, 3.0), stages, strict=True)),
    ]
    res = _draw("fig11", records)
    rows = _rows(res, "batch_size", 2048, "lazydp").set_index("stage")
    assert rows.loc["noise_sampling", "value"] == 4.0
    assert rows.loc["noise_sampling", "runs"] == 3


def test_a_noisy_pooled_point_gets_a_note():
    records = [
        *[r for r in _fig13a_base() if r["config"]["algo"] != "lazydp"],
        run("lazydp", [1.0, 1.0, 1.0, 5.0, 5.0], table_bytes=MB96),
        run("lazydp", [3.0, 3.0, 3.1], table_bytes=GB9_6),
    ]
    res = _draw("fig13a", records)
    noisy = [n for n in res.notes if "noisy" in n]
    assert len(noisy) == 1 and "lazydp at 96 MB" in noisy[0] and "IQR 4 ms" in noisy[0]


def test_a_panel_draws_only_its_newest_commit_unless_mixed_commits_are_allowed():
    old = _fig13a_base(OLD, 1, (MB96, 960_000_000, GB9_6), base=10.0)
    new = _fig13a_base(NEW, 2, (960_000_000, GB9_6), base=20.0)
    res = _draw("fig13a", old + new)
    assert set(res.data["table_bytes"]) == {960_000_000, GB9_6}
    assert _value(res, "table_bytes", GB9_6, "lazydp") == 20.0 + 2 + 1
    assert set(res.data["commit"]) == {NEW[:7]}
    assert any(f"drew only the newest, {NEW[:7]}" in n for n in res.notes)

    mixed = make_figure("fig13a", old + new, allow_mixed_commits=True)
    footer = " ".join(t.get_text() for t in mixed.figure.texts)
    plt.close(mixed.figure)
    assert f"commits {OLD[:7]}, {NEW[:7]}" in footer
    at = mixed.data.set_index(["table_bytes", "algo"])
    assert at.loc[(MB96, "lazydp"), "commit"] == OLD[:7]  # the only run of that point
    assert at.loc[(GB9_6, "lazydp"), "commit"] == NEW[:7]  # never pooled with OLD's
    assert at.loc[(GB9_6, "lazydp"), "runs"] == 1
    assert any("6 point(s) drew their newest commit; 6 run(s) on older" in n for n in mixed.notes)


def test_plot_allow_mixed_commits_option(tmp_path):
    old = _fig13a_base(OLD, 1, (MB96, 960_000_000, GB9_6), base=10.0)
    new = _fig13a_base(NEW, 2, (960_000_000, GB9_6), base=20.0)
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old + new))
    common = ("plot", str(tmp_path), "--figure", "fig13a", "--format", "png")
    res = cli(*common, "--out", str(tmp_path / "one"))
    assert res.returncode == 0, res.stderr
    assert set(pd.read_csv(tmp_path / "one" / "fig13a.csv")["commit"]) == {NEW[:7]}
    assert "--allow-mixed-commits draws them together" in " ".join(res.stderr.split())
    res = cli(*common, "--out", str(tmp_path / "mixed"), "--allow-mixed-commits")
    assert res.returncode == 0, res.stderr
    assert set(pd.read_csv(tmp_path / "mixed" / "fig13a.csv")["commit"]) == {OLD[:7], NEW[:7]}
    assert "--allow-mixed-commits" in cli("plot", "--help").stdout


# ---- item 13: missing points are drawn --------------------------------------------------------


def test_a_point_without_a_successful_run_is_a_hatched_bar_with_its_reason():
    skip_memory = {
        "placement": "gpu",
        "estimate_gpu_bytes": 120_000_000_000,
        "estimate_host_bytes": 1_000_000_000,
        "limit_gpu_bytes": 80_000_000_000,
        "limit_host_bytes": 100_000_000_000,
    }
    records = [
        *(
            run(algo, [float(b // 1024 + i)], batch=b)
            for i, algo in enumerate(("sgd", "dpsgd-f", "lazydp"))
            for b in (1024, 2048)
        ),
        failed("lazydp", "timeout", batch=4096, day=1),
        failed("lazydp", "oom", batch=4096, day=2),  # the newest failure names the point
        # skipped before planning: no table bytes, found from the workload and table size
        failed("dpsgd-f", "skipped", table_bytes=None, batch=4096, memory=skip_memory),
    ]
    res = make_figure("fig10", records)
    ax = res.figure.axes[0]
    hatched = [p for p in ax.patches if p.get_hatch() == MISSING_HATCH]
    texts = {t.get_text() for t in ax.texts}
    plt.close(res.figure)
    assert len(hatched) == 3
    assert {"LazyDP: OOM", "DP-SGD(F): skipped: needs 120 GB GPU", "SGD: not run"} <= texts
    status = res.data[res.data["batch_size"] == 4096].set_index("algo")
    assert status.loc["lazydp", ["status", "reason"]].tolist() == ["oom", "OOM"]
    assert status.loc["dpsgd-f", "reason"] == "skipped: needs 120 GB GPU"
    assert status.loc["sgd", ["status", "reason"]].tolist() == ["not run", "not run"]
    assert status["value"].isna().all()


def test_a_figure_whose_every_point_failed_is_skipped_with_a_reason():
    records = [failed(a, "oom", table_bytes=GB96, table_size="96GB") for a in ("sgd", "lazydp")]
    records.append(failed("dpsgd-f", "timeout", table_bytes=GB96, table_size="96GB"))
    res = make_figure("fig10", records)
    assert res.figure is None
    assert res.notes[0] == "fig10: skipped, no point has a run to draw (2 OOM, 1 timeout)"
    assert sorted(res.data["status"]) == ["oom", "oom", "timeout"]


def test_a_missing_algorithm_is_noted_and_the_rest_drawn():
    records = [run("lazydp", [float(b // 256)], batch=b) for b in (1024, 2048)]
    res = _draw("fig14", records)
    assert "fig14: no eana runs at the reference point and commit drawn; left out" in res.notes
    assert set(res.data["algo"]) == {"lazydp"}
    assert _value(res, "batch_size", 1024, "lazydp") == 4.0


@pytest.mark.parametrize("name", ["fig3", "fig10", "fig13a"])
def test_figures_draw_python_axis_values_not_floats(name):
    """A stub's null field must not turn batch 2048 into 2048.0 in the CSV."""
    records = [*_fig13a_base(), failed("lazydp", "oom", table_bytes=None, batch=4096)]
    for r in records[:-1]:
        r["config"]["breakdown"] = True
        r["stages"] = [{"name": "forward", "parent": None, "median_ms": 1.0}]
    res = _draw(name, records)
    axis = {"fig3": "table_bytes", "fig10": "batch_size", "fig13a": "table_bytes"}[name]
    assert all(isinstance(v, int) for v in res.data[axis])


# ---- bars side by side compare one timing mode ----------------------------------------------

STAGED = {"forward": 0.5}  # a run timed stage by stage (eager, synced per stage)


def test_bars_at_one_axis_value_share_the_timing_mode_all_their_algorithms_have():
    records = [
        run("sgd", [4.0] * 3, table_bytes=MB96, stages=STAGED),  # stage timing only
        run("dpsgd-f", [2.0] * 3, table_bytes=MB96),  # graph replay, preferred alone
        run("dpsgd-f", [6.0] * 3, table_bytes=MB96, stages=STAGED),
        run("lazydp", [1.0] * 3, table_bytes=MB96),
        run("lazydp", [5.0] * 3, table_bytes=MB96, stages=STAGED),
        *(run(a, [v] * 3, table_bytes=GB9_6) for a, v in (("sgd", 1.5), ("dpsgd-f", 7.0))),
        run("lazydp", [2.0] * 3, table_bytes=GB9_6),
        run("sgd", [9.0] * 3, table_bytes=GB9_6, stages=STAGED),
    ]
    res = make_figure("fig13a", records)
    ax = next(a for a in res.figure.axes if a.patches)
    caption, texts = ax.get_xlabel(), {t.get_text() for t in ax.texts}
    plt.close(res.figure)
    assert _value(res, "table_bytes", MB96, "dpsgd-f") == 6.0  # as SGD's, not 2.0
    assert _value(res, "table_bytes", MB96, "lazydp") == 5.0
    assert _value(res, "table_bytes", GB9_6, "sgd") == 1.5  # every one has a graph replay
    assert set(_rows(res, "table_bytes", MB96, "sgd")["mode"]) == {"stage timing"}
    assert {"1.2x", "3.5x"} <= texts and "2.0x" not in texts
    assert "timing: stage timing at 96 MB; graph replay at 9.6 GB" in " ".join(caption.split())


def test_an_algorithm_without_the_shared_mode_keeps_its_own_and_the_caption_says_mixed():
    records = [
        run("sgd", [4.0] * 3, table_bytes=MB96, stages=STAGED),
        run("dpsgd-f", [2.0] * 3, table_bytes=MB96),
        run("lazydp", [1.0] * 3, table_bytes=MB96),
        *(run(a, [3.0] * 3, table_bytes=GB9_6) for a in ("sgd", "dpsgd-f", "lazydp")),
    ]
    res = make_figure("fig13a", records)
    caption = " ".join(res.figure.axes[0].get_xlabel().split())
    plt.close(res.figure)
    assert _value(res, "table_bytes", MB96, "dpsgd-f") == 2.0
    assert "timing: mixed at 96 MB; graph replay at 9.6 GB" in caption
    assert any("different timing modes" in n for n in res.notes)


def test_a_peer_draws_its_own_mode_and_leaves_the_comparison_it_stands_beside():
    records = []
    for size in (MB96, GB9_6):
        for algo, ms in (("sgd", 1.0), ("dpsgd-f", 8.0), ("lazydp", 2.0)):
            records += [
                run(algo, [ms] * 3, table_bytes=size),
                run(algo, [ms + 4] * 3, table_bytes=size, stages=STAGED),
            ]
        peer = run("lazydp", [30.0] * 3, table_bytes=size, stages=STAGED)
        peer["config"].update(algo="opacus-ghost", clipping="ghost")
        records.append(peer)
    res = make_figure("fig13a", records)
    caption = " ".join(res.figure.axes[0].get_xlabel().split())
    plt.close(res.figure)
    assert _value(res, "table_bytes", MB96, "lazydp") == 2.0  # graph replay
    assert _value(res, "table_bytes", MB96, "opacus-ghost") == 30.0
    assert caption.endswith("graph replay; Opacus(ghost): stage timing")


def test_a_peer_is_drawn_only_in_the_panels_that_hold_its_runs():
    """Opacus runs with its tables in GPU memory only: the hybrid panel has no Opacus slot
    (no "not run" stub), the gpu panel keeps its bar."""
    records = []
    for placement, size in itertools.product(("gpu", "hybrid"), (MB96, GB9_6)):
        for algo, ms in (("sgd", 1.0), ("dpsgd-f", 8.0), ("lazydp", 2.0)):
            records.append(run(algo, [ms] * 3, table_bytes=size, placement=placement))
    peer = run("lazydp", [30.0] * 3, table_bytes=MB96, placement="gpu")
    peer["config"].update(algo="opacus-ghost", clipping="ghost")
    res = make_figure("fig13a", [*records, peer])
    texts = [t.get_text() for ax in res.figure.axes for t in ax.texts]
    plt.close(res.figure)
    peers = res.data[res.data["algo"] == "opacus-ghost"]
    assert {p.split(" · ")[-1] for p in peers["panel"]} == {"gpu"}
    assert _value(res, "table_bytes", MB96, "opacus-ghost") == 30.0
    assert sum("not run" in t for t in texts) == 1  # the gpu panel's 9.6 GB peer stub


def test_a_panel_with_no_bar_is_left_out_and_named_in_the_footer_and_data():
    """hybrid-host runs have no stage breakdown: fig. 3 draws the gpu panel only, not an
    axes of empty hatches, and says on the image and in its data why hybrid-host is absent."""
    records = [
        run(a, [ms] * 3, table_bytes=size, stages={"forward": ms})
        for a, ms in (("sgd", 1.0), ("dpsgd-f", 4.0))
        for size in (MB96, GB96)
    ]
    records += [
        run(a, [ms] * 3, table_bytes=GB96, placement="hybrid-host")
        for a, ms in (("sgd", 2.0), ("dpsgd-f", 900.0))
    ]  # graph replays: no breakdown
    res = make_figure("fig3", records)
    bar_axes = [ax for ax in res.figure.axes if ax.get_title()]
    footer = " ".join(" ".join(t.get_text() for t in res.figure.texts).split())  # unwrapped
    plt.close(res.figure)
    assert [ax.get_title() for ax in bar_axes] == ["NVIDIA H100 80GB HBM3 · gpu"]
    assert "not drawn: NVIDIA H100 80GB HBM3 · hybrid-host (" in footer
    assert "no stage breakdown" in footer.split("not drawn:")[1]
    assert any("hybrid-host]: panel not drawn" in n for n in res.notes)
    host = res.data[res.data["panel"].str.endswith("hybrid-host")]
    assert len(host) and host["value"].isna().all()
