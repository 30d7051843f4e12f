"""Access profile of Criteo data: how skewed each table's lookups are, and how many
distinct rows a batch touches (what LazyDP's input-queue work scales with).

Per table, at the rows the ids map to for a workload's table sizes (the same mapping a
run with `--data` uses): the lookups, the rows touched, the share of lookups that go to
the top 0.1 / 1 / 10 % of the table's rows (by lookup count; at least one row each), the
mean number of distinct rows in a batch (full batches only), and the cumulative access
curve as knots (every rank up to `EXACT_KNOTS`, log-spaced ranks after) so that
`--distribution profile:FILE` can replay it in synthetic runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lazydp_bench.config import DataConfig
from lazydp_bench.data.criteo import CATS, FIELD_NAMES, data_files, iter_chunks, map_rows, scan
from lazydp_bench.errors import BenchError
from lazydp_bench.files import write_bytes

TOP_FRACTIONS = (0.001, 0.01, 0.1)
EXACT_KNOTS = 256  # ranks kept one by one; after them, LOG_KNOTS log-spaced ones
LOG_KNOTS = 256
FORMAT = "lazydp-bench access profile v1"


@dataclass(frozen=True)
class TableProfile:
    name: str
    rows: int  # the table's rows at the profiled size
    lookups: int
    rows_touched: int
    top_shares: tuple[float, ...]  # share of lookups to the top TOP_FRACTIONS of rows
    unique_per_batch: float | None  # mean distinct rows of a full batch; None: no full batch
    cdf_ranks: tuple[int, ...]  # knots: the top r rows ...
    cdf_shares: tuple[float, ...]  # ... take this share of the lookups (0 at r = 0, 1 at end)


@dataclass(frozen=True)
class AccessProfile:
    files: tuple[str, ...]
    workload: str
    table_size: str | None
    categorical: str
    batch_size: int
    lines: int  # lines read, good and bad
    skipped_lines: int
    batches: int  # full batches the unique-row means are over
    tables: tuple[TableProfile, ...]

    @property
    def unique_per_batch(self) -> float | None:
        """Distinct rows a batch touches over all tables (LazyDP's queue per step)."""
        values = [t.unique_per_batch for t in self.tables]
        return None if any(v is None for v in values) else float(sum(values))

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            **asdict(self),
            "unique_rows_per_batch": self.unique_per_batch,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AccessProfile:
        fields = {k: v for k, v in data.items() if k not in ("format", "unique_rows_per_batch")}
        fields["files"] = tuple(fields["files"])
        fields["tables"] = tuple(
            TableProfile(
                **{
                    **t,
                    "top_shares": tuple(t["top_shares"]),
                    "cdf_ranks": tuple(t["cdf_ranks"]),
                    "cdf_shares": tuple(t["cdf_shares"]),
                }
            )
            for t in fields["tables"]
        )
        return cls(**fields)


class _Counter:
    """Lookup counts per table row and distinct rows per batch, chunk by chunk."""

    def __init__(self, table_rows: tuple[int, ...], batch_size: int) -> None:
        self.counts = [np.zeros(r, dtype=np.int64) for r in table_rows]
        self.batch_size = batch_size
        self.carry = np.zeros((0, len(table_rows)), dtype=np.int64)
        self.unique_sum = np.zeros(len(table_rows), dtype=np.int64)
        self.batches = 0

    def add(self, rows: np.ndarray) -> None:
        for t, counts in enumerate(self.counts):
            np.add.at(counts, rows[:, t], 1)
        rows = np.concatenate((self.carry, rows))
        whole = len(rows) // self.batch_size
        batches = rows[: whole * self.batch_size].reshape(whole, self.batch_size, -1)
        per_table = np.sort(batches.transpose(0, 2, 1), axis=2)  # (batches, tables, B)
        distinct = 1 + (np.diff(per_table, axis=2) != 0).sum(axis=2)
        self.unique_sum += distinct.sum(axis=0)
        self.batches += whole
        self.carry = rows[whole * self.batch_size :]


def _cdf_knots(sorted_counts: np.ndarray) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(ranks, shares): the top r rows take share s of the lookups, at r = 0, every rank up
    to EXACT_KNOTS and log-spaced ranks up to the rows touched."""
    touched = len(sorted_counts)
    if touched == 0:
        return (0,), (0.0,)
    exact = np.arange(1, min(touched, EXACT_KNOTS) + 1)
    spaced = np.geomspace(max(EXACT_KNOTS, 1), touched, LOG_KNOTS).round().astype(np.int64)
    ranks = np.unique(np.concatenate(([0], exact, spaced[spaced > EXACT_KNOTS], [touched])))
    cum = np.concatenate(([0], np.cumsum(sorted_counts)))
    shares = cum[ranks] / cum[-1]
    return tuple(int(r) for r in ranks), tuple(float(s) for s in shares)


def _table_profile(name: str, counts: np.ndarray, unique_mean: float | None) -> TableProfile:
    lookups = int(counts.sum())
    ordered = np.sort(counts[counts > 0])[::-1]
    cum = np.cumsum(ordered)
    shares = []
    for frac in TOP_FRACTIONS:
        k = max(1, math.ceil(frac * len(counts)))
        shares.append(float(cum[min(k, len(cum)) - 1] / lookups) if lookups else 0.0)
    ranks, cdf = _cdf_knots(ordered)
    return TableProfile(
        name=name,
        rows=len(counts),
        lookups=lookups,
        rows_touched=len(ordered),
        top_shares=tuple(shares),
        unique_per_batch=unique_mean,
        cdf_ranks=ranks,
        cdf_shares=cdf,
    )


def profile_data(
    config: DataConfig,
    table_rows: tuple[int, ...],
    *,
    batch_size: int,
    workload: str,
    table_size: str | None,
    progress: Callable[[int], None] | None = None,
) -> AccessProfile:
    """Read the files once (twice with a vocabulary: it is built first) and profile them."""
    if len(table_rows) != CATS:
        raise BenchError(
            f"a Criteo profile needs a 26-table workload, {workload!r} has {len(table_rows)}"
        )
    vocab = scan(config, need_lines=None).vocab if config.categorical == "vocab" else None
    files = data_files(config.paths)
    counter = _Counter(table_rows, batch_size)
    rows = np.asarray(table_rows, dtype=np.int64)
    lines = skipped = 0
    for chunk in iter_chunks(files, config.on_bad_line):
        counter.add(map_rows(chunk.ids, rows, np.zeros_like(rows), vocab))
        lines, skipped = lines + chunk.lines, skipped + chunk.skipped
        if progress is not None:
            progress(lines)
    means = counter.unique_sum / counter.batches if counter.batches else [None] * CATS
    tables = tuple(
        _table_profile(FIELD_NAMES[1 + 13 + t], counter.counts[t], _float(means[t]))
        for t in range(CATS)
    )
    return AccessProfile(
        files=tuple(str(f) for f in files),
        workload=workload,
        table_size=table_size,
        categorical=config.categorical,
        batch_size=batch_size,
        lines=lines,
        skipped_lines=skipped,
        batches=counter.batches,
        tables=tables,
    )


def _float(value) -> float | None:
    return None if value is None else float(value)


def save_profile(profile: AccessProfile, path: Path) -> None:
    """Write the profile as JSON under a temporary name, then rename it into place."""
    write_bytes(path, json.dumps(profile.to_dict(), indent=1).encode())


def load_profile(path: str | Path) -> AccessProfile:
    """A profile written by `save_profile`; a BenchError says what is wrong with the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BenchError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"profile {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BenchError(f"{path} is not an access profile (written by `data profile`)")
    try:
        profile = AccessProfile.from_dict(data)
    except (TypeError, KeyError) as exc:
        raise BenchError(f"profile {path} is incomplete: {exc}") from None
    for t in profile.tables:
        if not _usable_curve(t):
            raise BenchError(f"profile {path}: table {t.name} has no usable access curve")
    return profile


def _usable_curve(table: TableProfile) -> bool:
    """Whether replay can invert the table's curve: at least one lookup, one share per
    rank, whole ranks from 0 up and shares in [0, 1] that never fall (a binary search
    over the shares finds each draw's rank)."""
    ranks, shares = table.cdf_ranks, table.cdf_shares
    if not (_whole(table.lookups) and table.lookups >= 1 and len(ranks) == len(shares) >= 1):
        return False
    if not all(_whole(r) and r >= 0 for r in ranks):
        return False
    if not all(_real(s) and 0 <= s <= 1 for s in shares):
        return False
    return list(ranks) == sorted(ranks) and list(shares) == sorted(shares)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
