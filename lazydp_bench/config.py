"""Run configuration: frozen, validated dataclasses built by the CLI (or tests, or sweeps).

Every default that changes a measurement lives here, next to its reason, so a record's
`config` block fully describes the run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from lazydp_bench.errors import BenchError
from lazydp_bench.measure.cpu_power import check_cpu_tdp

PLACEMENTS = ("auto", "gpu", "hybrid", "hybrid-host", "cpu")
NOISE_IMPLS = ("auto", "torch", "fused", "streamed", "roundtrip", "host-philox")
NOISE_MODES = ("gaussian", "unit", "off")
DTYPES = ("float32", "float64")
CUDA_GRAPH_MODES = ("auto", "on", "off")
DEFAULT_CHUNK_BYTES = 256 * 2**20  # bound on any noise buffer: never table-sized
MIN_CHUNK_BYTES = 4096  # one page: smaller chunks only add per-chunk overhead


def _check(flag: str, value: float, *, low: float, inclusive: bool = False) -> None:
    """A finite number above `low` (or at it, `inclusive`): nan and inf are refused, since
    they would run and record nonsense, or hang an accountant."""
    ok = math.isfinite(value) and (value >= low if inclusive else value > low)
    if not ok:
        bound = ">=" if inclusive else ">"
        raise BenchError(f"{flag} must be a finite number {bound} {low:g}, got {value}")


@dataclass(frozen=True)
class LRSchedule:
    """lr_t = base / (1 + decay * t). decay=0 is the paper's constant learning rate.

    LazyDP stays exact under any schedule because it aggregates pending noise with a
    prefix sum of lr_t^2 (see algorithms/lazydp.py).
    """

    base: float = 0.01
    decay: float = 0.0
    momentum: float = 0.0  # every algorithm here is plain SGD; non-zero values are refused
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check("--lr", self.base, low=0.0)
        _check("--lr-decay", self.decay, low=0.0, inclusive=True)
        _check("--momentum", self.momentum, low=0.0, inclusive=True)
        _check("--weight-decay", self.weight_decay, low=0.0, inclusive=True)

    def lr(self, step: int) -> float:
        return self.base / (1.0 + self.decay * step)

    def rates(self, steps: np.ndarray) -> np.ndarray:
        """`lr` of every step in `steps` at once, bit-equal to `lr` (float64, same
        operations): per-step schedules of many steps are built in milliseconds."""
        return self.base / (1.0 + self.decay * steps.astype(np.float64))


CATEGORICAL_MODES = ("hash", "vocab")
DENSE_TRANSFORMS = ("dlrm", "torchrec")
BAD_LINE_MODES = ("error", "skip")
DATA_READERS = ("auto", "thread", "process")  # data/criteo.py: reader_mode


@dataclass(frozen=True)
class DataConfig:
    """Training data read from Criteo TSV files instead of drawn (`--data criteo:...`):
    the files or folders, how ids become rows (`hash` or a frequency `vocab`), how dense
    ints become features (`dlrm` or `torchrec`), and what a malformed line does."""

    paths: tuple[str, ...]
    categorical: str = "hash"
    dense_transform: str = "dlrm"
    on_bad_line: str = "error"

    def __post_init__(self) -> None:
        if not self.paths or not all(str(p).strip() for p in self.paths):
            raise BenchError("--data criteo: needs one or more paths, e.g. criteo:train.txt")
        for flag, value, valid in (
            ("--categorical", self.categorical, CATEGORICAL_MODES),
            ("--dense-transform", self.dense_transform, DENSE_TRANSFORMS),
            ("--on-bad-line", self.on_bad_line, BAD_LINE_MODES),
        ):
            if value not in valid:
                raise BenchError(f"unknown {flag} {value!r} (valid: {', '.join(valid)})")

    @property
    def label(self) -> str:
        return "criteo:" + ",".join(self.paths)

    @classmethod
    def parse(
        cls,
        spec: str | None,
        *,
        categorical: str | None = None,
        dense_transform: str | None = None,
        on_bad_line: str | None = None,
    ) -> DataConfig | None:
        """`--data criteo:PATH[,PATH...]` and its options; None (synthetic data) without
        `--data`, where the data options are refused rather than ignored."""
        options = {
            "categorical": categorical,
            "dense_transform": dense_transform,
            "on_bad_line": on_bad_line,
        }
        given = {k: v for k, v in options.items() if v is not None}
        if spec is None:
            if given:
                flag = "--" + next(iter(given)).replace("_", "-")
                raise BenchError(f"{flag} applies to --data criteo:PATH, not to synthetic data")
            return None
        kind, sep, rest = spec.partition(":")
        if kind.strip().lower() != "criteo" or not sep:
            raise BenchError(f"--data takes criteo:PATH[,PATH...], got {spec!r}")
        paths = tuple(p.strip() for p in rest.split(",") if p.strip())
        return cls(paths=paths, **given)


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation of a `--data` run (`--eval-data criteo:PATH[,PATH...]`): the
    first `lines` good lines of files the run does not train on (None: all of them), the
    model evaluated on them every `every` measured steps (None: only at the end) and at
    the end, outside the timed steps."""

    paths: tuple[str, ...]
    every: int | None = None
    lines: int | None = None

    def __post_init__(self) -> None:
        if not self.paths or not all(str(p).strip() for p in self.paths):
            raise BenchError("--eval-data criteo: needs one or more paths, e.g. criteo:eval.txt")
        for flag, value in (("--eval-every", self.every), ("--eval-lines", self.lines)):
            if value is not None and value < 1:
                raise BenchError(f"{flag} must be positive, got {value}")

    @classmethod
    def parse(
        cls,
        spec: str | None,
        *,
        every: int | None = None,
        lines: int | None = None,
        data: DataConfig | None = None,
    ) -> EvalConfig | None:
        """`--eval-data` and its options; None without it, where they are refused."""
        if spec is None:
            for flag, value in (("--eval-every", every), ("--eval-lines", lines)):
                if value is not None:
                    raise BenchError(f"{flag} applies to --eval-data criteo:PATH (held-out lines)")
            return None
        if data is None:
            raise BenchError("--eval-data evaluates a --data criteo:PATH run, not synthetic data")
        kind, sep, rest = spec.partition(":")
        if kind.strip().lower() != "criteo" or not sep:
            raise BenchError(f"--eval-data takes criteo:PATH[,PATH...], got {spec!r}")
        paths = tuple(p.strip() for p in rest.split(",") if p.strip())
        return cls(paths=paths, every=every, lines=lines)


@dataclass(frozen=True)
class SparsityConfig:
    """DP-FEST and DP-AdaFEST's knobs (Ghazi et al., "Sparsity-Preserving Differentially
    Private Training of Large Embedding Models", NeurIPS 2023, arXiv 2311.08357).

    `tau`: AdaFEST's selection threshold on a row's noisy contribution count (each
    example's counts normalised to sum `c1`); -inf selects every row. `c1`: that L1 bound.
    `selection_fraction`: the share f of the privacy budget spent on selection, TF
    Privacy's `sparse_selection_privacy_budget_fraction` (see `dp/selection.py`).
    `fest_fraction`: DP-FEST keeps this fraction of each table's rows, most frequent first.
    """

    tau: float = 1.0
    c1: float = 1.0
    selection_fraction: float = 0.5
    fest_fraction: float = 0.01

    def __post_init__(self) -> None:
        if math.isnan(self.tau) or self.tau == math.inf:
            raise BenchError(f"--tau must be a number below inf (-inf selects all), got {self.tau}")
        _check("--c1", self.c1, low=0.0)
        if not 0 < self.selection_fraction < 1:
            raise BenchError(
                f"--selection-fraction must be in (0, 1), got {self.selection_fraction}"
            )
        if not (math.isfinite(self.fest_fraction) and 0 < self.fest_fraction <= 1):
            raise BenchError(f"--fest-fraction must be in (0, 1], got {self.fest_fraction}")


MAX_STEPS = 10**6  # warm-up + measured steps of one run: schedules of ~50 MB per device
DEFAULT_EPSILON = 50.0  # the paper's


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD's knobs. Either a noise multiplier, or a target (epsilon, delta) from which
    the multiplier is derived with Opacus' RDP accountant for `epochs` over
    `dataset_size` examples at sample rate batch/dataset_size.

    Defaults are the paper's: C = 0.4, epsilon = 50, delta = 1e-5, on Criteo Kaggle's
    45,840,617 examples for one epoch.
    """

    clip_norm: float = 0.4
    noise_multiplier: float | None = None
    epsilon: float | None = None  # the target when sigma is derived (default 50)
    delta: float = 1e-5
    dataset_size: int = 45_840_617
    epochs: float = 1.0
    noise_mode: str = "gaussian"

    def __post_init__(self) -> None:
        _check("--clip-norm", self.clip_norm, low=0.0)
        if self.noise_multiplier is not None:
            _check("--noise-multiplier", self.noise_multiplier, low=0.0, inclusive=True)
            if self.epsilon is not None:
                raise BenchError(
                    "give --noise-multiplier or --epsilon, not both (sigma is derived from "
                    "epsilon only when no multiplier is given)"
                )
        if self.epsilon is not None:
            _check("--epsilon", self.epsilon, low=0.0)
        if not 0 < self.delta < 1:
            raise BenchError(f"--delta must be in (0, 1), got {self.delta}")
        if self.dataset_size < 1:
            raise BenchError(f"--dataset-size must be positive, got {self.dataset_size}")
        _check("--epochs", self.epochs, low=0.0)

    @property
    def target_epsilon(self) -> float:
        return DEFAULT_EPSILON if self.epsilon is None else self.epsilon
        if self.noise_mode not in NOISE_MODES:
            raise BenchError(f"noise mode must be one of {', '.join(NOISE_MODES)}")


@dataclass(frozen=True)
class RunConfig:
    """One measured run of one algorithm on one workload point."""

    algo: str = "sgd"
    workload: str = "mlperf-dlrm"
    table_size: str | None = "96MB"  # None: the workload's full size
    batch_size: int | None = None  # None: the workload's own
    pooling: int | None = None  # None: the workload's own
    distribution: str = "uniform"
    placement: str = "auto"
    iterations: int = 10
    warmup: int = 3
    seed: int = 0
    lr: LRSchedule = field(default_factory=LRSchedule)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    clipping: str | None = None  # None: the algorithm's own mode
    noise_impl: str = "auto"
    breakdown: bool = True
    cuda_graph: str = "auto"  # auto: replay a captured step when the run allows it
    dtype: str = "float32"
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    host_threads: int | None = None  # None: every core
    host_mem_limit: int | None = None  # None: MemAvailable at start
    max_seconds: float | None = None  # time budget for the measured steps (floor: 3 steps)
    data: DataConfig | None = None  # None: synthetic batches (`distribution`)
    data_reader: str = "auto"  # where `data`'s reader parses: threads here or a process
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)  # dp-fest, dp-adafest
    evaluation: EvalConfig | None = None  # held-out log-loss and AUC (needs `data`)
    cpu_tdp_w: float | None = None  # host CPUs' rated W (None: TDP table by model name)
    gpus: int = 1  # ranks of a row-wise sharded table (runtime/sharded_trainer.py); 1: one process

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "pooling"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {self.warmup}")
        if self.gpus < 1:
            raise BenchError(f"--gpus must be at least 1, got {self.gpus}")
        if self.total_steps > MAX_STEPS:
            raise BenchError(
                f"--iterations + --warmup is {self.total_steps:,}, above {MAX_STEPS:,} steps "
                "(per-step schedules are built up front; use --max-seconds to bound a run)"
            )
        if not 0 <= self.seed < 2**63:
            raise BenchError(f"--seed must be in [0, 2**63), got {self.seed}")
        if self.placement not in PLACEMENTS:
            raise BenchError(
                f"unknown placement {self.placement!r} (valid: {', '.join(PLACEMENTS)})"
            )
        if self.noise_impl not in NOISE_IMPLS:
            raise BenchError(
                f"unknown noise impl {self.noise_impl!r} (valid: {', '.join(NOISE_IMPLS)})"
            )
        if self.cuda_graph not in CUDA_GRAPH_MODES:
            raise BenchError(
                f"unknown --cuda-graph {self.cuda_graph!r} (valid: {', '.join(CUDA_GRAPH_MODES)})"
            )
        if self.dtype not in DTYPES:
            raise BenchError(f"unknown dtype {self.dtype!r} (valid: {', '.join(DTYPES)})")
        if self.chunk_bytes < MIN_CHUNK_BYTES:
            raise BenchError("chunk bound must be at least 4 KiB")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise BenchError(f"--max-seconds must be positive, got {self.max_seconds}")
        if self.host_threads is not None and self.host_threads < 1:
            raise BenchError(f"--host-threads must be positive, got {self.host_threads}")
        if self.evaluation is not None and self.data is None:
            raise BenchError("--eval-data evaluates a --data criteo:PATH run, not synthetic data")
        if self.data_reader not in DATA_READERS:
            raise BenchError(
                f"unknown --data-reader {self.data_reader!r} (valid: {', '.join(DATA_READERS)})"
            )
        if self.data_reader != "auto" and self.data is None:
            raise BenchError("--data-reader applies to --data criteo:PATH, not to synthetic data")
        check_cpu_tdp(self.cpu_tdp_w)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.iterations

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Inverse of `to_dict` (sweep workers receive their point this way)."""
        fields = dict(data)
        fields["lr"] = LRSchedule(**fields["lr"])
        fields["privacy"] = PrivacyConfig(**fields["privacy"])
        fields["sparsity"] = SparsityConfig(**fields.get("sparsity") or {})
        if fields.get("data") is not None:
            data = fields["data"]
            fields["data"] = DataConfig(**{**data, "paths": tuple(data["paths"])})
        if fields.get("evaluation") is not None:
            ev = fields["evaluation"]
            fields["evaluation"] = EvalConfig(**{**ev, "paths": tuple(ev["paths"])})
        return cls(**fields)
