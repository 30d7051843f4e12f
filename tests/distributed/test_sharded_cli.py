"""`run --gpus N` and `verify --gpus N` end to end on gloo CPU processes, bad --gpus
inputs' one-line errors (exit 2, nothing written; the planning refusals behind the other
messages are in test_sharded_plan.py), and `check_gpus`."""

from __future__ import annotations

import json

import pytest
import torch

from lazydp_bench.measure.stages import Stage
from tests.conftest import cli

TINY = ("--workload", "tiny", "--table-size", "full", "--iterations", "2", "--warmup", "1")


def test_run_gpus_2_writes_a_sharded_record(tmp_path):
    out = tmp_path / "res"
    args = ("--gpus", "2", "--placement", "cpu", "--algo", "lazydp", "--noise-multiplier", "1.1")
    res = cli("run", *args, *TINY, "--out", str(out))
    assert res.returncode == 0, res.stderr
    (line,) = (out / "runs.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert rec["status"] == "ok"
    assert rec["config"]["gpus"] == 2 and rec["config"]["sharding"] == "row-wise"
    ranks = rec["memory"]["per_rank"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert sum(r["shard_rows"] for r in ranks) == rec["config"]["table_rows"] == 467
    assert all(r["shard_bytes"] == r["shard_rows"] * 8 * 4 for r in ranks)
    assert rec["memory"]["history_table_bytes"] == 467 * 4
    names = {s["name"] for s in rec["stages"]}
    assert {Stage.COMM.value, Stage.FORWARD.value, Stage.MODEL_UPDATE.value} <= names
    assert rec["timing"]["measured_iters"] == 2 and rec["timing"]["flush_ms"] > 0
    assert rec["noise"]["impl"] == "global-keyed"
    assert "cpu x2 row-wise" in " ".join(res.stdout.split())  # the run table's title


def test_verify_gpus_2_passes():
    res = cli("verify", "--gpus", "2", "--algo", "sgd,lazydp", "--steps", "2")
    assert res.returncode == 0, res.stderr
    assert "5/5 checks as expected" in res.stdout  # sgd off; lazydp off, unit, real; stats


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("run", ("--gpus", "0"), "--gpus must be at least 1, got 0"),
        ("run", ("--gpus", "2", "--placement", "gpu"), "--gpus 2 needs 2 CUDA devices, found 0"),
        ("run", ("--gpus", "2", "--algo", "eana"), "'eana' has no sharded step"),
        ("verify", ("--gpus", "-1"), "--gpus must be at least 1, got -1"),
    ],
)
def test_bad_gpus_input_is_one_line_exit_2(tmp_path, command, args, message):
    out = tmp_path / "never"
    extra = ("--out", str(out), *TINY) if command == "run" else ()
    res = cli(command, *args, *extra)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert message in " ".join(res.stderr.split())
    assert not out.exists()


def test_check_gpus_resolves_and_refuses():
    from lazydp_bench.errors import BenchError
    from lazydp_bench.runtime.gpus import check_gpus

    assert check_gpus(1, "hybrid") is None  # one process: the placement is the run's own
    assert check_gpus(2, "cpu") == "cpu"
    if not torch.cuda.is_available():  # auto: gpu where CUDA is, else N CPU processes
        assert check_gpus(3, "auto") == "cpu"
    with pytest.raises(BenchError, match="shards the table over ranks on cpu or gpu"):
        check_gpus(2, "hybrid")
