"""One measured run: validate and plan (no allocation), then init, warm up, measure, flush,
and return a complete result record.

The measured loop only launches work and records timer marks: no `.item()`, printing or
`time.time()` in it (progress callbacks run between steps; so do `--eval-every`'s
held-out evaluations, with the energy and host-CPU windows paused: `runtime/utility.py`).
The only device-to-host copies are hybrid placement's intended PCIe crossings of coalesced
row updates (`SparseOps`); on gpu placement nothing waits for the host. With
`--no-breakdown` each measured step replays one captured CUDA graph of the step's GPU work
(`graph_step.py`; in hybrid the host's table work runs after the replay, `host_work.py`).
"""

from __future__ import annotations

import gc
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass

import torch

from lazydp_bench.algorithms import AlgoContext, get_algorithm
from lazydp_bench.algorithms.base import Algorithm
from lazydp_bench.config import RunConfig
from lazydp_bench.data import SyntheticBatchSource, parse_distribution
from lazydp_bench.data.criteo import CriteoBatchSource, CriteoData, plan_data
from lazydp_bench.data.distributions import Distribution
from lazydp_bench.dp.clipping import get_clipping
from lazydp_bench.dp.noise import make_engine
from lazydp_bench.dp.noise.registry import GPU_HELPED, EngineSet
from lazydp_bench.dp.privacy import PrivacyPlan, plan_privacy
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.cpu_power import rated_power, read_host_cpu
from lazydp_bench.measure.energy import EnergyMeter
from lazydp_bench.measure.env import machine_info
from lazydp_bench.measure.host_cpu import cpu_share, cpu_times
from lazydp_bench.measure.host_memory import host_peak_bytes, reset_host_peak
from lazydp_bench.measure.profiling import StageTimer, quantiles, summarize_stages
from lazydp_bench.measure.stages import Stage
from lazydp_bench.model.dlrm import DLRM
from lazydp_bench.model.huge_pages import huge_page_bytes
from lazydp_bench.model.init import init_table
from lazydp_bench.placement.base import Placement
from lazydp_bench.placement.layout import (
    MemoryLimits,
    MemoryNeed,
    choose_placement,
    estimate_need,
    machine_limits,
)
from lazydp_bench.placement.registry import PLACEMENTS, make_placement
from lazydp_bench.records.schema import new_header
from lazydp_bench.runtime.graph_step import GraphedStep, graph_blocker
from lazydp_bench.runtime.host_work import HostWork
from lazydp_bench.runtime.sparse import SparseOps
from lazydp_bench.runtime.utility import Evaluator, HeldOut, load_heldout
from lazydp_bench.units import parse_size
from lazydp_bench.workloads import Workload, load_workload, scale_by_factor, scale_to_bytes

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DTYPES_BYTES = {"float32": 4, "float64": 8}


class Progress:
    """What the trainer reports while it works; the CLI shows it as rich progress bars."""

    def phase(self, label: str, total: int | None) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """Everything decided before any allocation: the scaled workload, placement, sigma."""

    config: RunConfig
    algo: type[Algorithm]
    clipping: str
    workload: Workload
    batch_size: int
    pooling: int
    distribution: Distribution
    placement: str
    needs: dict[str, MemoryNeed]
    limits: MemoryLimits
    privacy: PrivacyPlan | None
    threads: int
    graph_blocker: str | None  # why the run cannot replay a captured step; None: it will
    data: CriteoData | None = None  # files read instead of synthetic batches
    heldout: HeldOut | None = None  # --eval-data lines, parsed (see runtime/utility.py)


def resolve_workload(name: str, table_size: str | None, elem_bytes: int = 4) -> Workload:
    """`--table-size` is bytes ("9.6GB") or a scale factor ("x0.01"); None keeps full size."""
    wl = load_workload(name)
    if table_size is None:
        return wl
    if table_size.strip().lower().startswith("x"):
        try:
            factor = float(table_size.strip()[1:])
        except ValueError as exc:
            raise BenchError(f"cannot parse scale factor {table_size!r} (example: x0.01)") from exc
        return scale_by_factor(wl, factor)
    return scale_to_bytes(wl, parse_size(table_size), elem_bytes)


