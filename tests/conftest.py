"""Shared fixtures: tiny workloads and helpers that build a ready-to-step session."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lazydp_bench.config import LRSchedule, PrivacyConfig, RunConfig
from lazydp_bench.trainer import build_session, plan_run

torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_workloads(monkeypatch):
    monkeypatch.setenv("LAZYDP_BENCH_WORKLOADS", str(ROOT / "workloads"))


def tiny_config(algo: str = "sgd", **kw) -> RunConfig:
    """fp64 config on the tiny workload (pooling 3, duplicate rows in bags) with explicit sigma."""
    privacy = PrivacyConfig(
        clip_norm=kw.pop("clip_norm", 0.05),
        noise_multiplier=kw.pop("noise_multiplier", 1.0),
        noise_mode=kw.pop("noise_mode", "gaussian"),
    )
    base = RunConfig(
        algo=algo,
        workload="tiny",
        table_size=None,
        placement="cpu",
        iterations=kw.pop("iterations", 4),
        warmup=kw.pop("warmup", 0),
        seed=kw.pop("seed", 0),
        lr=kw.pop("lr", None)
        if isinstance(kw.get("lr"), LRSchedule)
        else LRSchedule(kw.pop("lr", 0.5), kw.pop("lr_decay", 0.0)),
        privacy=privacy,
        dtype=kw.pop("dtype", "float64"),
        noise_impl=kw.pop("noise_impl", "torch"),
        host_threads=2,
    )
    return replace(base, **kw)


def tiny_session(algo: str = "sgd", **kw):
    return build_session(plan_run(tiny_config(algo, **kw)))
