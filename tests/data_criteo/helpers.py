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
