"""The headline table on records built here: each ratio is the pooled steps of the two
points it names, DP-SGD(F) appears under its strongest engine and under the paper's
design (the torch engine's split passes on the GPU, the hybrid-host pair for a host
table), energies sum GPU and host, and scripts/headline.py refuses bad input in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lazydp_bench.report.headline import headline_rows, markdown
from tests.conftest import ROOT
from tests.report.test_figure_points import GB96, run


def _run(algo: str, ms: float, placement: str, **extra) -> dict:
    """A graph-replay run at the paper's point; `extra` sets config, energy, flush."""
    r = run(algo, [ms * 0.98, ms, ms * 1.02], table_bytes=GB96, placement=placement)
    r["config"].update(extra.get("config", {}))
    r["energy"].update(extra.get("energy", {}))
    r["timing"].update(extra.get("timing", {}))
    if "noise_impl" in extra.get("config", {}):  # the engine as the run resolved it
        r["noise"] = {"impl": extra["config"]["noise_impl"]}
    return r


def _gpu() -> list[dict]:
    bk = {"config": {"clipping": "bookkeeping"}}
    return [
        _run("sgd", 1.0, "gpu", energy={"gpu_j_per_step": 0.5}),
        _run("lazydp", 1.3, "gpu", energy={"gpu_j_per_step": 0.7}, timing={"flush_ms": 200.0}),
        _run("lazydp", 1.05, "gpu", **bk),
        _run(
            "dpsgd-f", 60.0, "gpu", config={"noise_impl": "fused"}, energy={"gpu_j_per_step": 40.0}
        ),
        _run("dpsgd-f", 120.0, "gpu", config={"noise_impl": "torch"}),
    ]


def _hybrid() -> list[dict]:
    host = {"gpu_j_per_step": 1.0, "cpu_j_per_step": 0.25}
    return [
        _run("sgd", 5.0, "hybrid", energy=host),
        _run("lazydp", 6.0, "hybrid", energy=host),
        _run("dpsgd-f", 1900.0, "hybrid", config={"noise_impl": "roundtrip"}, energy=host),
        _run("dpsgd-f", 2500.0, "hybrid", config={"noise_impl": "streamed"}),
        _run("dpsgd-f", 11000.0, "hybrid-host", config={"noise_impl": "host-philox"}),
        _run("lazydp", 30.0, "hybrid-host"),
    ]


def test_each_ratio_is_the_two_pooled_points_it_names():
    rows = {r.placement: r for r in headline_rows(_gpu() + _hybrid())}
    assert set(rows) == {"gpu", "hybrid"}  # hybrid-host is the hybrid row's paper's design
    gpu, hybrid = rows["gpu"], rows["hybrid"]
    assert gpu.parity.ratio == pytest.approx(1.3)
    assert gpu.parity_bk.ratio == pytest.approx(1.05)
    assert (gpu.strongest_engine, gpu.strongest.top) == ("fused", pytest.approx(60.0))
    assert gpu.strongest.ratio == pytest.approx(60 / 1.3)
    assert gpu.paper_style.ratio == pytest.approx(120 / 1.3)  # the torch engine's passes
    assert gpu.joules == pytest.approx((0.5, 40.0, 0.7))
    assert gpu.flush_s == pytest.approx(0.2)
    assert hybrid.strongest_engine == "roundtrip"
    assert hybrid.strongest.ratio == pytest.approx(1900 / 6)
    assert hybrid.paper_style.ratio == pytest.approx(11000 / 30)  # both on the host
    assert hybrid.paper_style_engine == "hybrid-host"  # its placement: noise on host threads
    assert hybrid.parity_bk is None
    assert hybrid.joules == pytest.approx((1.25, 1.25, 1.25))  # GPU + host


def test_the_table_prints_numbers_and_where_each_was_read():
    text = markdown(headline_rows(_gpu() + _hybrid()))
    lines = text.splitlines()
    gpu = next(line for line in lines if "· gpu |" in line)
    assert "60.0 ms, **46.2x** [fused]" in gpu and "120 ms, **92.3x** [torch]" in gpu
    assert "1.30 / 1.00 ms = 1.30" in gpu and "1.05 / 1.00 ms = 1.05" in gpu
    assert "0.5 / 40 / 0.7" in gpu
    assert "0.20 s (0.01 ms per step of a Criteo-Kaggle epoch)" in gpu
    hybrid = next(line for line in lines if "· hybrid |" in line)
    assert "1,900 ms, **317x** [roundtrip]" in hybrid and "| - |" in hybrid  # no BK run
    assert "- NVIDIA H100 80GB HBM3 · gpu, paper's design: NVIDIA H100 80GB HBM3, commit" in text


def test_a_placement_without_dense_runs_prints_dashes():
    only = [r for r in _gpu() if r["config"]["algo"] != "dpsgd-f"]
    [row] = headline_rows(only)
    assert row.strongest is None and row.paper_style is None and row.joules is None
    assert row.flush_s == pytest.approx(0.2)  # LazyDP ran: its flush is known
    assert "| - | - |" in markdown([row])


def test_the_strongest_engine_is_the_ranked_one_not_the_fastest_run():
    """One fast run of a weaker engine (streamed under roundtrip) does not stand in for
    the baseline: the engine is chosen by rank, as the figures choose it."""
    fast_weak = [r for r in _hybrid() if r["config"].get("noise_impl") != "streamed"]
    fast_weak.append(_run("dpsgd-f", 900.0, "hybrid", config={"noise_impl": "streamed"}))
    [row] = [r for r in headline_rows(fast_weak) if r.placement == "hybrid"]
    assert row.strongest_engine == "roundtrip"
    assert row.strongest.top == pytest.approx(1900.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "usage: python3 scripts/headline.py"), (["/nonexistent/runs.jsonl"], "error:")],
)
def test_the_script_refuses_bad_input_in_one_line(args, message):
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "headline.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 2
    assert res.stderr.startswith(message) and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr and res.stdout == ""
