"""A record's host peak is its run's, not the process's (planning's accounting, or an
earlier run in the same `run --algo a,b` command, once counted)."""

from __future__ import annotations

import numpy as np
import pytest

from lazydp_bench.measure.host_memory import host_peak_bytes, reset_host_peak
from lazydp_bench.measure.noise_bench import bench_need, copy_bytes


def test_reset_starts_a_new_peak_window():
    scope = reset_host_peak()
    if scope != "run":
        pytest.skip("this kernel does not allow resetting VmHWM (/proc/self/clear_refs)")
    big = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
    peak_with = host_peak_bytes()
    del big
    assert reset_host_peak() == "run"
    assert host_peak_bytes() < peak_with - 300 * 2**20


def test_bench_copy_buffers_follow_the_table_up_to_1_gib():
    """Every bench allocated two 1 GiB copy buffers (a 1 MB bench peaked at 2.28 GB)."""
    assert copy_bytes(2**20) == 2**20
    assert copy_bytes(8 * 2**30) == 2**30
    table = (10**6 // 512) * 512
    assert bench_need(10**6, "gpu", threads=16, chunk_bytes=2**20) == 3 * table + 2**20
    assert bench_need(10**6, "cpu", threads=16, chunk_bytes=2**20) == 3 * table + 16 * 2**20
    # hybrid: + pinned PCIe and threaded-copy buffers, 3 pinned windows and the add's chunk
    hybrid = bench_need(10**6, "hybrid", threads=16, chunk_bytes=2**20)
    assert hybrid == 7 * table + 20 * 2**20
