"""The fidelity table on small synthetic records: each claim's number is computed from
the records (pooled as the figures pool them), the verdict follows the row's rule on both
sides of it, a claim without records is "not measured", and scripts/fidelity.py prints
the table or a one-line error with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lazydp_bench.report.fidelity import (
    AGREE,
    DIFFER,
    NO_DATA,
    NOT_COMPARABLE,
    fidelity_rows,
    markdown,
    within,
)
from tests.conftest import ROOT
from tests.report.test_figure_points import GB96, failed, run

GB24, GB48, GB192 = 24 * 10**9, 48 * 10**9, 192 * 10**9
HYBRID = {"placement": "hybrid"}


def _step(algo: str, ms: float, **kw) -> dict:
    return run(algo, [ms * 0.99, ms, ms * 1.01], table_bytes=kw.pop("table_bytes", GB96), **kw)


def _main(speedup: float, parity: float, eana_cost: float) -> list[dict]:
    """SGD 10 ms; LazyDP `parity` x SGD; DP-SGD(F) `speedup` x LazyDP; EANA below LazyDP
    by `eana_cost`; at batch 1024/2048/4096, 96 GB, hybrid."""
    out = []
    for batch in (1024, 2048, 4096):
        lazy = 10.0 * parity
        out += [
            _step("sgd", 10.0, batch=batch, **HYBRID),
            _step("lazydp", lazy, batch=batch, **HYBRID),
            _step("dpsgd-f", lazy * speedup, batch=batch, **HYBRID),
            _step("eana", lazy / (1 + eana_cost), batch=batch, **HYBRID),
        ]
    return out


def _row(rows, figure: str, claim_part: str):
    found = [r for r in rows if r.figure == figure and claim_part in r.claim]
    assert len(found) == 1, found
    return found[0]


def test_agreeing_records_agree_with_their_numbers_in_the_row():
    rows = fidelity_rows(_main(speedup=120.0, parity=1.1, eana_cost=0.30))
    speed = _row(rows, "10", "85-155x")
    assert speed.verdict == AGREE and speed.placement.startswith("hybrid")
    assert "120x (batch 1024)" in speed.ours and "mean 120x" in speed.ours
    parity = _row(rows, "10", "on par")
    assert parity.verdict == AGREE and "1.10 (batch 2048)" in parity.ours
    eana = _row(rows, "14", "EANA")
    assert eana.verdict == AGREE and "+30 % (batch 4096)" in eana.ours


def test_records_outside_each_rule_differ():
    rows = fidelity_rows(_main(speedup=30.0, parity=1.4, eana_cost=0.05))
    assert _row(rows, "10", "85-155x").verdict == DIFFER
    assert _row(rows, "10", "on par").verdict == DIFFER
    assert _row(rows, "14", "EANA").verdict == DIFFER


def test_one_batch_outside_the_range_makes_the_claim_differ():
    records = _main(speedup=120.0, parity=1.1, eana_cost=0.30)
    slow = [
        r for r in records if r["config"]["algo"] == "dpsgd-f" and r["config"]["batch_size"] == 4096
    ]
    for r in slow:  # 120x -> 300x at batch 4096 only
        r["timing"]["step_ms_raw"] = [x * 2.5 for x in r["timing"]["step_ms_raw"]]
        r["timing"]["step_median_ms"] *= 2.5
    row = _row(fidelity_rows(records), "10", "85-155x")
    assert row.verdict == DIFFER and "300x (batch 4096)" in row.ours


def test_repeats_are_pooled_before_the_ratio():
    records = _main(speedup=100.0, parity=1.0, eana_cost=0.3)
    # a second LazyDP run at batch 2048 with every step twice as long: pooled raw steps
    # 9.9, 10, 10.1, 19.8, 20, 20.2 have median 14.95, so the speedup there is 1000 / 14.95
    extra = _step("lazydp", 20.0, batch=2048, **HYBRID)
    row = _row(fidelity_rows([*records, extra]), "10", "85-155x")
    assert f"{1000 / 14.95:.1f}x (batch 2048)" in row.ours


def test_table_size_claims_read_the_oom_and_the_ordering():
    records = []
    for size, speedup in ((GB24, 20.0), (GB48, 40.0), (GB96, 80.0)):
        records += [
            _step("lazydp", 10.0, table_bytes=size, **HYBRID),
            _step("dpsgd-f", 10.0 * speedup, table_bytes=size, **HYBRID),
        ]
    records.append(_step("lazydp", 10.0, table_bytes=GB192, **HYBRID))
    records.append(failed("dpsgd-f", "oom", table_bytes=GB192, table_size="192GB"))
    records[-1]["config"]["placement"] = "hybrid"
    rows = fidelity_rows(records)
    oom = _row(rows, "13a", "out of memory")
    assert oom.verdict == AGREE and "OOM" in oom.ours and "LazyDP ran" in oom.ours
    growth = _row(rows, "13a", "grows")
    assert growth.verdict == AGREE and growth.ours.startswith("20.0x at 24 GB")
    records[-3] = _step("dpsgd-f", 100.0, table_bytes=GB96, **HYBRID)  # 10x at 96 GB
    assert _row(fidelity_rows(records), "13a", "grows").verdict == DIFFER


def test_a_claim_without_records_is_not_measured_and_gpu_runs_are_their_own_rows():
    records = [_step(a, ms) for a, ms in (("sgd", 2.0), ("lazydp", 2.5), ("dpsgd-f", 60.0))]
    rows = fidelity_rows(records)
    speed = _row(rows, "10", "85-155x")
    assert speed.placement == "gpu"
    where = "NVIDIA H100 80GB HBM3, commit aaaaaaa, graph replay"
    assert speed.ours == f"24.0x (batch 2048); mean 24.0x ({where})"
    assert speed.verdict == DIFFER
    assert _row(rows, "14", "EANA").verdict == NO_DATA
    assert _row(rows, "6", "AVX").verdict == NO_DATA


def test_two_gpu_runs_are_left_out():
    records = _main(speedup=120.0, parity=1.1, eana_cost=0.3)
    sharded = _step("lazydp", 1000.0, batch=2048, gpus=2, **HYBRID)
    row = _row(fidelity_rows([*records, sharded]), "10", "85-155x")
    assert "120x (batch 2048)" in row.ours


def test_within_widens_each_end_by_its_slack():
    assert within(85 / 1.25, 85, 155) and within(155 * 1.25, 85, 155)
    assert not within(85 / 1.25 - 0.01, 85, 155) and not within(155 * 1.25 + 0.01, 85, 155)


def test_markdown_has_a_header_and_one_line_per_row():
    rows = fidelity_rows(_main(speedup=120.0, parity=1.1, eana_cost=0.3))
    text = markdown(rows)
    lines = text.strip().splitlines()
    assert lines[0].startswith("| fig | placement | paper's claim | ours |")
    assert len(lines) == 2 + len(rows)
    assert all(line.count(" | ") == 5 for line in lines[2:])


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fidelity.py"), *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_script_prints_the_table_of_a_results_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    records = _main(speedup=120.0, parity=1.1, eana_cost=0.3)
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    res = _script(str(folder))
    assert res.returncode == 0, res.stderr
    assert res.stdout == markdown(fidelity_rows(records))


@pytest.mark.parametrize("args", [(), ("/nonexistent/results",)])
def test_script_bad_input_is_one_line_error_exit_2(args):
    res = _script(*args)
    assert res.returncode == 2
    if args:
        assert res.stderr.strip().splitlines() == ["error: no results at /nonexistent/results"]
        assert "Traceback" not in res.stderr


def _bench(pct: float, commit: str, created: str, *, engine: str = "roundtrip") -> dict:
    """A hybrid `bench noise` record at `pct` % of its bound."""
    return {
        "kind": "bench_noise",
        "created_utc": created,
        "config": {"noise_impl": engine, "placement": "hybrid", "table_bytes": GB24},
        "noise": {"engine": f"{engine} (rows up to cuda)"},
        "env": {"gpu_name": "NVIDIA H200", "commit": commit, "dirty": False},
        "bench": {
            "achieved_bytes_per_s": 1e11,
            "copy_bytes_per_s": 1e11,
            "pct_of_copy": pct,
            "samples_per_s": 1e10,
            "pct_of_bound": pct,
        },
    }


def test_roofline_row_reads_the_newest_commits_bench_and_refuses_a_number_past_its_bound():
    """An older commit's better share is not drawn into the newest commit's row, and an
    engine past its bound (a mismeasured bound) is not comparable, not an agreement."""
    old = _bench(118.0, "aaaaaaa", "2026-12-01T00:00:00+00:00")
    new = _bench(96.7, "bbbbbbb", "2026-12-02T00:00:00+00:00")
    weak = _bench(40.0, "bbbbbbb", "2026-12-02T00:01:00+00:00", engine="streamed")
    runs = _main(speedup=120.0, parity=1.1, eana_cost=0.30)

    def fidelity_rows_with(*bench):
        return fidelity_rows(runs + list(bench))

    row = _row(fidelity_rows_with(old, new, weak), "6", "AVX peak")
    assert row.verdict == AGREE and "97 % of its bound (roundtrip" in row.ours
    assert "commit bbbbbbb" in row.ours
    row = _row(fidelity_rows_with(new, old), "6", "AVX peak")  # file order does not matter
    assert "commit bbbbbbb" in row.ours
    past = _bench(118.0, "ccccccc", "2026-12-03T00:00:00+00:00")
    row = _row(fidelity_rows_with(old, new, past), "6", "AVX peak")
    assert row.verdict == NOT_COMPARABLE and "118 % of its bound" in row.ours
    row = _row(fidelity_rows_with(_bench(60.0, "ddddddd", "2026-12-04T00:00:00+00:00")), "6", "AVX")
    assert row.verdict == DIFFER
    row = _row(fidelity_rows([new]), "6", "AVX peak")  # bench records alone
    assert row.verdict == AGREE


def test_a_later_run_of_an_unasked_engine_does_not_choose_the_commit():
    """Commit B is newer for the claim's own runs; a torch-engine run made later on
    commit A (the paper's design, read by the headline table) must not move the row to A."""
    old = _main(speedup=100.0, parity=1.1, eana_cost=0.30)
    new = _main(speedup=120.0, parity=1.1, eana_cost=0.30)
    for r in old:
        r["env"]["commit"] = "a" * 40
    for r in new:
        r["env"].update(commit="b" * 40)
        r["created_utc"] = "2026-12-02T00:00:00+00:00"
    late = json.loads(json.dumps(next(r for r in old if r["config"]["algo"] == "dpsgd-f")))
    late["config"]["noise_impl"] = "torch"
    late["noise"] = {"impl": "torch"}
    late["created_utc"] = "2026-12-03T00:00:00+00:00"
    speed = _row(fidelity_rows(old + new + [late]), "10", "85-155x")
    assert "120x (batch 1024)" in speed.ours and "commit bbbbbbb" in speed.ours
