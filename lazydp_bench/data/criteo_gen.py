"""A generator of files in the exact Criteo TSV format, for tests and examples.

No package ships a Criteo sample, so this writes what Kaggle's `train.txt` and the 1TB
`day_N` files hold: one line per example, `label \\t I1..I13 \\t C1..C26`, where the label
is 0 or 1, I1..I13 are decimal integers (a few negative, many empty) and C1..C26 are
8-digit lower-case hex ids (some empty). Each categorical column draws ranks from a
bounded Zipf law over the criteo-kaggle cardinality of its table and maps rank to id by a
fixed bijection of 32-bit ids, so the most frequent id of a column is rank 0's. Labels
come from a planted logistic model of a few ids and dense values, with its bias set so
about a quarter of the lines are clicks (Kaggle's train set: 25.6 %); a model trained on
the file can therefore learn something.

Lines are built as a byte matrix with numpy (one cell per field, masked and flattened
into the line bytes), with no Python work per line or field. The file is written under a
temporary name in the target's folder and renamed when complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lazydp_bench.errors import BenchError
from lazydp_bench.files import atomic_output

# criteo-kaggle's 26 table cardinalities (workloads/criteo-kaggle.toml)
KAGGLE_ROWS = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
    14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
# Share of empty fields per column, close to the Kaggle train set's.
DENSE_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22)
CAT_MISSING = (
    0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0, 0.0, 0.0, 0.03,
    0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44,
)  # fmt: skip
# log-scale centre of each dense column (counts from ~1 to ~100)
DENSE_MU = (0.8, 3.0, 2.5, 1.8, 7.0, 3.5, 1.5, 2.5, 3.8, 0.3, 1.0, 0.4, 1.8)
DENSE_SIGMA = 1.3
NEGATIVE_COLUMN = 1  # I2, the Kaggle column with small negative values (down to -3)
NEGATIVE_SHARE = 0.08
LABEL_RATE = 0.256
ID_MULTIPLIER = 0x9E3779B1  # odd: rank -> rank * M + c is a bijection of 32-bit ids
# The planted model: per-id effects in these (small) tables, and two dense slopes.
PLANTED_TABLES = (0, 1, 4, 5, 8, 13, 16, 19, 22)
ID_WEIGHT = 0.9
DENSE_WEIGHTS = {2: 0.45, 6: -0.35}  # column -> slope on log1p(max(x, 0))
CHUNK_LINES = 65_536
DEFAULT_ALPHA = 1.05


@dataclass(frozen=True)
class GenSpec:
    """What to generate: line count, seed, the Zipf exponent of every id column, gzip."""

    lines: int
    seed: int = 0
    alpha: float = DEFAULT_ALPHA
    gzip: bool = False

    def __post_init__(self) -> None:
        if self.lines < 1:
            raise BenchError(f"--lines must be positive, got {self.lines}")
        if not 0 <= self.seed < 2**63:
            raise BenchError(f"--seed must be in [0, 2**63), got {self.seed}")
        if not (0 < self.alpha < 10):
            raise BenchError(f"--alpha must be in (0, 10), got {self.alpha}")


@dataclass(frozen=True)
class GenSummary:
    lines: int
    bytes: int
    clicks: int

    @property
    def label_rate(self) -> float:
        return self.clicks / self.lines


def table_ids(table: int, ranks: np.ndarray) -> np.ndarray:
    """The 32-bit id of each rank of a table (a bijection, so ranks stay distinct)."""
    offset = (table + 1) * 0x85EBCA6B
    return (ranks.astype(np.uint64) * ID_MULTIPLIER + offset) % 2**32


def id_ranks(table: int, ids: np.ndarray) -> np.ndarray:
    """Inverse of `table_ids`: the rank an id was drawn as."""
    inverse = pow(ID_MULTIPLIER, -1, 2**32)
    offset = ((table + 1) * 0x85EBCA6B) % 2**32
    shifted = (ids.astype(np.uint64) + 2**32 - offset) % 2**32
    return (shifted * inverse) % 2**32


def zipf_probabilities(rows: int, alpha: float, count: int) -> np.ndarray:
    """P(rank k) for k < count under the bounded law the generator samples from (the
    continuous power law x^-alpha on [1, rows + 1), floored)."""
    k = np.arange(count, dtype=np.float64)
    if abs(alpha - 1.0) < 1e-9:
        return (np.log(k + 2) - np.log(k + 1)) / np.log(rows + 1.0)
    e = 1.0 - alpha
    return ((k + 2) ** e - (k + 1) ** e) / ((rows + 1.0) ** e - 1.0)


def zipf_ranks(rng: np.random.Generator, rows: int, alpha: float, n: int) -> np.ndarray:
    """n 0-based ranks below `rows`, by the inverse CDF of the bounded power law."""
    u = rng.random(n)
    if abs(alpha - 1.0) < 1e-9:
        x = np.exp(u * np.log1p(rows))
    else:
        e = 1.0 - alpha
        x = (1.0 + u * ((rows + 1.0) ** e - 1.0)) ** (1.0 / e)
    return np.minimum(np.floor(x).astype(np.int64) - 1, rows - 1).clip(min=0)


def _id_effect(table: int, ranks: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random effect in [-1, 1) for each id of a planted table."""
    h = ranks.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(table * 0x632BE5AB)
    h = (h >> np.uint64(40)) % 65536  # uint64 products wrap modulo 2^64
    return h.astype(np.float64) / 32768.0 - 1.0


