"""Shared fixtures: tiny workloads and helpers that build a ready-to-step session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lazydp_bench.config import RunConfig
from lazydp_bench.runtime.trainer import build_session, plan_run
from lazydp_bench.runtime.verify import tiny_config as verify_config

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_workloads(monkeypatch):
    monkeypatch.setenv("LAZYDP_BENCH_WORKLOADS", str(ROOT / "workloads"))


def tiny_config(algo: str = "sgd", **kw) -> RunConfig:
    """verify's tiny fp64 config, on the CPU, 4 steps, the torch noise engine by default."""
    kw.setdefault("noise_impl", "torch")
    if "noise_multiplier" in kw:
        kw["sigma"] = kw.pop("noise_multiplier")
    return verify_config(algo, "cpu", kw.pop("iterations", 4), kw.pop("seed", 0), **kw)


def tiny_session(algo: str = "sgd", **kw):
    return build_session(plan_run(tiny_config(algo, **kw)))


def force_delivery(monkeypatch, mode: str) -> None:
    """Make the cpu placement deliver LazyDP's owed noise as `mode` (in-place: gpu,
    carried: hybrid, merged: cpu), so each delivery is checked on a CPU."""
    from lazydp_bench.placement.base import InPlace, Merged
    from lazydp_bench.placement.cpu import CpuPlacement
    from lazydp_bench.placement.hybrid import Carried

    kind = {"in-place": InPlace, "merged": Merged, "carried": Carried}[mode]
    monkeypatch.setattr(CpuPlacement, "owed_noise_delivery", lambda *_: kind())


def cli(*args: str, cwd=None, columns: int = 160) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, as a user runs it, at a `columns`-wide terminal."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": str(columns),
        "OMP_NUM_THREADS": "2",
    }
    return subprocess.run(
        [sys.executable, "-m", "lazydp_bench", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )
