"""Workload specs (`workloads/*.toml`) and scaling them to a target embedding size.

`--table-size` scales every table's row count by one common factor so that the total
embedding bytes hit the target; the paper's 96MB / 960MB / 9.6GB / 96GB points are the
0.001 / 0.01 / 0.1 / 1 scales of the MLPerf model. Every table keeps at least one row.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from lazydp_bench.errors import BenchError

LOSSES = ("mse", "bce")


@dataclass(frozen=True)
class Workload:
    """A DLRM-style model: embedding tables plus bottom/top MLPs and batch defaults."""

    name: str
    description: str
    rows: tuple[int, ...]
    dim: int
    dense_features: int
    bottom_mlp: tuple[int, ...]
    top_mlp: tuple[int, ...]
    pooling: int
    batch_size: int
    loss: str
    scale: float = 1.0

    @property
    def num_tables(self) -> int:
        return len(self.rows)

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    def table_bytes(self, elem_bytes: int = 4) -> int:
        return self.total_rows * self.dim * elem_bytes

    @property
    def interaction_features(self) -> int:
        """Top-MLP input width: bottom output plus the pairwise dot products."""
        n = self.num_tables + 1
        return self.dim + n * (n - 1) // 2

    def mlp_param_count(self) -> int:
        count = 0
        for sizes in (
            (self.dense_features, *self.bottom_mlp),
            (self.interaction_features, *self.top_mlp),
        ):
            count += sum(a * b + b for a, b in itertools.pairwise(sizes))
        return count


def workload_dirs() -> list[Path]:
    """Where workload TOMLs are looked up, first match wins."""
    dirs = []
    if env := os.environ.get("LAZYDP_BENCH_WORKLOADS"):
        dirs.append(Path(env))
    dirs.append(Path(__file__).resolve().parents[1] / "workloads")
    dirs.append(Path(sys.prefix) / "share" / "lazydp-bench" / "workloads")
    return [d for d in dirs if d.is_dir()]


def available_workloads() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in workload_dirs():
        for path in sorted(d.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def load_workload(name_or_path: str) -> Workload:
    """Load a workload by name (from the workload dirs) or from a path to a TOML file."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        known = available_workloads()
        if name_or_path not in known:
            valid = ", ".join(sorted(known)) or "(none found)"
            raise BenchError(f"unknown workload {name_or_path!r} (valid: {valid})")
        path = known[name_or_path]
    try:
        spec = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"cannot read workload {path}: {exc}") from exc
    return _from_spec(spec, path)


def _count(value, key: str) -> int:
    """A positive whole number from the TOML, or why not (bools and 8.5 are not counts)."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:  # is_integer: False for inf and nan
        raise BenchError(f"{key} must be a positive whole number, got {value!r}")
    if value < 1:
        raise BenchError(f"{key} must be positive, got {value!r}")
    return int(value)


def _counts(value, key: str) -> tuple[int, ...]:
    """A non-empty list of positive whole numbers (no nesting)."""
    if not isinstance(value, list) or not value:
        raise BenchError(f"{key} must be a non-empty list of positive whole numbers")
    return tuple(_count(v, f"{key}[{i}]") for i, v in enumerate(value))


def _text(value, key: str) -> str:
    if not isinstance(value, str):
        raise BenchError(f"{key} must be a string, got {value!r}")
    return value


def _from_spec(spec: dict, path: Path) -> Workload:
    """The Workload a TOML describes; every field is type-checked so a bad file is one
    `invalid workload` line, never a traceback or a run that fails later."""
    required = ("name", "rows", "dim", "dense_features", "bottom_mlp", "top_mlp")
    missing = [k for k in required if k not in spec]
    if missing:
        raise BenchError(f"workload {path} lacks {', '.join(missing)}")
    try:
        wl = Workload(
            name=_text(spec["name"], "name"),
            description=_text(spec.get("description", ""), "description"),
            rows=_counts(spec["rows"], "rows"),
            dim=_count(spec["dim"], "dim"),
            dense_features=_count(spec["dense_features"], "dense_features"),
            bottom_mlp=_counts(spec["bottom_mlp"], "bottom_mlp"),
            top_mlp=_counts(spec["top_mlp"], "top_mlp"),
            pooling=_count(spec.get("pooling", 1), "pooling"),
            batch_size=_count(spec.get("batch_size", 2048), "batch_size"),
            loss=_text(spec.get("loss", "bce"), "loss"),
        )
    except BenchError as exc:
        raise BenchError(f"invalid workload {path}: {exc}") from None
    problems = []
    if wl.bottom_mlp[-1] != wl.dim:
        problems.append(f"bottom MLP must end at dim {wl.dim}")
    if wl.top_mlp[-1] != 1:
        problems.append("top MLP must end in one logit")
    if wl.loss not in LOSSES:
        problems.append(f"loss must be one of {', '.join(LOSSES)}")
    if problems:
        raise BenchError(f"invalid workload {path}: {'; '.join(problems)}")
    return wl


def scaled_rows(rows: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(r * factor)) for r in rows)


def scale_to_bytes(wl: Workload, target_bytes: int, elem_bytes: int = 4) -> Workload:
    """Scale every table by one factor so the total embedding bytes are nearest the target.

    The floor of one row per table makes bytes(factor) piecewise linear, so the factor is
    found by bisection rather than a single division.
    """
    row_bytes = wl.dim * elem_bytes
    target_rows = target_bytes / row_bytes
    if target_rows < wl.num_tables:
        need = wl.num_tables * row_bytes
        raise BenchError(
            f"table size {target_bytes} B is below {need} B, one row for each of "
            f"{wl.name}'s {wl.num_tables} tables"
        )
    lo, hi = 0.0, max(1.0, 2 * target_rows / wl.total_rows)
    for _ in range(200):
        mid = (lo + hi) / 2
        if sum(scaled_rows(wl.rows, mid)) < target_rows:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda f: abs(sum(scaled_rows(wl.rows, f)) - target_rows))
    return replace(wl, rows=scaled_rows(wl.rows, best), scale=best)


def scale_by_factor(wl: Workload, factor: float) -> Workload:
    if not (factor > 0 and math.isfinite(factor)):
        raise BenchError(f"scale factor must be positive, got {factor}")
    return replace(wl, rows=scaled_rows(wl.rows, factor), scale=factor)
