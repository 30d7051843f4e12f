"""Hand-written Criteo lines and small files for the reader, generator and profile tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from lazydp_bench.config import DataConfig
from lazydp_bench.data.criteo import CriteoBatchSource, scan

CPU = torch.device("cpu")


def line(label: str = "0", dense=None, cats=None) -> str:
    """One TSV line: a label, 13 dense fields and 26 categorical fields (given ones first,
    the rest empty)."""
    dense = list(dense or []) + [""] * (13 - len(dense or []))
    cats = list(cats or []) + [""] * (26 - len(cats or []))
    return "\t".join([label, *dense, *cats]) + "\n"


def varied(n: int, bad: dict[int, str] | None = None) -> list[str]:
    """n lines with distinct values (negatives, empties, both hex cases); line numbers in
    `bad` (1-based) replaced by the text given."""
    out = []
    for i in range(n):
        dense = [str(i), "" if i % 3 else str(-i), str(i * 7919 % 100003)]
        cats = [f"{i:08x}", "" if i % 5 else f"{i * 2654435761 % 2**32:08X}", f"{i % 251:x}"]
        out.append(line(str(i % 2), dense, cats))
    for at, text in (bad or {}).items():
        out[at - 1] = text
    return out


def write(path: Path, lines: list[str], *, compress: bool = False) -> Path:
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def config(*paths: Path, **kw) -> DataConfig:
    return DataConfig(paths=tuple(str(p) for p in paths), **kw)


def source(cfg: DataConfig, rows=(97,) * 26, batch: int = 4) -> CriteoBatchSource:
    """A batch source on the CPU over every line of the data."""
    return CriteoBatchSource(
        scan(cfg, need_lines=None),
        tuple(rows),
        batch_size=batch,
        table_device=CPU,
        mlp_device=CPU,
        dtype=torch.float64,
    )
