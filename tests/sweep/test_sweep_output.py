"""What a sweep prints and how it exits: failed points give exit code 1 and a count, piped
output is lines and one final table, a dry run plans the default algorithms, and a stated
GPU (--gpu-mem) lets a machine without one plan gpu and hybrid points."""

import re

import pytest
import torch

from lazydp_bench.cli.options import DEFAULT_ALGOS
from tests.conftest import cli
from tests.sweep.test_sweep import TINY

SIZE = re.compile(r"^\d+(\.\d+)? (B|KB|MB|GB|TB)$")


@pytest.fixture(scope="module")
def timed_out_sweep(tmp_path_factory):
    """Two points, each killed by a point timeout shorter than a worker's start."""
    out = tmp_path_factory.mktemp("timeouts")
    args = ("sweep", *TINY, "--algo", "sgd,lazydp", "--point-timeout", "0.5")
    return cli(*args, "--out", str(out))


def rows(stdout: str) -> list[list[str]]:
    """The cells of each table line (a wrapped row continues on lines with empty cells)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


def test_a_sweep_with_failed_points_exits_1_and_says_how_many(timed_out_sweep):
    res = timed_out_sweep
    assert res.returncode == 1, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert "2 timeout" in last and "2 point(s) failed" in last


def test_piped_output_has_one_final_table_and_no_glued_progress_bar(timed_out_sweep):
    lines = timed_out_sweep.stdout.splitlines()
    assert sum(line.startswith("┏") for line in lines) == 1  # the table, once
    assert not any(line.startswith("now:") for line in lines)
    assert not any(re.search(r"\d+/\d+ \d+:\d\d:\d\d\S", line) for line in lines)
    finished = [line for line in lines if re.match(r"\[\d/2\] timeout: ", line)]
    assert len(finished) == 2  # one line per finished point instead of a live display


def test_dry_run_without_algo_plans_the_default_algorithms_as_run_does():
    res = cli(
        "sweep",
        "--workload",
        "tiny",
        "--placement",
        "gpu",
        "--gpu-mem",
        "80GB",
        "--noise-multiplier",
        "1",
        "--dry-run",
    )
    assert res.returncode == 0, res.stderr
    planned = [r for r in rows(res.stdout) if r[1]]
    assert [r[0].split(" · ")[0] for r in planned] == DEFAULT_ALGOS.split(",")
    assert {r[1] for r in planned} == {"gpu"} and {r[4] for r in planned} == {"yes"}


def test_a_gpu_dry_run_plans_against_the_stated_gpu_without_one(tmp_path):
    res = cli(
        "sweep",
        "--preset",
        "fig3",
        "--placement",
        "gpu,hybrid",
        "--dry-run",
        "--gpu-mem",
        "141GB",
        "--host-mem-limit",
        "128GiB",
        "--noise-multiplier",
        "1",
        "--out",
        str(tmp_path / "none"),
    )
    assert res.returncode == 0, res.stderr
    assert "32 points" in res.stdout and "92% of --gpu-mem" in res.stdout
    planned = [r for r in rows(res.stdout) if r[1]]
    assert len(planned) == 32
    assert sorted(r[1] for r in planned).count("gpu") == 16
    assert sorted(r[1] for r in planned).count("hybrid") == 16
    assert all(SIZE.match(r[2]) and SIZE.match(r[3]) for r in planned)  # GPU and host needs
    assert {r[4] for r in planned} == {"yes", "no"}  # 96 GB DP-SGD(B) does not fit on the GPU
    assert not (tmp_path / "none").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA")
def test_gpu_points_without_a_stated_gpu_and_gpu_mem_without_dry_run_are_refused():
    grid = ("sweep", "--preset", "fig3", "--placement", "gpu,hybrid", "--noise-multiplier", "1")
    unplanned = cli(*grid, "--dry-run")
    assert unplanned.returncode == 2
    assert unplanned.stderr.strip() == (
        "error: placement 'gpu' needs a CUDA GPU, and none is available"
    )
    real = cli(*grid, "--gpu-mem", "141GB")
    assert real.returncode == 2
    assert len(real.stderr.strip().splitlines()) == 1
    assert real.stderr.startswith("error: --gpu-mem") and "--dry-run only" in real.stderr