def plan_run(
    config: RunConfig,
    limits: MemoryLimits | None = None,
    privacy: PrivacyPlan | None = None,
    data: CriteoData | None = None,
    heldout: HeldOut | None = None,
) -> RunPlan:
    """Validate a config and decide everything that needs no allocation. A sweep passes the
    privacy plan it already computed, so workers skip the accountant; `run` passes the
    first algorithm's pass over the data files (and its held-out lines) to the others."""
    algo = get_algorithm(config.algo)
    clipping = config.clipping or algo.default_clipping
    get_clipping(clipping)
    if not algo.private and clipping != "none":
        raise BenchError(f"--clipping applies to private algorithms, not {algo.name!r}")
    if algo.private and clipping == "none":
        raise BenchError(f"{algo.name!r} is private: it needs a clipping mode other than 'none'")
    algo.check_optimizer(config.lr.momentum, config.lr.weight_decay)
    wl = resolve_workload(config.workload, config.table_size, DTYPES_BYTES[config.dtype])
    batch = config.batch_size or wl.batch_size
    pooling = config.pooling or wl.pooling
    dist = parse_distribution(config.distribution)
    dist.check_tables(wl.num_tables)
    limits = limits or machine_limits(config.host_mem_limit)
    elem = DTYPES_BYTES[config.dtype]
    needs = {
        p: estimate_need(
            wl,
            p,
            batch=batch,
            pooling=pooling,
            elem=elem,
            chunk_bytes=config.chunk_bytes,
            clipping=clipping,
            history_table=algo.history_table,
            steps=config.total_steps,
        )
        for p in PLACEMENTS
    }
    placement = choose_placement(config.placement, needs, limits)
    algo.check_run(config, placement=placement, clipping=clipping)
    if config.noise_impl in GPU_HELPED and not PLACEMENTS[placement].streams_table_noise:
        raise BenchError(
            f"--noise-impl {config.noise_impl} noises a host table with the GPU; placement "
            f"{placement!r} has no such table (use hybrid)"
        )
    if not algo.private:
        privacy = None
    elif privacy is None:
        privacy = plan_privacy(config.privacy, batch)
    threads = config.host_threads or os.cpu_count() or 1
    blocker = graph_blocker(
        config.cuda_graph,
        placement,
        graphable=algo.graphable,
        history_table=algo.history_table,
        breakdown=config.breakdown,
        noise_impl=config.noise_impl,
        noise_mode=config.privacy.noise_mode,
        warmup=config.warmup,
        private=algo.private,
    )
    if config.cuda_graph == "on" and blocker is not None:
        raise BenchError(f"--cuda-graph on: {blocker}")
    data = plan_data(config, wl, batch_size=batch, pooling=pooling, reuse=data)
    if config.evaluation is not None and data is not None:
        heldout = load_heldout(config.evaluation, data, reuse=heldout)
    else:
        heldout = None
    return RunPlan(
        config=config,
        algo=algo,
        clipping=clipping,
        workload=wl,
        batch_size=batch,
        pooling=pooling,
        distribution=dist,
        placement=placement,
        needs=needs,
        limits=limits,
        privacy=privacy,
        threads=threads,
        graph_blocker=blocker,
        data=data,
        heldout=heldout,
    )


MIN_MEASURED_STEPS = 3


