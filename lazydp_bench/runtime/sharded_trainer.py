"""`run --gpus N`: plan a row-wise sharded run per rank, launch N ranks, measure, and
return one record.

Planning sizes every rank by the largest shard (rank 0 holds ceil(rows / N) of every
table) plus what its collectives receive, so a table that fits only sharded is planned
as sharded; the single-process fit check is not applied. Each rank times its steps
(`sync_wall`: stage boundaries synchronize its device); a data-parallel step ends when
its slowest rank does, so the record's step time is the per-step maximum over ranks, and
the stage breakdown is rank 0's. The record carries the world size, the sharding, the
example groups and each rank's memory.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from dataclasses import replace

import torch
import torch.distributed as dist

from lazydp_bench.config import RunConfig
from lazydp_bench.dp.privacy import PrivacyPlan
from lazydp_bench.errors import BenchError, DoesNotFit
from lazydp_bench.measure.host_memory import host_peak_bytes, reset_host_peak
from lazydp_bench.measure.profiling import StageTimer, summarize_stages
from lazydp_bench.placement.base import MemoryNeed
from lazydp_bench.placement.layout import (
    MemoryLimits,
    estimate_need,
    explain_misfit,
    fits,
    machine_limits,
)
from lazydp_bench.placement.sharding import RowWiseLayout, ceil_div
from lazydp_bench.runtime.distributed import Rank, spawn
from lazydp_bench.runtime.gpus import is_lead
from lazydp_bench.runtime.sharded_session import (
    ShardedSession,
    ShardedSpec,
    check_groups,
    sharded_update,
)
from lazydp_bench.runtime.trainer import DTYPES_BYTES, RunPlan, execute, plan_run, step_timing

SHARDING = "row-wise"
UNLIMITED = MemoryLimits(gpu_bytes=2**62, host_bytes=2**62, host_source="sharded plan")


def _refuse_unsupported(config: RunConfig) -> None:
    sharded_update(config.algo)
    if config.data is not None:
        raise BenchError("--gpus > 1 trains on synthetic batches; --data runs on one process")
    if config.noise_impl != "auto":
        raise BenchError(
            "--gpus > 1 draws noise keyed by global (row, column) with its own engine; "
            "--noise-impl applies to one-process runs"
        )
    if config.cuda_graph == "on":
        raise BenchError("--cuda-graph on: a sharded step exchanges rows with host-sized splits")


def rank_need(plan: RunPlan, world: int) -> MemoryNeed:
    """One rank's memory: the largest shard (with its history table), the replicated MLPs
    with one example group's activations, and what the collectives bring in (every rank's
    rows and row gradients in the worst case, the groups' MLP gradients)."""
    cfg, wl = plan.config, plan.workload
    layout = RowWiseLayout(tuple(wl.rows), world)
    shard = replace(
        wl, rows=tuple(hi - lo for lo, hi in (layout.span(0, t) for t in range(wl.num_tables)))
    )
    elem = DTYPES_BYTES[cfg.dtype]
    need = estimate_need(
        shard,
        plan.placement,
        batch=ceil_div(plan.batch_size, world),
        pooling=plan.pooling,
        elem=elem,
        chunk_bytes=cfg.chunk_bytes,
        clipping=plan.clipping,
        history_table=plan.algo.history_table,
        steps=cfg.total_steps,
    )
    lookups = plan.batch_size * wl.num_tables * plan.pooling
    comm = 2 * lookups * (8 + wl.dim * elem) + world * wl.mlp_param_count() * elem
    if plan.placement == "gpu":
        return MemoryNeed(need.gpu_bytes + comm, need.host_bytes)
    return MemoryNeed(need.gpu_bytes, need.host_bytes + comm)


def plan_sharded(
    config: RunConfig, limits: MemoryLimits | None = None, privacy: PrivacyPlan | None = None
) -> RunPlan:
    """The run's plan on `config.gpus` ranks, every rank's need checked against one
    device's memory (each rank has its own GPU; on the host, the ranks share it). `auto`
    placement means gpu where the limits name a GPU, else cpu."""
    world = config.gpus
    _refuse_unsupported(config)
    limits = limits or machine_limits(config.host_mem_limit)
    if config.placement == "auto":
        config = replace(config, placement="gpu" if limits.gpu_bytes is not None else "cpu")
    if config.placement not in ("cpu", "gpu"):
        raise BenchError(f"a sharded run's ranks compute on cpu or gpu, not {config.placement!r}")
    plan = plan_run(config, limits=UNLIMITED, privacy=privacy)
    check_groups(plan.batch_size, world, world)
    need = rank_need(plan, world)
    shared = MemoryNeed(need.gpu_bytes, need.host_bytes * world)  # host RAM is shared
    if not fits(shared, limits):
        text = explain_misfit(plan.placement, shared, limits)
        raise DoesNotFit(
            f"{text} (per rank, {world} ranks)", plan.placement, need.gpu_bytes, need.host_bytes
        )
    return replace(plan, needs={**plan.needs, plan.placement: need}, limits=limits)


def plan_point(
    config: RunConfig, limits: MemoryLimits | None = None, privacy: PrivacyPlan | None = None
) -> RunPlan:
    """`plan_run`, or `plan_sharded` for a run on several ranks (`config.gpus` > 1)."""
    if config.gpus > 1:
        return plan_sharded(config, limits, privacy)
    return plan_run(config, limits, privacy)