def _logits(ranks: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """The planted model without its bias: id effects plus slopes on log dense values."""
    z = np.zeros(len(ranks))
    for t in PLANTED_TABLES:
        z += ID_WEIGHT * _id_effect(t, ranks[:, t])
    for col, w in DENSE_WEIGHTS.items():
        z += w * (np.log1p(np.maximum(dense[:, col], 0)) - DENSE_MU[col])
    return z


@dataclass(frozen=True)
class _Draw:
    labels: np.ndarray  # (n,) 0/1
    dense: np.ndarray  # (n, 13) int64
    dense_missing: np.ndarray  # (n, 13) bool
    ranks: np.ndarray  # (n, 26) int64
    cat_missing: np.ndarray  # (n, 26) bool


def _draw_features(rng: np.random.Generator, spec: GenSpec, n: int) -> _Draw:
    ranks = np.stack([zipf_ranks(rng, r, spec.alpha, n) for r in KAGGLE_ROWS], axis=1)
    mu = np.asarray(DENSE_MU)
    dense = np.floor(np.exp(rng.normal(mu, DENSE_SIGMA, (n, len(mu))))).astype(np.int64) - 1
    dense = np.clip(dense, 0, 2**31 - 1)
    negative = rng.random(n) < NEGATIVE_SHARE
    dense[negative, NEGATIVE_COLUMN] = -rng.integers(1, 4, int(negative.sum()))
    dense_missing = rng.random(dense.shape) < np.asarray(DENSE_MISSING)
    cat_missing = rng.random(ranks.shape) < np.asarray(CAT_MISSING)
    empty = np.zeros(n, dtype=np.int64)
    return _Draw(empty, dense, dense_missing, ranks, cat_missing)


def _bias(spec: GenSpec) -> float:
    """The planted model's bias that makes LABEL_RATE of a pilot sample clicks."""
    pilot = _draw_features(np.random.default_rng([spec.seed, 1]), spec, 50_000)
    z = _logits(pilot.ranks, np.where(pilot.dense_missing, 0, pilot.dense))
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = np.mean(1.0 / (1.0 + np.exp(-(z + mid))))
        lo, hi = (mid, hi) if rate < LABEL_RATE else (lo, mid)
    return (lo + hi) / 2


def draw_chunk(rng: np.random.Generator, spec: GenSpec, n: int, bias: float) -> _Draw:
    """n examples: features, then labels from the planted model (missing dense as 0)."""
    d = _draw_features(rng, spec, n)
    z = _logits(d.ranks, np.where(d.dense_missing, 0, d.dense)) + bias
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return _Draw(labels, d.dense, d.dense_missing, d.ranks, d.cat_missing)


# ---- encoding: fields as a byte matrix, flattened through a mask ----------------------

_CELL = 12  # the widest field (a sign and 10 digits) and its separator
_POW10 = 10 ** np.arange(12, dtype=np.int64)
_SMALL = (-3, 100_000)  # ints in this range are encoded by one table lookup


def _int_cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal text of each int (|x| < 10^10) left-aligned in 11 bytes, and its length."""
    a = np.abs(values)
    digits = 1 + (a[..., None] >= _POW10[1:11]).sum(axis=-1)
    neg = (values < 0).astype(np.int64)
    pos = np.arange(11)
    q = pos - neg[..., None]  # index among the digits, left to right
    exp = np.clip(digits[..., None] - 1 - q, 0, 11)
    chars = (a[..., None] // _POW10[exp]) % 10 + ord("0")
    chars = np.where((pos == 0) & (neg[..., None] == 1), ord("-"), chars)
    return chars.astype(np.uint8), digits + neg


@dataclass(frozen=True)
class TextTables:
    """Precomputed text: every small int (11 bytes and a length) and every 16-bit value
    as 4 lower-case hex digits, so encoding a chunk is gathers, not arithmetic."""

    small_chars: np.ndarray  # (_SMALL span, 11) uint8
    small_lengths: np.ndarray  # (_SMALL span,)
    hex4: np.ndarray  # (65536, 4) uint8

    @classmethod
    def build(cls) -> TextTables:
        chars, lengths = _int_cells(np.arange(*_SMALL, dtype=np.int64))
        nibbles = (np.arange(65536)[:, None] >> np.arange(12, -1, -4)) & 15
        hex4 = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
        return cls(chars, lengths, hex4)

    def ints(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_int_cells` of `values`, by lookup where small and arithmetic elsewhere."""
        small = (values >= _SMALL[0]) & (values < _SMALL[1])
        index = np.where(small, values - _SMALL[0], 0)
        chars, lengths = self.small_chars[index], self.small_lengths[index]
        if not small.all():
            chars[~small], lengths[~small] = _int_cells(values[~small])
        return chars, lengths


def encode_lines(
    tables: TextTables,
    labels: np.ndarray,
    dense: np.ndarray,
    dense_missing: np.ndarray,
    ids: np.ndarray,
    cat_missing: np.ndarray,
) -> bytes:
    """The TSV bytes of n lines: label, 13 ints (missing: empty), 26 hex ids (missing:
    empty), tab-separated, each line ending in a newline."""
    n = len(labels)
    cells = np.empty((n, 40, _CELL), dtype=np.uint8)
    lengths = np.empty((n, 40), dtype=np.int64)
    cells[:, 0, 0] = ord("0") + labels
    lengths[:, 0] = 1
    chars, width = tables.ints(dense)
    cells[:, 1:14, :11] = chars
    lengths[:, 1:14] = np.where(dense_missing, 0, width)
    ids = ids.astype(np.uint32)
    cells[:, 14:, 0:4] = tables.hex4[ids >> 16]
    cells[:, 14:, 4:8] = tables.hex4[ids & 0xFFFF]
    lengths[:, 14:] = np.where(cat_missing, 0, 8)
    seps = np.full((n, 40, 1), ord("\t"), dtype=np.uint8)
    seps[:, -1] = ord("\n")
    np.put_along_axis(cells, lengths[..., None], seps, axis=2)
    keep = np.arange(_CELL) <= lengths[..., None]
    return cells[keep].tobytes()


def generate_chunks(spec: GenSpec) -> Iterator[tuple[bytes, int, int]]:
    """(TSV bytes, lines, clicks) of consecutive chunks; the same spec gives the same
    bytes."""
    rng = np.random.default_rng([spec.seed, 0])
    bias = _bias(spec)
    tables = TextTables.build()
    done = 0
    while done < spec.lines:
        n = min(CHUNK_LINES, spec.lines - done)
        d = draw_chunk(rng, spec, n, bias)
        ids = np.stack([table_ids(t, d.ranks[:, t]) for t in range(len(KAGGLE_ROWS))], axis=1)
        data = encode_lines(tables, d.labels, d.dense, d.dense_missing, ids, d.cat_missing)
        yield data, n, int(d.labels.sum())
        done += n


def make_criteo(
    out: Path, spec: GenSpec, progress: Callable[[int], None] | None = None
) -> GenSummary:
    """Write `spec.lines` Criteo lines to `out` (gzip when `spec.gzip`); `progress` is
    called with the lines written so far after each chunk."""
    written = clicks = 0
    with atomic_output(out, compress=spec.gzip) as stream:
        for data, n, c in generate_chunks(spec):
            stream.write(data)
            written, clicks = written + n, clicks + c
            if progress is not None:
                progress(written)
    return GenSummary(lines=written, bytes=Path(out).stat().st_size, clicks=clicks)
