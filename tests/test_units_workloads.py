import pytest

from lazydp_bench.errors import BenchError
from lazydp_bench.runtime.trainer import resolve_workload
from lazydp_bench.units import parse_size
from lazydp_bench.workloads import load_workload, scale_to_bytes
from tests.conftest import ROOT


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot parse size"),
        ("abc", "cannot parse size"),
        ("12XB", "unknown size unit .XB."),
        ("-5MB", "cannot parse size"),
        ("1.2.3GB", "cannot parse size"),
        ("0GB", "must be positive"),
    ],
)
def test_parse_size_rejects(text, message):
    with pytest.raises(BenchError, match=message):
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


def test_parse_size_refuses_overflow():
    """1e400GB was an OverflowError traceback."""
    with pytest.raises(BenchError, match="not a finite number of bytes"):
        parse_size("1e400GB")


TINY_TOML = (ROOT / "workloads" / "tiny.toml").read_text()


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        ("rows = [40, 7, 300, 120]", 'rows = "abc"', "rows must be a non-empty list"),
        ("rows = [40, 7, 300, 120]", "rows = [[40, 7], 300]", r"rows\[0\] must be a positive"),
        ("rows = [40, 7, 300, 120]", "rows = []", "rows must be a non-empty list"),
        ("rows = [40, 7, 300, 120]", "rows = [40, 0]", r"rows\[1\] must be positive"),
        ("dim = 8", 'dim = "eight"', "dim must be a positive whole number"),
        ("dim = 8", "dim = -8", "dim must be positive"),
        ("dim = 8", "dim = 0", "dim must be positive"),
        ("dim = 8", "dim = 8.5", "dim must be a positive whole number"),
        ("dim = 8", "dim = true", "dim must be a positive whole number"),
        ("dim = 8", "dim = inf", "dim must be a positive whole number"),  # OverflowError
        ("dim = 8", "dim = nan", "dim must be a positive whole number"),  # ValueError
        ("dim = 8", "dim = 8.0", None),  # a whole float is a count
        ("bottom_mlp = [16, 8]", "bottom_mlp = []", "bottom_mlp must be a non-empty list"),
        ("pooling = 3", "pooling = 0", "pooling must be positive"),
        ("batch_size = 8", "batch_size = 0", "batch_size must be positive"),
        ('loss = "mse"', "loss = 3", "loss must be a string"),
    ],
)
def test_bad_workload_toml_is_one_bench_error(tmp_path, line, replacement, message):
    """Each of these was a traceback (ValueError, TypeError, IndexError, ZeroDivisionError
    in a private run) or an error record written after the run started."""
    assert line in TINY_TOML
    path = tmp_path / "bad.toml"
    path.write_text(TINY_TOML.replace(line, replacement))
    if message is None:
        assert load_workload(str(path)) == load_workload("tiny")
        return
    with pytest.raises(BenchError, match=f"invalid workload {path}: {message}"):
        load_workload(str(path))


def test_workload_toml_with_invalid_utf8_is_one_bench_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(TINY_TOML.encode().replace(b'"tiny"', b'"ti\xffny"'))
    with pytest.raises(BenchError, match="cannot read workload"):
        load_workload(str(path))
