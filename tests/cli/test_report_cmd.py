"""`report` prints the summary of stored records and writes the tidy runs table; `bench
noise` keeps its records apart from training runs (runs/bench by default)."""

from __future__ import annotations

import json
import re

import pandas as pd

from lazydp_bench.records.tidy import load_benches, load_runs
from tests.conftest import ROOT, cli

H100 = ROOT / "tests" / "data" / "h100_records.jsonl"


def test_report_prints_the_algorithms_and_writes_the_csv(tmp_path):
    csv = tmp_path / "runs.csv"
    res = cli("report", str(H100), "--csv", str(csv))
    assert res.returncode == 0, res.stderr
    assert "summary" in res.stdout and "bench noise" in res.stdout
    for algo in ("sgd", "dpsgd-b", "dpsgd-f", "lazydp", "eana"):
        assert re.search(rf"(?<![\w-]){algo}(?![\w-])", res.stdout), algo
    assert "triton-fused" not in res.stdout  # engines print as one word
    assert f"15 run(s) -> {csv}" in res.stdout
    written = pd.read_csv(csv)
    runs = load_runs(H100)
    assert list(written.columns) == list(runs.columns)
    assert list(written["run_id"]) == list(runs["run_id"])
    assert list(written["step_median_ms"]) == list(runs["step_median_ms"])


def test_report_warns_about_a_malformed_line_and_refuses_no_records(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    lines = H100.read_text().splitlines()
    sgd = next(x for x in lines if json.loads(x)["config"]["algo"] == "sgd")
    bench = next(x for x in lines if json.loads(x).get("kind") == "bench_noise")
    (folder / "runs.jsonl").write_text("\n".join([sgd, "{torn", bench]) + "\n")
    res = cli("report", str(folder))
    assert res.returncode == 0, res.stderr
    assert "warning: skipped 1 malformed line(s)" in res.stderr
    assert re.search(r"(?<![\w-])sgd(?![\w-])", res.stdout) and "bench noise" in res.stdout
    empty = cli("report", str(tmp_path / "nothing-here.jsonl"))
    assert empty.returncode == 2 and "error: no results at" in empty.stderr
    (tmp_path / "empty").mkdir()
    none = cli("report", str(tmp_path / "empty"))
    assert none.returncode == 2 and "error: no records in" in none.stderr
    unwritable = cli("report", str(folder), "--csv", str(tmp_path / "no" / "dir" / "x.csv"))
    assert unwritable.returncode == 2 and "error: cannot write" in unwritable.stderr


def test_bench_noise_writes_under_runs_bench_by_default(tmp_path):
    res = cli(
        "bench",
        "noise",
        "--placement",
        "cpu",
        "--size",
        "1MiB",
        "--repeats",
        "1",
        "--impl",
        "torch",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    path = tmp_path / "runs" / "bench" / "runs.jsonl"
    assert [json.loads(x)["kind"] for x in path.read_text().splitlines()] == ["bench_noise"]
    assert not (tmp_path / "runs" / "runs.jsonl").exists()
    benches = load_benches(tmp_path / "runs")
    assert list(benches["engine"]) == ["torch"] and list(benches["placement"]) == ["cpu"]
    assert load_runs(tmp_path / "runs").empty
