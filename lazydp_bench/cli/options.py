"""The options of one measured run, defined once for `run` and `sweep`.

Each option is an `Annotated` type with its help text and default (`SHARED`);
`with_run_options` adds all of them to a command's signature, which typer reads, and
hands the command one `RunConfig` (`base_config`: every value that is not a sweep axis),
so a run and a sweep point built from the same flags are the same configuration. The
axes (algorithm, workload, size, batch, pooling, distribution, placement) are the
commands' own options: single values in `run` (the algorithm a comma list), comma lists
in `sweep`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from lazydp_bench.algorithms import ALGORITHMS
from lazydp_bench.cli.edge import err_console, user_errors
from lazydp_bench.config import (
    DataConfig,
    EvalConfig,
    LRSchedule,
    PrivacyConfig,
    RunConfig,
    SparsityConfig,
)
from lazydp_bench.units import parse_size

Opt = typer.Option

ALGO_HELP = "Comma list of algorithms: " + ", ".join(ALGORITHMS)
CUDA_GRAPH_HELP = (
    "auto: on gpu or hybrid placement with --no-breakdown, capture one step's GPU work as a "
    "CUDA graph and replay it (launch overhead gone; hybrid host work runs after each "
    "replay); on: require it; off: eager steps."
)
DEFAULT_ALGOS = "sgd,dpsgd-f,lazydp"

Iterations = Annotated[
    int, Opt(help="Measured steps (with --warmup at most 1,000,000; see --max-seconds).")
]
Warmup = Annotated[int, Opt(help="Unmeasured steps before measuring.")]

SEED_MAX = 2**63 - 1


def seed_in_range(value: int) -> int:
    """A seed is a non-negative signed 64-bit integer. Checked by this callback, not a
    click range: a range's bounds print beside the option in every command's help and
    squeeze the help column at 80 columns."""
    if not 0 <= value <= SEED_MAX:
        raise typer.BadParameter(f"{value} is not in the range 0<=x<=2^63-1")
    return value


Seed = Annotated[
    int, Opt(help="Seed for init, data and noise (0 to 2^63-1).", callback=seed_in_range)
]
Lr = Annotated[float, Opt(help="Learning rate (plain SGD, no momentum).")]
LrDecay = Annotated[float, Opt(help="lr_t = lr / (1 + decay * t).")]
Momentum = Annotated[float, Opt(help="Refused unless 0: LazyDP needs plain SGD.")]
WeightDecay = Annotated[float, Opt(help="Refused unless 0: LazyDP needs plain SGD.")]
ClipNorm = Annotated[float, Opt(help="Per-example clipping norm C.")]
NoiseMultiplier = Annotated[
    float | None, Opt(help="sigma; if omitted, derived from --epsilon/--delta (Opacus RDP).")
]
Epsilon = Annotated[
    float | None, Opt(help="Target epsilon for deriving sigma (default 50; not with sigma).")
]
Delta = Annotated[float, Opt(help="Target delta.")]
DatasetSize = Annotated[int, Opt(help="Examples in one epoch (sample rate = batch / this).")]
Epochs = Annotated[float, Opt(help="Epochs of the full training run being accounted.")]
Clipping = Annotated[
    str | None,
    Opt(help="Clipping mode of the private algorithms: materialize, reweight, ghost, bookkeeping."),
]
NoiseImpl = Annotated[
    str,
    Opt(
        help="Dense noise engine: auto, torch (chunked), fused (Triton on a GPU, host threads "
        "for a host table), roundtrip (hybrid: a host table's rows go up to the GPU, get "
        "their noise there and come back; auto's choice there), streamed (hybrid: the noise "
        "drawn on the GPU, copied down and added by host threads), host-philox (a host table's "
        "noise drawn and added by compiled C, the fused kernel's stream)."
    ),
]
Breakdown = Annotated[bool, Opt(help="Time each stage (--no-breakdown: end-to-end only).")]
CudaGraph = Annotated[str, Opt(help=CUDA_GRAPH_HELP)]
ChunkSize = Annotated[str, Opt(help="Bound on any noise buffer.")]
HostThreads = Annotated[int | None, Opt(help="Threads for host noise/init (default: all cores).")]
HostMemLimit = Annotated[str | None, Opt(help="Host RAM to plan with (default: MemAvailable).")]
Dtype = Annotated[str, Opt(help="float32, or float64 for exactness studies.")]
MaxSeconds = Annotated[
    float | None, Opt(help="Budget for the measured steps (at least 3 steps run).")
]
CpuTdp = Annotated[
    float | None,
    Opt(
        help="Rated power (W) of this machine's CPUs, for the host energy estimate where "
        "RAPL is unreadable; used as given (on a VM: its share of the socket's TDP). "
        "Default: a table by CPU model, scaled to this machine's share of the socket."
    ),
]
Data = Annotated[
    str | None,
    Opt(
        help="Train on Criteo TSV files instead of synthetic batches: criteo:PATH[,PATH...] "
        "(files, plain or gzip, or folders of day_* files or a train.txt); needs a "
        "Criteo-shaped workload (26 tables, 13 dense), e.g. criteo-kaggle."
    ),
]
Categorical = Annotated[
    str | None,
    Opt(
        help="With --data: ids to rows by hash (id modulo the table's rows; the default) or "
        "vocab (ids ranked by frequency in a first pass; rare ones fold modulo)."
    ),
]
DenseTransform = Annotated[
    str | None,
    Opt(
        help="With --data: dlrm (log(max(x, 0) + 1); the default) or torchrec "
        "(log(x - min + 2), min over the data)."
    ),
]
OnBadLine = Annotated[
    str | None,
    Opt(
        help="With --data: error (the default: file and line, before training starts) or "
        "skip (bad lines are dropped and counted in the record)."
    ),
]
DataReader = Annotated[
    str,
    Opt(
        help="With --data: where the reader parses: auto (a child process when batches go to "
        "a GPU, else threads of this process), thread or process."
    ),
]
EvalData = Annotated[
    str | None,
    Opt(
        help="With --data: held-out Criteo files, criteo:PATH[,PATH...], never trained on; "
        "the record reports their log-loss and AUC (needs torchmetrics: the utility extra)."
    ),
]
EvalEvery = Annotated[
    int | None,
    Opt(help="With --eval-data: also evaluate every K measured steps (between timed steps)."),
]
EvalLines = Annotated[
    int | None, Opt(help="With --eval-data: evaluate on its first M lines (default: all).")
]

Tau = Annotated[
    float,
    Opt(help="dp-adafest: select a row when its noisy contribution count is >= tau (-inf: all)."),
]
C1 = Annotated[float, Opt(help="dp-adafest: each example's row counts are normalised to sum C1.")]
SelectionFraction = Annotated[
    float,
    Opt(help="dp-adafest: share f of the budget for selection (TF Privacy's split of sigma)."),
]
FestFraction = Annotated[
    float, Opt(help="dp-fest, dp-adafest-plus: fraction of each table's rows kept (top-k).")
]


def out_dir(text: str | Path) -> Path:
    """A results directory; an empty path would silently mean the current directory."""
    if not str(text).strip():
        raise typer.BadParameter("needs a directory, got an empty path")
    return Path(text)


def base_config(
    *,
    iterations: int,
    warmup: int,
    seed: int,
    lr: float,
    lr_decay: float,
    momentum: float,
    weight_decay: float,
    clip_norm: float,
    noise_multiplier: float | None,
    epsilon: float | None,
    delta: float,
    dataset_size: int,
    epochs: float,
    clipping: str | None,
    noise_impl: str,
    breakdown: bool,
    cuda_graph: str,
    chunk_size: str,
    host_threads: int | None,
    host_mem_limit: str | None,
    dtype: str,
    max_seconds: float | None,
    cpu_tdp: float | None = None,
    data: str | None = None,
    categorical: str | None = None,
    dense_transform: str | None = None,
    on_bad_line: str | None = None,
    data_reader: str = "auto",
    eval_data: str | None = None,
    eval_every: int | None = None,
    eval_lines: int | None = None,
    tau: float = 1.0,
    c1: float = 1.0,
    selection_fraction: float = 0.5,
    fest_fraction: float = 0.01,
) -> RunConfig:
    """The RunConfig of every option that is not an axis (axes keep their defaults)."""
    data_config = DataConfig.parse(
        data,
        categorical=categorical,
        dense_transform=dense_transform,
        on_bad_line=on_bad_line,
    )
    return RunConfig(
        iterations=iterations,
        warmup=warmup,
        seed=seed,
        lr=LRSchedule(lr, lr_decay, momentum, weight_decay),
        privacy=PrivacyConfig(
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            epsilon=epsilon,
            delta=delta,
            dataset_size=dataset_size,
            epochs=epochs,
        ),
        clipping=clipping,
        noise_impl=noise_impl,
        breakdown=breakdown,
        cuda_graph=cuda_graph,
        chunk_bytes=parse_size(chunk_size),
        host_threads=host_threads,
        host_mem_limit=parse_size(host_mem_limit) if host_mem_limit else None,
        dtype=dtype,
        max_seconds=max_seconds,
        cpu_tdp_w=cpu_tdp,
        data=data_config,
        data_reader=data_reader,
        evaluation=EvalConfig.parse(
            eval_data, every=eval_every, lines=eval_lines, data=data_config
        ),
        sparsity=SparsityConfig(tau, c1, selection_fraction, fest_fraction),
    )


# name, option, default: every run option that is not a sweep axis, in --help order
SHARED: tuple[tuple[str, Any, Any], ...] = (
    ("iterations", Iterations, 10),
    ("warmup", Warmup, 3),
    ("seed", Seed, 0),
    ("lr", Lr, 0.01),
    ("lr_decay", LrDecay, 0.0),
    ("momentum", Momentum, 0.0),
    ("weight_decay", WeightDecay, 0.0),
    ("clip_norm", ClipNorm, 0.4),
    ("noise_multiplier", NoiseMultiplier, None),
    ("epsilon", Epsilon, None),
    ("delta", Delta, 1e-5),
    ("dataset_size", DatasetSize, 45_840_617),
    ("epochs", Epochs, 1.0),
    ("clipping", Clipping, None),
    ("noise_impl", NoiseImpl, "auto"),
    ("breakdown", Breakdown, True),
    ("cuda_graph", CudaGraph, "auto"),
    ("chunk_size", ChunkSize, "256MiB"),
    ("host_threads", HostThreads, None),
    ("host_mem_limit", HostMemLimit, None),
    ("dtype", Dtype, "float32"),
    ("max_seconds", MaxSeconds, None),
    ("cpu_tdp", CpuTdp, None),
    ("data", Data, None),
    ("categorical", Categorical, None),
    ("dense_transform", DenseTransform, None),
    ("on_bad_line", OnBadLine, None),
    ("data_reader", DataReader, "auto"),
    ("eval_data", EvalData, None),
    ("eval_every", EvalEvery, None),
    ("eval_lines", EvalLines, None),
    ("tau", Tau, 1.0),
    ("c1", C1, 1.0),
    ("selection_fraction", SelectionFraction, 0.5),
    ("fest_fraction", FestFraction, 0.01),
)


def warn_host_limit(limit: int | None) -> None:
    """Say when --host-mem-limit is above the RAM the kernel reports: plans made with it
    may not fit (warned, not refused: some virtual machines grow MemTotal on use)."""
    from lazydp_bench.placement.layout import host_total_bytes
    from lazydp_bench.units import format_bytes

    total = host_total_bytes()
    if limit is not None and limit > total:
        err_console.print(
            f"[yellow]warning:[/] --host-mem-limit {format_bytes(limit)} is above this "
            f"machine's RAM ({format_bytes(total)} MemTotal now); runs planned to fit it may "
            "be killed for memory",
            highlight=False,
            soft_wrap=True,
        )


def with_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a typer command every option in `SHARED`, after its own; the command takes
    them as one keyword argument, `base: RunConfig`, instead of one parameter each."""
    own = [
        p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "base"
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, kind, default in SHARED
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        options = {name: values.pop(name) for name, _, _ in SHARED}
        with user_errors():  # RunConfig checks its values: bad input is one line, exit 2
            base = base_config(**options)
        warn_host_limit(base.host_mem_limit)
        return command(base=base, **values)

    del wrapper.__wrapped__  # typer must read the wrapper's signature, not the command's
    wrapper.__signature__ = inspect.Signature([*own, *shared])
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return wrapper
