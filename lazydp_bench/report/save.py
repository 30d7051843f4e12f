"""Figures and their tables on disk.

Each file is written whole or not at all (`files.atomic_output`), and the same figure
gives the same bytes: matplotlib stamps a PDF with its creation date and names an SVG's
elements from a random salt, so `plot` run twice on the same records would rewrite every
PDF and SVG. Without those, regenerating a results folder from its records changes only
the files whose numbers changed, and a diff of the folder shows what a new run moved.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from lazydp_bench.files import atomic_output, write_bytes

# what each format would otherwise stamp with the time of writing
UNDATED = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}
# a fixed salt for the ids of an SVG's elements (matplotlib draws a random one)
SVG_SALT = "lazydp-bench"


def save_figure(figure: Figure, path: Path, *, dpi: int = 150) -> None:
    """`figure` as `path`'s format (png, pdf, svg), written whole, with no timestamp."""
    fmt = path.suffix.removeprefix(".")
    with matplotlib.rc_context({"svg.hashsalt": SVG_SALT}), atomic_output(path) as f:
        figure.savefig(f, format=fmt, dpi=dpi, metadata=UNDATED[fmt])


def save_table(data: pd.DataFrame, path: Path) -> None:
    """The numbers behind a figure as CSV, written whole."""
    write_bytes(path, data.to_csv(index=False).encode())
