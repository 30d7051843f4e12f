"""Host CPU shares over the measured steps: arithmetic against hand-made samples, and a
real sample pair on Linux."""

import sys

import pytest

from lazydp_bench.measure.host_cpu import cpu_share, cpu_times


def test_shares_from_two_samples():
    # user nice system idle iowait irq softirq steal
    start = [100, 0, 50, 800, 10, 0, 0, 40]
    end = [160, 0, 70, 900, 10, 0, 0, 60]  # +60 user +20 system +100 idle +20 steal
    got = cpu_share(start, end)
    assert got["steal_pct"] == pytest.approx(100 * 20 / 200)
    assert got["busy_pct"] == pytest.approx(100 * 80 / 200)


def test_no_share_without_samples_or_elapsed_time():
    sample = [1, 2, 3, 4, 5, 6, 7, 8]
    assert cpu_share(None, sample) is None
    assert cpu_share(sample, sample) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_real_samples_give_shares_that_add_up():
    start = cpu_times()
    sum(i * i for i in range(300_000))  # some CPU time between the samples
    got = cpu_share(start, cpu_times())
    assert len(start) == 8
    if got is not None:  # a coarse clock may not have ticked
        assert 0 <= got["steal_pct"] <= 100 and 0 <= got["busy_pct"] <= 100
        assert got["busy_pct"] + got["steal_pct"] <= 100 + 1e-9
