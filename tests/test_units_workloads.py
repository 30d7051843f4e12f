import pytest

from lazydp_bench.errors import BenchError
from lazydp_bench.runtime.trainer import resolve_workload
from lazydp_bench.units import parse_size
from lazydp_bench.workloads import load_workload, scale_to_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("96MB", 96 * 10**6),
        ("9.6GB", 9_600_000_000),
        ("96GB", 96 * 10**9),
        ("96GiB", 96 * 2**30),
        ("256MiB", 256 * 2**20),
        ("1.5 kb", 1500),
        ("4096", 4096),
        ("1e3MB", 10**9),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12XB", "-5MB", "0GB", "1.2.3GB"])
def test_parse_size_rejects(text):
    with pytest.raises(BenchError):
        parse_size(text)


def test_mlperf_full_scale():
    wl = load_workload("mlperf-dlrm")
    assert wl.total_rows == 187_767_399
    assert wl.num_tables == 26
    assert wl.table_bytes() == 187_767_399 * 128 * 4
    assert wl.interaction_features == 479
    assert (wl.bottom_mlp, wl.top_mlp) == ((512, 256, 128), (1024, 1024, 512, 256, 1))


@pytest.mark.parametrize("target", ["96MB", "960MB", "9.6GB", "96GB", "24GB", "192GB"])
def test_scaling_hits_target_within_one_percent(target):
    wl = resolve_workload("mlperf-dlrm", target)
    want = parse_size(target)
    assert abs(wl.table_bytes() - want) / want < 0.01
    assert min(wl.rows) >= 1
    assert len(wl.rows) == 26


def test_paper_scales_match_factors():
    full = load_workload("mlperf-dlrm")
    for target, factor in (("96MB", 0.001), ("9.6GB", 0.1)):
        wl = resolve_workload("mlperf-dlrm", target)
        assert wl.scale == pytest.approx(factor, rel=0.01)
        biggest = max(range(26), key=lambda i: full.rows[i])
        assert wl.rows[biggest] == pytest.approx(full.rows[biggest] * factor, rel=0.01)


def test_scale_factor_syntax_and_floor():
    wl = resolve_workload("mlperf-dlrm", "x0.00001")
    assert min(wl.rows) == 1  # tables of 3 or 4 rows keep one row
    assert wl.rows[0] == round(39884406 * 0.00001)


def test_other_workloads_full_size():
    for name in ("rmc1", "rmc2", "rmc3"):
        assert load_workload(name).table_bytes() == 96 * 10**9
    kaggle = load_workload("criteo-kaggle")
    assert (kaggle.dim, kaggle.batch_size, kaggle.num_tables) == (16, 128, 26)


def test_too_small_and_unknown():
    with pytest.raises(BenchError, match="one row"):
        scale_to_bytes(load_workload("mlperf-dlrm"), 1000)
    with pytest.raises(BenchError, match=r"valid: .*mlperf-dlrm"):
        load_workload("nope")
