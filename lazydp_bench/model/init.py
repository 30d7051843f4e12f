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
    _init_host(table, rows, bounds, seed, threads or os.cpu_count() or 1)
    return table, advised


def _init_host(
    table: torch.Tensor, rows: tuple[int, ...], bounds: list[float], seed: int, threads: int
) -> None:
    flat = table.numpy()
    dim = flat.shape[1]
    starts = np.cumsum([0, *rows])[:-1]
    bound_arr = np.asarray(bounds, dtype=flat.dtype)
    rows_per_chunk = max(1, _CHUNK_ELEMS // dim)
    total = flat.shape[0]

    def fill(chunk: int) -> None:
        lo = chunk * rows_per_chunk
        hi = min(total, lo + rows_per_chunk)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1, chunk])))
        block = flat[lo:hi]
        rng.random(out=block, dtype=flat.dtype)
        table_id = np.searchsorted(starts, np.arange(lo, hi), side="right") - 1
        scale = bound_arr[table_id][:, None]
        block *= 2 * scale
        block -= scale

    n_chunks = (total + rows_per_chunk - 1) // rows_per_chunk
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(n_chunks)))


def init_rows(
    rows: tuple[int, ...], dim: int, lo: int, hi: int, dtype: torch.dtype, seed: int
) -> torch.Tensor:
    """Rows [lo, hi) of the table `init_table` builds on the host, bit for bit, without
    building the rest (a row-wise shard's initial values): each chunk it touches is drawn
    as the host path draws it, keyed by (seed, chunk)."""
    out = torch.empty((hi - lo, dim), dtype=dtype)
    flat = out.numpy()
    starts = np.cumsum([0, *rows])[:-1]
    bound_arr = np.asarray([1.0 / np.sqrt(n) for n in rows], dtype=flat.dtype)
    rows_per_chunk = max(1, _CHUNK_ELEMS // dim)
    total = sum(rows)
    for chunk in range(lo // rows_per_chunk, -(-hi // rows_per_chunk)):
        c_lo, c_hi = chunk * rows_per_chunk, min(total, (chunk + 1) * rows_per_chunk)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 1, chunk])))
        block = np.empty((c_hi - c_lo, dim), dtype=flat.dtype)
        rng.random(out=block, dtype=flat.dtype)
        table_id = np.searchsorted(starts, np.arange(c_lo, c_hi), side="right") - 1
        scale = bound_arr[table_id][:, None]
        block *= 2 * scale
        block -= scale
        a, b = max(lo, c_lo), min(hi, c_hi)
        flat[a - lo : b - lo] = block[a - c_lo : b - c_lo]
    return out
