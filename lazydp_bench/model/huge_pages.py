"""Transparent huge pages for the host-resident embedding table.

A hybrid or cpu step reads and writes tens of thousands of random 512-byte rows of a
table of up to ~100 GB. With 4 KiB pages nearly every row access misses the TLB, and
the page walk itself misses the caches (the page tables of a 96 GB table are ~190 MB);
2 MiB pages shrink them 512x. When the kernel's THP mode is `madvise` (the GPU machine's
setting), anonymous memory gets huge pages only where asked, so the table's range is
advised (MADV_HUGEPAGE) before it is first touched. Every algorithm gets the same table,
so baselines and LazyDP are measured alike; records carry the system's mode and how many
bytes the process actually got as huge pages (the kernel falls back to small pages when
it has no free 2 MiB blocks).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import torch

MADV_HUGEPAGE = 14  # linux/mman.h
HUGE_PAGE = 2 * 2**20
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The kernel's THP mode (always | madvise | never), None where there is none."""
    try:
        text = _THP_MODE.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def huge_range(begin: int, nbytes: int) -> tuple[int, int]:
    """The whole huge pages inside [begin, begin + nbytes) (empty: stop <= start)."""
    start = -(-begin // HUGE_PAGE) * HUGE_PAGE
    return start, (begin + nbytes) // HUGE_PAGE * HUGE_PAGE


def advise_huge_pages(tensor: torch.Tensor) -> bool:
    """Ask for huge pages on the 2 MiB-aligned part of a host tensor's memory (before it
    is first touched, so its page faults take huge pages). False where nothing was
    advised: not Linux, not host memory, smaller than a huge page, or madvise refused."""
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu":
        return False
    start, stop = huge_range(tensor.data_ptr(), tensor.numel() * tensor.element_size())
    if stop <= start:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(start, stop - start, MADV_HUGEPAGE) == 0


def huge_page_bytes() -> int | None:
    """Anonymous memory of this process backed by huge pages (None: not readable)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
