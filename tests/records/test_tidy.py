"""Stored records as pandas tables: the columns and dtypes of the runs, stages and bench
tables, what each table holds, and what the loader accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from lazydp_bench.errors import BenchError
from lazydp_bench.records import tidy
from lazydp_bench.records.schema import new_header
from lazydp_bench.records.store import append_record
from lazydp_bench.records.tidy import load_benches, load_runs, load_stages
from tests.conftest import ROOT

H100 = ROOT / "tests" / "data" / "h100_records.jsonl"

RUN_COLUMNS = [
    "run_id",
    "created",
    "source",
    "commit",
    "dirty",
    "machine",
    "status",
    "error",
    "algo",
    "workload",
    "table_bytes",
    "batch_size",
    "pooling",
    "distribution",
    "placement",
    "gpus",
    "clipping",
    "noise_impl",
    "table_noise",
    "noise_update",
    "breakdown",
    "cuda_graph",
    "timer",
    "iterations",
    "step_median_ms",
    "step_p25_ms",
    "step_p75_ms",
    "step_mean_ms",
    "throughput",
    "init_s",
    "flush_ms",
    "flush_ms_per_step",
    "host_cpu_busy_pct",
    "host_cpu_steal_pct",
    "gpu_peak_bytes",
    "host_peak_bytes",
    "history_table_bytes",
    "gpu_j_per_step",
    "gpu_j_per_sample",
    "gpu_avg_w",
    "cpu_j_per_step",
    "cpu_source",
    "cpu_tdp_w",
    "cpu_tdp_source",
    "cpu_busy_s",
    "private",
    "dp_equivalent",
    "sigma",
    "clip_norm",
    "delta",
    "epsilon",
    "epsilon_prv",
    "auc",
    "logloss",
    "sweep_key",
]
TEXT = ["run_id", "commit", "machine", "status", "error", "algo", "workload", "placement"]
TEXT += ["clipping", "noise_impl", "table_noise", "timer", "distribution", "sweep_key"]
INTS = ["table_bytes", "batch_size", "pooling", "iterations", "gpu_peak_bytes"]
INTS += ["host_peak_bytes", "history_table_bytes"]
FLAGS = ["dirty", "breakdown", "cuda_graph", "private", "dp_equivalent"]
FLOATS = ["step_median_ms", "step_p25_ms", "step_p75_ms", "throughput", "gpu_j_per_step"]
FLOATS += ["flush_ms", "sigma", "epsilon", "epsilon_prv"]
FLOATS += ["auc", "logloss"]
STAGE_COLUMNS = ["run_id", "stage", "parent", "median_ms", "p25_ms", "p75_ms", "mean_ms"]
STAGE_COLUMNS += ["n", "share"]


def raw_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_typed(frame: pd.DataFrame) -> None:
    created = frame.dtypes["created"]
    assert isinstance(created, pd.DatetimeTZDtype) and str(created.tz) == "UTC"
    for name in TEXT:
        assert isinstance(frame.dtypes[name], pd.StringDtype), name
    for name in INTS:
        assert frame.dtypes[name] == "Int64", name
    for name in FLAGS:
        assert frame.dtypes[name] == "boolean", name
    for name in FLOATS:
        assert frame.dtypes[name] == "float64", name


def test_h100_runs_are_one_typed_row_per_run_record():
    runs = load_runs(H100)
    assert list(runs.columns) == RUN_COLUMNS
    assert_typed(runs)
    raw = [r for r in raw_lines(H100) if r.get("kind", "run") == "run"]
    assert len(runs) == len(raw) == 15
    assert list(runs["run_id"]) == [r["run_id"] for r in raw]
    assert set(runs["algo"]) == {"sgd", "dpsgd-b", "dpsgd-f", "lazydp", "eana"}
    assert list(runs["step_median_ms"]) == [r["timing"]["step_median_ms"] for r in raw]
    assert list(runs["machine"].unique()) == ["NVIDIA H100 80GB HBM3"]
    assert list(runs["table_bytes"]) == [r["config"]["table_bytes"] for r in raw]
    assert runs["created"].iloc[0] == pd.Timestamp(raw[0]["created_utc"])
    sgd = runs[runs["algo"] == "sgd"]
    assert sgd["table_noise"].isna().all() and not sgd["private"].any()
    private = runs[runs["private"]]
    assert set(private["table_noise"]) == {"fused", "host"}  # gpu tables / host tables
    assert (private["sigma"] > 0).all()
    equivalent = private["dp_equivalent"]
    assert set(private.loc[~equivalent, "algo"]) == {"eana"}
    assert (private.loc[equivalent, "epsilon"] > 0).all()
    assert private.loc[~equivalent, "epsilon"].isna().all()  # no epsilon: not DP-SGD


def test_every_column_is_documented():
    docs = {
        tidy.load_runs: [name for name, _, _ in tidy.RUN_COLUMNS],
        tidy.load_stages: [name for name, _ in tidy.STAGE_COLUMNS],
        tidy.load_benches: [name for name, _, _ in tidy.BENCH_COLUMNS],
    }
    for loader, names in docs.items():
        for name in names:
            assert re.search(rf"\b{name}\b", loader.__doc__), f"{loader.__name__}: {name}"


def ok_run(**changes) -> dict:
    record = {
        **new_header("ok"),
        "kind": "run",
        "config": {
            "algo": "dpsgd-f",
            "workload": "tiny",
            "table_bytes": 1_000_000,
            "batch_size": 64,
            "pooling": 2,
            "distribution": "zipf:0.9",
            "placement": "hybrid",
            "clipping": "ghost",
            "noise_impl": "auto",
            "breakdown": False,
        },
        "env": {"gpu_name": "NVIDIA H200", "commit": "abc123", "dirty": True},
        "privacy": {
            "private": True,
            "dp_equivalent": True,
            "noise_multiplier": 0.5,
            "clip_norm": 0.4,
            "delta": 1e-5,
            "epsilon_rdp": 7.5,
            "epsilon_prv": 6.5,
        },
        "timing": {
            "mode": "sync_wall",
            "cuda_graph": True,
            "measured_iters": 8,
            "step_median_ms": 12.0,
            "step_p25_ms": 11.0,
            "step_p75_ms": 13.0,
            "throughput_samples_per_s": 5333.0,
            "flush_ms": 40.0,
            "host_cpu": {"busy_pct": 90.0, "steal_pct": 1.5},
        },
        "stages": [{"name": "forward", "parent": None, "median_ms": 3.0, "n": 8}],
        "memory": {"gpu_peak_bytes": 2048, "host_peak_bytes": 4096},
        "energy": {"gpu_j_per_step": 1.25},
        "noise": {
            "impl": "streamed",
            "table": {"engine": "host-threaded (16 threads)"},
            "mlp": {"engine": "triton-fused"},
        },
        "sweep": {"key": "k1", "index": 0, "total": 2},
    }
    return {**record, **changes}


STUB = {
    **new_header("skipped", "needs 3 TB of host memory"),
    "kind": "run",
    "config": {"algo": "lazydp", "workload": "tiny", "table_bytes": None, "batch_size": 64},
    "env": {"gpu_name": None, "commit": "abc123", "dirty": False},
    "timing": None,
    "stages": [],
    "memory": {"estimate_host_bytes": 3_000_000_000_000},
}

BENCH = {
    **new_header("ok"),
    "kind": "bench_noise",
    "config": {"noise_impl": "fused", "placement": "hybrid", "table_bytes": 8_000_000_000},
    "env": {"gpu_name": "NVIDIA H200", "commit": "abc123", "dirty": False},
    "noise": {"engine": "host-threaded (16 threads)", "rng": "mt19937", "key_bits": "64"},
    "timing": {"mode": "sync_wall", "step_median_ms": 950.0},
    "bench": {
        "achieved_bytes_per_s": 16.8e9,
        "copy_bytes_per_s": 69.6e9,
        "pct_of_copy": 24.1,
        "samples_per_s": 2.1e9,
        "memory_bound_samples_per_s": 8.7e9,
        "arithmetic_bound_samples_per_s": None,
        "pct_of_bound": 17.3,
        "hybrid": {"d2h_bytes_per_s": 55.3e9, "bound_ms": 164.8, "bound_design": "noise down"},
    },
}


def write(path, *records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for record in records:
        append_record(path, record)


def test_records_built_in_code_become_typed_rows(tmp_path):
    path = tmp_path / "runs.jsonl"
    write(path, ok_run(), BENCH, STUB)
    runs = load_runs(path)
    assert list(runs.columns) == RUN_COLUMNS
    assert_typed(runs)  # the stub's nulls keep every dtype
    assert list(runs["status"]) == ["ok", "skipped"]  # the bench record is not a run
    ok, stub = runs.iloc[0], runs.iloc[1]
    assert ok["noise_impl"] == "streamed"  # noise.impl over the requested config.noise_impl
    assert ok["table_noise"] == "host"
    assert ok["machine"] == "NVIDIA H200" and ok["dirty"] and not stub["dirty"]
    assert ok["cuda_graph"] and not ok["breakdown"] and pd.isna(stub["cuda_graph"])
    assert (ok["iterations"], ok["pooling"], ok["gpu_peak_bytes"]) == (8, 2, 2048)
    assert (ok["sigma"], ok["epsilon"], ok["epsilon_prv"]) == (0.5, 7.5, 6.5)
    assert (ok["throughput"], ok["flush_ms"]) == (5333.0, 40.0)
    assert (ok["host_cpu_busy_pct"], ok["host_cpu_steal_pct"]) == (90.0, 1.5)
    assert ok["sweep_key"] == "k1" and ok["source"] == str(path)
    assert stub["error"] == "needs 3 TB of host memory"
    assert pd.isna(stub["table_bytes"]) and pd.isna(stub["machine"])
    assert pd.isna(stub["step_median_ms"]) and pd.isna(stub["private"])


def test_bench_records_are_the_bench_table(tmp_path):
    path = tmp_path / "runs.jsonl"
    write(path, ok_run(), BENCH)
    benches = load_benches(path)
    assert list(benches.columns) == [name for name, _, _ in tidy.BENCH_COLUMNS]
    assert len(benches) == 1
    b = benches.iloc[0]
    assert (b["impl"], b["engine"], b["placement"]) == ("fused", "host", "hybrid")
    assert b["table_bytes"] == 8_000_000_000 and b["median_ms"] == 950.0
    assert b["gb_per_s"] == pytest.approx(16.8) and b["copy_gb_per_s"] == pytest.approx(69.6)
    assert (b["pct_of_copy"], b["pct_of_bound"]) == (24.1, 17.3)
    assert b["d2h_gb_per_s"] == pytest.approx(55.3) and b["bound_ms"] == 164.8
    assert b["bound_design"] == "noise down"
    assert pd.isna(b["h2d_gb_per_s"]) and pd.isna(b["arithmetic_bound_samples_per_s"])
    assert benches.dtypes["table_bytes"] == "Int64" and benches.dtypes["bound_ms"] == "float64"


def test_h100_bench_records_have_no_hybrid_bounds():
    benches = load_benches(H100)
    assert list(benches["engine"]) == ["torch", "fused"]
    assert (benches["placement"] == "gpu").all()
    assert benches["bound_ms"].isna().all() and benches["pct_of_bound"].isna().all()
    assert (benches["gb_per_s"] > 1000).all()


def test_stage_rows_are_the_records_stages():
    stages = load_stages(H100)
    assert list(stages.columns) == STAGE_COLUMNS
    assert isinstance(stages.dtypes["stage"], pd.StringDtype) and stages.dtypes["n"] == "Int64"
    expected = [
        (r["run_id"], s["name"], s["parent"], s["median_ms"], s["p25_ms"], s["p75_ms"], s["n"])
        for r in raw_lines(H100)
        if r.get("kind", "run") == "run"
        for s in r["stages"]
    ]
    cols = ["run_id", "stage", "parent", "median_ms", "p25_ms", "p75_ms", "n"]
    rows = stages[cols].astype(object).where(stages[cols].notna(), None)
    assert [tuple(row) for row in rows.itertuples(index=False)] == expected
    step = load_runs(H100).set_index("run_id")["step_median_ms"]
    share = stages["median_ms"] / stages["run_id"].map(step)
    assert list(stages["share"]) == pytest.approx(list(share))


def test_a_folder_with_a_malformed_line_still_loads(tmp_path):
    runs_file = tmp_path / "runs" / "runs.jsonl"
    write(runs_file, ok_run())
    with open(runs_file, "ab") as f:
        f.write(b"{torn\n")
    append_record(runs_file, ok_run(run_id="after-the-bad-line"))
    write(tmp_path / "runs" / "bench" / "runs.jsonl", BENCH)
    with pytest.warns(UserWarning, match=r"skipped 1 malformed line\(s\): .*runs\.jsonl:2"):
        runs = load_runs(tmp_path / "runs")
    assert list(runs["run_id"])[-1] == "after-the-bad-line" and len(runs) == 2
    with pytest.warns(UserWarning):
        benches = load_benches(tmp_path / "runs")  # the bench/ subfolder is read too
    assert list(benches["run_id"]) == [BENCH["run_id"]]


def test_sources_are_files_folders_or_lists_each_file_once(tmp_path):
    write(tmp_path / "a" / "runs.jsonl", ok_run(run_id="a"))
    write(tmp_path / "b" / "before.jsonl", ok_run(run_id="b"))
    (tmp_path / "b" / "notes.md").write_text("not a record file")
    assert list(load_runs(tmp_path / "b")["run_id"]) == ["b"]
    assert list(load_runs(str(tmp_path / "a" / "runs.jsonl"))["run_id"]) == ["a"]
    both = load_runs([tmp_path / "a", tmp_path / "b", tmp_path / "a" / "runs.jsonl"])
    assert list(both["run_id"]) == ["a", "b"]
    with pytest.raises(BenchError, match="no results at"):
        load_runs(tmp_path / "missing")


def test_no_records_give_empty_typed_tables(tmp_path):
    runs, stages, benches = (f(tmp_path) for f in (load_runs, load_stages, load_benches))
    assert runs.empty and list(runs.columns) == RUN_COLUMNS
    assert_typed(runs)
    assert stages.empty and list(stages.columns) == STAGE_COLUMNS
    assert benches.empty and benches.dtypes["median_ms"] == "float64"


def test_engine_labels_and_the_summary_tables_noise_label():
    from lazydp_bench.report import tables

    assert tables.noise_label is tidy.noise_label
    labels = [tidy.engine_label(e) for e in ("streamed (x)", "host-threaded", "triton-fused")]
    assert labels == ["streamed", "host", "fused"]
    assert tidy.engine_label("torch-chunked") == "torch" and tidy.engine_label(None) is None
    assert tidy.noise_label({"noise": {}, "config": {"noise_impl": "fused"}}) == "fused"


def test_importing_the_package_stays_cheap():
    code = (
        "import sys, lazydp_bench\n"
        "assert 'pandas' not in sys.modules, 'pandas'\n"
        "assert 'lazydp_bench.records.tidy' not in sys.modules, 'tidy'\n"
        "from lazydp_bench import load_runs, load_stages, load_benches\n"
        "import lazydp_bench.records.tidy as tidy\n"
        "assert (load_runs, load_stages, load_benches) == (tidy.load_runs, tidy.load_stages, "
        "tidy.load_benches)\n"
        "assert {'load_runs', 'load_stages', 'load_benches'} <= set(dir(lazydp_bench))\n"
        "try:\n"
        "    lazydp_bench.load_nothing\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 0 and res.stdout == "ok\n", res.stderr


def test_host_energy_columns_say_measured_or_estimated(tmp_path):
    path = tmp_path / "runs.jsonl"
    energy = {
        "gpu_j_per_step": 1.25,
        "cpu_source": "estimate (TDP x utilisation)",
        "cpu_j_per_step": 0.5,
        "cpu_tdp_w": 50.0,
        "cpu_tdp_source": "table: Intel Xeon Platinum 8480+",
        "cpu_busy_s": 3.0,
    }
    write(path, ok_run(energy=energy))
    row = load_runs(path).iloc[0]
    assert (row["cpu_j_per_step"], row["cpu_tdp_w"], row["cpu_busy_s"]) == (0.5, 50.0, 3.0)
    assert row["cpu_source"] == "estimate (TDP x utilisation)"
    assert row["cpu_tdp_source"] == "table: Intel Xeon Platinum 8480+"
    old = load_runs(H100)  # written before the estimate: read, never estimated
    assert set(old["cpu_source"].dropna()) == {"unavailable"}
    assert old["cpu_tdp_w"].isna().all() and old["cpu_j_per_step"].isna().all()
    assert isinstance(old.dtypes["cpu_tdp_source"], pd.StringDtype)
