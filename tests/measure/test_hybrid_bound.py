"""The hybrid noise bound's arithmetic (the rates themselves are measured on a GPU host)."""

from __future__ import annotations

import pytest

from lazydp_bench.measure import hybrid_bound
from lazydp_bench.measure.hybrid_bound import HybridRates

GB = 1e9


def test_noise_down_is_bounded_by_the_slowest_resource_and_shared_dram():
    rates = HybridRates(
        h2d_bytes_per_s=50 * GB,
        d2h_bytes_per_s=50 * GB,
        duplex_bytes_per_s=100 * GB,
        host_add_bytes_per_s=40 * GB,
        gpu_draw_samples_per_s=500e9,
    )
    b = rates.bound(int(120 * GB))
    # alone: D2H 2.4 s, add 3.0 s, draw 0.06 s; DRAM: 4 x 120 GB at 3 x 40 GB/s = 4.0 s
    assert b["bound_noise_down_ms"] == pytest.approx(4000)
    # round trip (pinned table): duplex 2.4 s, each direction 2.4 s, DRAM 2 x 120 GB at
    # 120 GB/s = 2.0 s
    assert b["bound_round_trip_ms"] == pytest.approx(2400)
    assert (b["bound_ms"], b["bound_design"]) == (pytest.approx(2400), "rows round trip")
    assert b["bound_unshared_ms"] == pytest.approx(2400)


def test_the_draw_bounds_both_designs_on_a_slow_gpu():
    rates = HybridRates(50 * GB, 50 * GB, 100 * GB, 1000 * GB, gpu_draw_samples_per_s=1e9)
    b = rates.bound(int(8 * GB))
    assert b["bound_noise_down_ms"] == pytest.approx(2000)  # 2 G samples at 1 G/s
    assert b["bound_round_trip_ms"] == pytest.approx(2000)


def test_round_trip_is_bounded_by_host_dram_when_it_is_slowest():
    rates = HybridRates(50 * GB, 50 * GB, 100 * GB, 10 * GB, 500e9)  # DRAM 30 GB/s
    assert rates.bound(int(120 * GB))["bound_round_trip_ms"] == pytest.approx(8000)


def test_host_dram_is_the_higher_of_the_add_and_a_threaded_copy():
    rates = HybridRates(50 * GB, 50 * GB, 100 * GB, 40 * GB, 500e9, host_copy_bytes_per_s=160 * GB)
    assert rates.host_dram_bytes_per_s == 160 * GB
    assert rates.bound(int(120 * GB))["bound_noise_down_ms"] == pytest.approx(3000)  # the add
    slow_copy = HybridRates(50 * GB, 50 * GB, 100 * GB, 40 * GB, 500e9, host_copy_bytes_per_s=GB)
    assert slow_copy.host_dram_bytes_per_s == 120 * GB


def test_rates_take_the_fastest_call_not_the_median(monkeypatch):
    """A bound's rate is what the machine reached: one slow call among fast ones, or a
    fast one among slow ones, gives the fastest (a median would give 3 s here)."""
    durations = iter([5.0, 3.0, 1.0, 4.0, 3.0])
    clock = [0.0]

    def perf_counter() -> float:
        return clock[0]

    def call() -> None:
        clock[0] += next(durations)

    monkeypatch.setattr(hybrid_bound.time, "perf_counter", perf_counter)
    assert hybrid_bound._fastest_s(call, 5) == 1.0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        hybrid_bound._fastest_s(call, 0)