def execute_point(plan: RunPlan) -> dict | None:
    """`execute`, or `execute_sharded` for a run on several ranks."""
    if plan.config.gpus > 1:
        return execute_sharded(plan)
    return execute(plan)


def _measure_rank(me: Rank, spec: ShardedSpec, cfg: RunConfig, out: str) -> None:
    cuda = me.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(me.device)
    reset_host_peak()
    t0 = time.perf_counter()
    session = ShardedSession(spec, me)
    init_s = time.perf_counter() - t0
    timer = StageTimer("sync_wall", cfg.breakdown, device=me.device if cuda else None)
    for t in range(cfg.warmup):
        session.step(t, timer)
    session.comm.barrier()
    timer.enabled = True
    for t in range(cfg.warmup, cfg.warmup + cfg.iterations):
        timer.begin_step()
        session.step(t, timer)
        timer.end_step()
    step_ms, per_step = timer.finish()
    if cuda:
        torch.cuda.synchronize(me.device)
    start = time.perf_counter()
    session.finalize()
    if cuda:
        torch.cuda.synchronize(me.device)
    flush_ms = (time.perf_counter() - start) * 1e3 if spec.algo == "lazydp" else None
    mine = {
        "rank": me.rank,
        "device": str(me.device),
        "shard_rows": session.layout.shard_rows(me.rank),
        **session.table.memory_bytes(),
        "gpu_peak_bytes": torch.cuda.max_memory_allocated(me.device) if cuda else None,
        "host_peak_bytes": host_peak_bytes(),
        "init_s": init_s,
        "flush_ms": flush_ms,
        "step_ms": step_ms,
        "per_step": per_step,
    }
    ranks = [None] * me.world
    if me.world > 1:
        dist.all_gather_object(ranks, mine)
    else:
        ranks = [mine]
    if me.rank == 0:
        torch.save(ranks, out)


def execute_sharded(plan: RunPlan) -> dict | None:
    """Run the plan on `config.gpus` ranks and return its record (a failure is a record
    too); None on a torchrun rank above 0."""
    from lazydp_bench.runtime.trainer import _base_record

    world = plan.config.gpus
    record = _base_record(plan)
    record["config"].update(gpus=world, sharding=SHARDING, example_groups=world)
    record["noise"] = _noise_section() if plan.algo.private else None
    spec = ShardedSpec.from_plan(plan, world)
    try:
        with tempfile.TemporaryDirectory(prefix="lazydp-run-") as tmp:
            out = os.path.join(tmp, "ranks.pt")
            use_cuda = plan.placement == "gpu"
            spawn(_measure_rank, world, spec, plan.config, out, use_cuda=use_cuda)
            if not is_lead():  # a torchrun rank above 0: rank 0 writes the record
                return None
            ranks = torch.load(out)
        _fill(record, plan, ranks)
        record["status"] = "ok"
    except Exception as exc:  # a failed run is a record, never a lost sweep
        text = str(exc).strip().splitlines()
        oom = "out of memory" in str(exc).lower()
        record.update(
            status="oom" if oom else "error",
            error=f"{type(exc).__name__}: {text[0] if text else ''}",
        )
        if not oom:
            record["traceback"] = traceback.format_exc(limit=8)
    return record


def _noise_section() -> dict:
    engine = {
        "engine": "global-keyed (torch ops)",
        "rng": "Philox-4x32-10, counter = global element index // 4; Box-Muller (float64)",
        "key_bits": "64-bit key = (seed, step, stream); element = global row * dim + column",
    }
    return {"impl": "global-keyed", "table": engine, "mlp": engine, "queue": engine}


def _fill(record: dict, plan: RunPlan, ranks: list[dict]) -> None:
    step_ms = [max(steps) for steps in zip(*(r["step_ms"] for r in ranks), strict=True)]
    flush = ranks[0]["flush_ms"]
    if flush is not None:
        flush = max(r["flush_ms"] for r in ranks)
    record["timing"].update(
        step_timing(plan, step_ms, flush, plan.config.total_steps),
        mode="sync_wall",
        init_s=max(r["init_s"] for r in ranks),
        step_ms_rank_max=True,
        cuda_graph=False,
        cuda_graph_blocker="a sharded step exchanges rows with host-sized all-to-all splits",
    )
    record["config"]["iterations_measured"] = len(step_ms)
    breakdown = plan.config.breakdown
    record["stages"] = (
        [s.to_dict() for s in summarize_stages(ranks[0]["per_step"])] if breakdown else []
    )
    per_rank = [
        {
            k: r[k]
            for k in (
                "rank",
                "device",
                "shard_rows",
                "shard_bytes",
                "history_table_bytes",
                "gpu_peak_bytes",
                "host_peak_bytes",
            )
        }
        for r in ranks
    ]
    gpu = [r["gpu_peak_bytes"] for r in per_rank if r["gpu_peak_bytes"] is not None]
    record["memory"].update(
        per_rank=per_rank,
        gpu_peak_bytes=max(gpu) if gpu else None,
        host_peak_bytes=sum(r["host_peak_bytes"] or 0 for r in per_rank) or None,
        host_peak_scope="sum over ranks",
        history_table_bytes=(
            sum(r["history_table_bytes"] for r in per_rank) if plan.algo.history_table else None
        ),
    )