def budget_iterations(requested: int, max_seconds: float | None, step_s: float | None) -> int:
    """Fewer measured steps when the last warm-up step says they would overrun the budget."""
    if max_seconds is None or step_s is None or step_s <= 0:
        return requested
    return max(MIN_MEASURED_STEPS, min(requested, int(max_seconds / step_s)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def execute(plan: RunPlan, progress: Progress | None = None) -> dict:
    """Run the plan and return its record; OOM and other failures become records too."""
    progress = progress or Progress()
    record = _base_record(plan)
    try:
        _measure(plan, progress, record)
        record["status"] = "ok"
    except torch.cuda.OutOfMemoryError as exc:
        record.update(status="oom", error=_first_line(exc))
    except Exception as exc:  # a failed run is a record, never a lost sweep or a traceback
        text = str(exc).lower()
        oom = "out of memory" in text or "can't allocate memory" in text
        record.update(status="oom" if oom else "error", error=_first_line(exc))
        if not oom:
            record["traceback"] = traceback.format_exc(limit=8)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass
class Session:
    """A model, its batch source and an algorithm, ready to step (used by runs and `verify`)."""

    plan: RunPlan
    placement: Placement
    model: DLRM
    source: SyntheticBatchSource | CriteoBatchSource
    algo: Algorithm
    engines: EngineSet
    host_work: HostWork  # the table's host work (a hybrid graph step runs it after replays)
    init_s: float
    table_huge_pages: bool  # the host table's memory was advised to use huge pages

    def step(self, t: int, timer: StageTimer) -> None:
        with timer.stage(Stage.DATA):
            batch = self.source.advance()
        self.algo.step(t, batch, self.source.peek(), timer)


def build_session(plan: RunPlan) -> Session:
    cfg = plan.config
    placement = make_placement(plan.placement)
    dtype = DTYPES[cfg.dtype]
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    table, huge_pages = init_table(
        plan.workload.rows, plan.workload.dim, placement.table_device, dtype, cfg.seed, plan.threads
    )
    _sync(placement.table_device)
    init_s = time.perf_counter() - t0
    model = DLRM(
        plan.workload, placement.table_device, placement.mlp_device, dtype, cfg.seed, table
    )
    source = make_batch_source(plan, placement, dtype)
    engines = make_engine(
        cfg.noise_impl, cfg.chunk_bytes, plan.threads, stream_via=placement.noise_via
    )
    host_work = HostWork()  # the table's host work: run now, or after each graph replay
    sparse = SparseOps(plan.threads, table_rows=plan.workload.total_rows, host=host_work)
    if placement.table_device.type == "cpu":
        sparse.row_adder.kernels()  # build the row-update kernel now, not in a timed step
    algo = plan.algo(
        AlgoContext(
            model=model,
            lr=cfg.lr,
            batch_size=plan.batch_size,
            clip_norm=cfg.privacy.clip_norm,
            noise_multiplier=plan.privacy.noise_multiplier if plan.privacy else 0.0,
            noise_mode=cfg.privacy.noise_mode,
            engines=engines,
            sparse=sparse,
            placement=placement,
            seed=cfg.seed,
            total_steps=cfg.total_steps,
            clipping=plan.clipping,
            sparsity=cfg.sparsity,
            distribution=plan.distribution,
        )
    )
    if plan.algo.private and not plan.algo.own_noise:  # buffers, kernels now, not timed
        engines.for_device(placement.table_device).prepare(model.table)
    return Session(plan, placement, model, source, algo, engines, host_work, init_s, huge_pages)


def make_batch_source(
    plan: RunPlan, placement: Placement, dtype: torch.dtype
) -> SyntheticBatchSource | CriteoBatchSource:
    """The session's batches: the run's data files when it has them, else synthetic draws."""
    devices = {"table_device": placement.table_device, "mlp_device": placement.mlp_device}
    if plan.data is not None:
        return CriteoBatchSource(
            plan.data,
            plan.workload.rows,
            batch_size=plan.batch_size,
            dtype=dtype,
            threads=plan.threads,
            reader=plan.config.data_reader,
            **devices,
        )
    return SyntheticBatchSource(
        plan.workload.rows,
        plan.workload.dense_features,
        batch_size=plan.batch_size,
        pooling=plan.pooling,
        distribution=plan.distribution,
        dtype=dtype,
        seed=plan.config.seed,
        **devices,
    )


def noise_section(engines: EngineSet, placement: Placement, *, queue: bool) -> dict:
    """The record's engines: `impl` as resolved (`auto` becomes streamed or fused), the
    engine of the table's dense noise, of the MLPs', and of LazyDP's queue noise (drawn
    on the work device), so every speedup can name its baseline."""

    def describe(device: torch.device) -> dict:
        return engines.for_device(device).describe(device)

    return {
        "impl": engines.impl,
        "table": describe(placement.table_device),
        "mlp": describe(placement.mlp_device),
        "queue": describe(placement.work_device) if queue else None,
    }


def _measure(plan: RunPlan, progress: Progress, record: dict) -> None:
    cfg = plan.config
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    record["memory"]["host_peak_scope"] = reset_host_peak()
    progress.phase(f"{cfg.algo}: init {plan.workload.name}", None)
    session = build_session(plan)
    placement, engines, algo = session.placement, session.engines, session.algo
    record["timing"]["init_s"] = session.init_s
    if placement.table_device.type == "cpu":
        record["timing"]["host_row_update"] = algo.ctx.sparse.row_adder.describe()
    record["memory"]["table_huge_pages_advised"] = session.table_huge_pages
    record["memory"]["host_huge_pages_bytes"] = huge_page_bytes()
    if plan.algo.private and not plan.algo.own_noise:
        record["noise"] = noise_section(engines, placement, queue=plan.algo.history_table)
    cuda = torch.device("cuda") if placement.name != "cpu" else None
    timer = StageTimer(placement.timer_mode, cfg.breakdown, device=cuda)
    host_power = rated_power(cfg.cpu_tdp_w, read_host_cpu())  # where RAPL is unreadable
    meter = EnergyMeter(use_gpu=cuda is not None, host_power=host_power)
    meter.measure_idle()

    graphed = GraphedStep(session) if plan.graph_blocker is None else None
    step = graphed.warm_step if graphed else session.step
    progress.phase(f"{cfg.algo}: warm-up", cfg.warmup)
    last_step_s = None
    for t in range(cfg.warmup):
        t0 = time.perf_counter()
        step(t, timer)
        _sync(placement.table_device)
        _sync(placement.mlp_device)
        last_step_s = time.perf_counter() - t0
        progress.advance()
    iterations = budget_iterations(cfg.iterations, cfg.max_seconds, last_step_s)
    record["config"]["iterations_measured"] = iterations
    blocker = plan.graph_blocker
    if graphed:
        progress.phase(f"{cfg.algo}: capture CUDA graph", None)
        try:
            graphed.capture()
            step = graphed.step
        except Exception as exc:  # auto falls back to eager steps and says why
            if cfg.cuda_graph == "on":
                raise
            torch.cuda.synchronize()
            blocker, step = f"capture failed: {_first_line(exc)}", session.step
    record["timing"]["cuda_graph"] = blocker is None
    record["timing"]["cuda_graph_blocker"] = blocker

    evaluator = _evaluator(plan, session)
    every = cfg.evaluation.every if evaluator is not None and cfg.evaluation else None
    progress.phase(f"{cfg.algo}: measure", iterations)
    timer.enabled = True
    meter.begin()
    cpu_start = cpu_times()
    for i, t in enumerate(range(cfg.warmup, cfg.warmup + iterations), start=1):
        timer.begin_step()
        step(t, timer)
        timer.end_step()
        progress.advance()
        if every is not None and i % every == 0 and i < iterations:
            # between timed steps: the next step's timer mark comes after it, and the
            # energy and host-CPU windows leave it out
            meter.pause()
            paused = cpu_times()
            _evaluate(session, evaluator)
            meter.resume()
            cpu_start = _shift_cpu(cpu_start, paused, cpu_times())
    step_ms, per_step = timer.finish()
    energy = meter.end(iterations, plan.batch_size)
    record["timing"]["host_cpu"] = cpu_share(cpu_start, cpu_times())

    progress.phase(f"{cfg.algo}: finalize", None)
    flush_ms = algo.finalize()
    if evaluator is not None:
        progress.phase(f"{cfg.algo}: evaluate on held-out lines", None)
        _evaluate(session, evaluator)  # after the flush: the released model
        record["utility"] = evaluator.section(every, flushed=hasattr(algo, "flush"))
    if plan.data is not None:
        record["data"] = session.source.stats()
        session.source.close()
    _fill_measurements(record, plan, step_ms, per_step, energy.to_dict(), flush_ms, algo)


def _evaluator(plan: RunPlan, session: Session) -> Evaluator | None:
    """The held-out lines as batches on the model's devices (before any timing)."""
    if plan.heldout is None or plan.data is None:
        return None
    return Evaluator(
        plan.heldout,
        plan.data,
        plan.workload.rows,
        table_device=session.placement.table_device,
        mlp_device=session.placement.mlp_device,
        dtype=DTYPES[plan.config.dtype],
    )


def _evaluate(session: Session, evaluator: Evaluator) -> dict:
    """Held-out metrics of the model as trained so far. LazyDP first pays every row its
    owed noise (`flush`, exact and idempotent), so the model evaluated is distributed as
    DP-SGD's; its noise draws differ from a flush at the end, not their distribution."""
    placement, algo = session.placement, session.algo
    _sync(placement.table_device)
    _sync(placement.mlp_device)
    flush = getattr(algo, "flush", None)
    if flush is not None:
        with torch.no_grad():
            flush()
    point = evaluator.evaluate(session.model, algo.steps_done)
    _sync(placement.table_device)
    _sync(placement.mlp_device)
    return point


def _shift_cpu(start: list[int] | None, paused, resumed) -> list[int] | None:
    """The host-CPU window's start moved later by a span left out of it."""
    if start is None or paused is None or resumed is None:
        return start
    return [s + b - a for s, a, b in zip(start, paused, resumed, strict=True)]


def step_timing(
    plan: RunPlan, step_ms: list[float], flush_ms: float | None, steps_done: int
) -> dict:
    """The record's step statistics and LazyDP's flush per step (of this run and of one
    epoch of the dataset), from the measured step times."""
    p25, med, p75, mean = quantiles(step_ms)
    epoch_steps = math.ceil(plan.config.privacy.dataset_size / plan.batch_size)
    return {
        "measured_iters": len(step_ms),
        "step_median_ms": med,
        "step_p25_ms": p25,
        "step_p75_ms": p75,
        "step_mean_ms": mean,
        "throughput_samples_per_s": plan.batch_size / (med / 1e3) if med > 0 else None,
        "step_ms_raw": step_ms,
        "flush_ms": flush_ms,
        "flush_ms_per_step": flush_ms / steps_done if flush_ms is not None else None,
        "flush_ms_per_epoch_step": flush_ms / epoch_steps if flush_ms is not None else None,
    }


def _fill_measurements(record, plan, step_ms, per_step, energy, flush_ms, algo) -> None:
    timing = record["timing"]
    timing.update(step_timing(plan, step_ms, flush_ms, algo.steps_done))
    record["stages"] = (
        [s.to_dict() for s in summarize_stages(per_step)] if plan.config.breakdown else []
    )
    record["energy"] = energy
    for section, fields in algo.record_extras().items():
        record.setdefault(section, {}).update(fields)
    memory = record["memory"]
    memory["host_peak_bytes"] = host_peak_bytes()
    if torch.cuda.is_available():
        memory["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()


def _base_record(plan: RunPlan) -> dict:
    cfg, wl = plan.config, plan.workload
    priv = plan.privacy
    privacy = {"private": plan.algo.private, "dp_equivalent": plan.algo.dp_equivalent}
    if priv is not None:
        privacy.update(priv.to_dict())
        privacy["accountant"] = "opacus rdp (+prv)"
        privacy["epsilon"] = priv.epsilon_rdp
        if not plan.algo.dp_equivalent and plan.algo.sigma_accounted:
            privacy["note"] = "NOT DP-SGD-equivalent: epsilon of its mechanisms composed at sigma"
        elif not plan.algo.dp_equivalent:
            # EANA's noise depends on the data: the DP-SGD accounting does not apply to it.
            privacy.update(epsilon=None, epsilon_rdp=None, epsilon_prv=None)
            privacy["note"] = "NOT DP-SGD-equivalent: no epsilon is reported"
    need = plan.needs[plan.placement]
    return {
        **new_header(),
        "kind": "run",
        "config": {
            "algo": cfg.algo,
            "summary": plan.algo.summary,
            "workload": wl.name,
            "table_size": cfg.table_size,
            "table_scale": wl.scale,
            "table_bytes": wl.table_bytes(DTYPES_BYTES[cfg.dtype]),
            "table_rows": wl.total_rows,
            "num_tables": wl.num_tables,
            "dim": wl.dim,
            "batch_size": plan.batch_size,
            "pooling": plan.pooling,
            "distribution": "criteo" if plan.data else plan.distribution.label,
            "data": None if cfg.data is None else {"source": "criteo", **asdict(cfg.data)},
            "placement": plan.placement,
            "placement_requested": cfg.placement,
            "gpus": cfg.gpus,  # ranks of a row-wise sharded run (runtime/sharded_trainer.py)
            "sharding": "row-wise" if cfg.gpus > 1 else None,
            "iterations": cfg.iterations,
            "warmup": cfg.warmup,
            "seed": cfg.seed,
            "lr": cfg.lr.base,
            "lr_decay": cfg.lr.decay,
            "clipping": plan.clipping,
            "noise_impl": cfg.noise_impl,
            "noise_mode": cfg.privacy.noise_mode,
            "breakdown": cfg.breakdown,
            "cuda_graph": cfg.cuda_graph,
            "dtype": cfg.dtype,
            "chunk_bytes": cfg.chunk_bytes,
            "host_threads": plan.threads,
            "loss": wl.loss,
        },
        "privacy": privacy,
        "env": machine_info(),
        "timing": {
            "mode": PLACEMENTS[plan.placement].timer_mode,
            "init_s": None,
            "host_row_update": None,  # what adds row updates to a host table
        },
        "stages": [],
        "memory": {
            "gpu_peak_bytes": None,
            "host_peak_bytes": None,
            "host_peak_scope": None,
            "history_table_bytes": None,
            "estimate_gpu_bytes": need.gpu_bytes,
            "estimate_host_bytes": need.host_bytes,
            "table_huge_pages_advised": None,
            "host_huge_pages_bytes": None,
        },
        "energy": None,
        "noise": None,
    }
