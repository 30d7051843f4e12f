"""Planning a sharded run: per-rank memory (a table that fits only sharded is planned as
such), what a sharded run refuses, and sweep identities of one-rank points unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lazydp_bench.config import PrivacyConfig, RunConfig
from lazydp_bench.errors import BenchError, DoesNotFit
from lazydp_bench.placement.layout import MemoryLimits
from lazydp_bench.runtime.sharded_trainer import plan_point
from lazydp_bench.sweep.runner import grid_configs, point_key

BASE = RunConfig(
    algo="lazydp",
    workload="rmc1",
    table_size="2GB",
    placement="gpu",
    privacy=PrivacyConfig(noise_multiplier=1.0),  # no sigma search: planning stays fast
)


def _limits(gpu_bytes: int) -> MemoryLimits:
    return MemoryLimits(gpu_bytes=gpu_bytes, host_bytes=2**40, host_source="test")


def test_a_table_that_fits_only_sharded_is_planned_sharded():
    whole = plan_point(BASE, _limits(2**40)).needs["gpu"].gpu_bytes
    assert whole > 2e9  # the whole 2 GB table and its history on one GPU
    limits = _limits(int(0.7 * whole))
    with pytest.raises(DoesNotFit):
        plan_point(BASE, limits)
    for gpus in (2, 4):
        plan = plan_point(replace(BASE, gpus=gpus), limits)
        per_rank = plan.needs["gpu"].gpu_bytes
        # each rank holds ~1/N of the table and history, plus its collectives' buffers
        assert whole / gpus < per_rank < 0.7 * whole
    with pytest.raises(DoesNotFit, match=r"per rank, 2 ranks"):
        plan_point(replace(BASE, gpus=2), _limits(int(0.3 * whole)))


def test_auto_placement_of_a_sharded_run():
    plan = plan_point(replace(BASE, placement="auto", gpus=2), _limits(2**40))
    assert plan.placement == "gpu"
    no_gpu = MemoryLimits(gpu_bytes=None, host_bytes=2**40, host_source="test")
    assert plan_point(replace(BASE, placement="auto", gpus=2), no_gpu).placement == "cpu"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algo": "eana"}, "has no sharded step"),
        ({"placement": "hybrid"}, "ranks compute on cpu or gpu"),
        ({"noise_impl": "fused"}, "--noise-impl applies to one-process runs"),
        ({"cuda_graph": "on"}, "--cuda-graph on"),
        ({"batch_size": 1}, "cannot be split into 2 example groups"),
    ],
)
def test_sharded_refusals(change, message):
    with pytest.raises(BenchError, match=message):
        plan_point(replace(BASE, gpus=2, **change), _limits(2**40))


def test_gpus_below_one_is_refused():
    with pytest.raises(BenchError, match="--gpus must be at least 1, got 0"):
        replace(BASE, gpus=0)


def test_sweep_grid_has_a_gpus_axis():
    points = grid_configs(BASE, [{"gpus": (1, 2)}])
    assert [p.gpus for p in points] == [1, 2]
    assert point_key(points[0]) != point_key(points[1])
    data = BASE.to_dict()
    del data["gpus"]  # a record written before --gpus
    assert RunConfig.from_dict(data).gpus == 1
