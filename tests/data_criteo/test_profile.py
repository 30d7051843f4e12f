"""`data profile`'s numbers against a brute-force count, and `--distribution profile:FILE`
replaying the measured access curves."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from lazydp_bench.config import DataConfig, RunConfig
from lazydp_bench.data.criteo_gen import GenSpec, make_criteo
from lazydp_bench.data.distributions import _PERMUTE_PRIME, parse_distribution, sample_rows
from lazydp_bench.data.profile import (
    TOP_FRACTIONS,
    load_profile,
    profile_data,
    save_profile,
)
from lazydp_bench.errors import BenchError
from lazydp_bench.runtime.trainer import execute, plan_run, resolve_workload
from tests.data_criteo.helpers import config

BATCH = 64


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A 3,000-line file profiled at criteo-kaggle's 2 MB table sizes, with its lines."""
    folder = tmp_path_factory.mktemp("profile")
    path = folder / "day_0"
    make_criteo(path, GenSpec(lines=3000, seed=7, alpha=0.9))
    rows = resolve_workload("criteo-kaggle", "2MB").rows
    profile = profile_data(
        config(path), rows, batch_size=BATCH, workload="criteo-kaggle", table_size="2MB"
    )
    lines = [x.split("\t") for x in path.read_text().splitlines()]
    return folder, profile, rows, lines


