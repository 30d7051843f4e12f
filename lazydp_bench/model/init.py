"""Fast initialization of the fused embedding table (DLRM's U(-1/sqrt(n), 1/sqrt(n)) per table).

A 90 GiB host table initialized by one thread takes minutes; here the host path fills
row chunks from a thread pool (NumPy generators release the GIL), each chunk seeded by
(seed, chunk) so the result does not depend on the thread count.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from lazydp_bench.model.huge_pages import advise_huge_pages

_CHUNK_ELEMS = 1 << 22  # 16 MiB of fp32 per task


def init_table(
    rows: tuple[int, ...],
    dim: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    threads: int | None = None,
) -> tuple[torch.Tensor, bool]:
    """The initialized table, and whether its host memory was advised to use huge pages
    (`huge_pages.py`; done before the first touch)."""
    total = sum(rows)
    table = torch.empty((total, dim), dtype=dtype, device=device)
    bounds = [1.0 / np.sqrt(n) for n in rows]
    if device.type == "cuda":
        gen = torch.Generator(device=device).manual_seed(seed)
        start = 0
        for n, bound in zip(rows, bounds, strict=True):
            table[start : start + n].uniform_(-bound, bound, generator=gen)
            start += n
        return table, False
    advised = advise_huge_pages(table)
    _init_host(table, rows, seed, threads or os.cpu_count() or 1)
    return table, advised


def _init_host(table: torch.Tensor, rows: tuple[int, ...], seed: int, threads: int) -> None:
    flat = table.numpy()
    per = chunk_rows(flat.shape[1])
    total = flat.shape[0]

    def fill(chunk: int) -> None:
        lo = chunk * per
        draw_rows(flat[lo : min(total, lo + per)], rows, lo, seed)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(-(-total // per))))


def chunk_rows(dim: int) -> int:
    """Rows per init chunk. Chunk c's values come from one generator keyed by (seed, c), so
    a range that starts and stops on multiples of this is drawn with no wasted draws."""
    return max(1, _CHUNK_ELEMS // dim)


def draw_rows(out: np.ndarray, rows: tuple[int, ...], lo: int, seed: int) -> None:
    """out[:] = rows [lo, lo + len(out)) of the fused table's initial values, bit for bit
    what the whole-table init holds there, whatever the range: every chunk the range
    touches is drawn whole from its (seed, chunk) generator (straight into `out` when the
    range covers it) and the rows in the range are scaled to their table's bound."""
    hi, dim = lo + out.shape[0], out.shape[1]
    per, total = chunk_rows(dim), sum(rows)
    starts = np.cumsum([0, *rows])[:-1]
    bound_arr = np.asarray([1.0 / np.sqrt(n) for n in rows], dtype=out.dtype)
    for chunk in range(lo // per, -(-hi // per)):
        c_lo, c_hi = chunk * per, min(total, (chunk + 1) * per)
        a, b = max(lo, c_lo), min(hi, c_hi)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1, chunk])))
        if (a, b) == (c_lo, c_hi):
            rng.random(out=out[a - lo : b - lo], dtype=out.dtype)
        else:
            whole = rng.random((c_hi - c_lo, dim), dtype=out.dtype)
            out[a - lo : b - lo] = whole[a - c_lo : b - c_lo]
        block = out[a - lo : b - lo]
        scale = bound_arr[np.searchsorted(starts, np.arange(a, b), side="right") - 1][:, None]
        block *= 2 * scale
        block -= scale


def init_rows(
    rows: tuple[int, ...], dim: int, lo: int, hi: int, *, dtype: torch.dtype, seed: int
) -> torch.Tensor:
    """Rows [lo, hi) of the table `init_table` builds on the host, bit for bit, without
    building the rest (a row-wise shard's initial values; `draw_rows`)."""
    out = torch.empty((hi - lo, dim), dtype=dtype)
    draw_rows(out.numpy(), rows, lo, seed)
    return out