def test_profile_equals_a_brute_force_count(measured):
    _, profile, rows, lines = measured
    assert (profile.lines, profile.skipped_lines, profile.batches) == (3000, 0, 3000 // BATCH)
    for t, table in enumerate(profile.tables):
        local = [int(f[14 + t] or "0", 16) % rows[t] for f in lines]
        counts = sorted(Counter(local).values(), reverse=True)
        assert table.name == f"C{t + 1}" and table.rows == rows[t]
        assert table.lookups == 3000 and table.rows_touched == len(counts)
        for frac, share in zip(TOP_FRACTIONS, table.top_shares, strict=True):
            k = max(1, math.ceil(frac * rows[t]))
            assert share == pytest.approx(sum(counts[:k]) / 3000)
        batches = [local[i : i + BATCH] for i in range(0, 3000 - BATCH + 1, BATCH)]
        unique = sum(len(set(b)) for b in batches) / len(batches)
        assert table.unique_per_batch == pytest.approx(unique)
        for r, s in zip(table.cdf_ranks, table.cdf_shares, strict=True):
            assert s == pytest.approx(sum(counts[:r]) / 3000)
        assert table.cdf_ranks[-1] == len(counts) and table.cdf_shares[-1] == 1.0
    total = sum(t.unique_per_batch for t in profile.tables)
    assert profile.unique_per_batch == pytest.approx(total)


def test_profile_file_round_trips_and_replays_its_access_curves(measured, tmp_path):
    _, profile, rows, _ = measured
    path = tmp_path / "Profile.json"  # the path keeps its case
    save_profile(profile, path)
    assert load_profile(path) == profile
    assert json.loads(path.read_text())["unique_rows_per_batch"] == profile.unique_per_batch
    dist = parse_distribution(f"profile:{path}")
    assert dist.label == f"profile:{path}"
    drawn = sample_rows(dist, torch.tensor(rows), (40_000, 26, 1), torch.Generator().manual_seed(0))
    for t in (2, 3, 11):  # C3, C4, C12: thousands of rows touched
        # the rows the curve's top k ranks land on (Zipf's scattering permutation)
        table = profile.tables[t]
        j = len(table.cdf_ranks) // 2
        k, share = table.cdf_ranks[j], table.cdf_shares[j]
        top = torch.tensor([(r * _PERMUTE_PRIME + t * 7919) % rows[t] for r in range(k)])
        got = torch.isin(drawn[:, t, 0], top).double().mean().item()
        assert got == pytest.approx(share, abs=4 * math.sqrt(share * (1 - share) / 40_000))
        assert drawn[:, t, 0].max() < rows[t]
    dist.check_tables(26)
    with pytest.raises(BenchError, match="26 tables' access curves; the workload has 8"):
        dist.check_tables(8)


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({"lookups": "x"}, False),  # was a TypeError from `"x" < 1`
        ({"lookups": 0}, False),
        ({"cdf_ranks": [0, "5"]}, False),
        ({"cdf_ranks": [0, 5.5]}, False),
        ({"cdf_ranks": [3, 1]}, False),
        ({"cdf_ranks": [0, 1, 2], "cdf_shares": [0.0, 0.7, 0.4]}, False),  # falls
        ({"cdf_shares": [0.0, 1.5]}, False),
        ({"cdf_shares": [0.0, None]}, False),
        ({"cdf_shares": [0.0]}, False),  # one share for two ranks
        ({}, True),
    ],
)
def test_a_profile_with_an_unusable_curve_is_refused(tmp_path, change, valid):
    """Every table's curve is checked when the profile is read, so a hand-edited file is
    one line at `--distribution profile:FILE`, never a traceback in a run."""
    table = {
        "name": "C1",
        "rows": 10,
        "lookups": 4,
        "rows_touched": 2,
        "top_shares": [0.5, 0.5, 1.0],
        "unique_per_batch": 1.5,
        "cdf_ranks": [0, 1],
        "cdf_shares": [0.0, 0.7],
    }
    defaults = {"files": [], "workload": "w", "table_size": None, "categorical": "hash"}
    data = {
        "format": "lazydp-bench access profile v1",
        **defaults,
        **{"batch_size": 2, "lines": 4, "skipped_lines": 0, "batches": 2},
        "tables": [{**table, **change}],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    if valid:
        assert load_profile(path).tables[0].cdf_shares == (0.0, 0.7)
        return
    with pytest.raises(BenchError, match="table C1 has no usable access curve"):
        load_profile(path)


def test_a_file_that_is_not_a_profile_is_refused(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{}")
    with pytest.raises(BenchError, match="is not an access profile"):
        parse_distribution(f"profile:{bad}")
    with pytest.raises(BenchError, match="cannot read profile"):
        parse_distribution(f"profile:{tmp_path / 'missing.json'}")


def test_a_synthetic_run_replays_a_profile(measured, tmp_path):
    _, profile, _, _ = measured
    path = tmp_path / "p.json"
    save_profile(profile, path)
    cfg = RunConfig(
        workload="criteo-kaggle",
        table_size="1MB",
        placement="cpu",
        iterations=2,
        warmup=1,
        distribution=f"profile:{path}",
    )
    record = execute(plan_run(cfg))
    assert record["status"] == "ok", record.get("error")
    assert record["config"]["distribution"] == f"profile:{path}"
    assert record["config"]["data"] is None
    with pytest.raises(BenchError, match="access curves; the workload has 4 tables"):
        plan_run(replace(cfg, workload="tiny", table_size=None))


def test_data_options_are_checked():
    assert DataConfig.parse(None) is None
    spec = DataConfig.parse("criteo: a.txt ,b/", categorical="vocab")
    assert spec == DataConfig(paths=("a.txt", "b/"), categorical="vocab")
    with pytest.raises(BenchError, match=r"--data takes criteo:PATH\[,PATH...\]"):
        DataConfig.parse("parquet:x")
    with pytest.raises(BenchError, match="needs one or more paths"):
        DataConfig.parse("criteo:")
    with pytest.raises(BenchError, match="unknown --on-bad-line 'ignore'"):
        DataConfig.parse("criteo:x", on_bad_line="ignore")
    with pytest.raises(BenchError, match="--dense-transform applies to --data"):
        DataConfig.parse(None, dense_transform="torchrec")
    cfg = RunConfig(data=spec)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_access_figure_draws_each_tables_curve_from_the_profile(measured):
    """One line per table: x = the top r rows as a fraction of the table, y = their share
    of lookups; the curve ends at the touched rows' fraction with share 1; the largest
    tables are named in the legend."""
    from lazydp_bench.report.profile_figure import LABELLED, access_figure

    profile = measured[1]
    fig = access_figure(profile)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == len(profile.tables)
    by_size = sorted(profile.tables, key=lambda t: t.rows, reverse=True)
    for line, table in zip(lines, by_size, strict=True):
        xs, ys = line.get_xdata(), line.get_ydata()
        assert xs[-1] == pytest.approx(table.rows_touched / table.rows) and ys[-1] == 1.0
        assert list(ys) == sorted(ys)  # cumulative
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [n.split()[0] for n in names] == [t.name for t in by_size[:LABELLED]]
