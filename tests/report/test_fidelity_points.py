"""Which records one fidelity claim compares: rows per machine and placement, every point
of a claim on one commit (the newest at which all ran) and in one timing mode (each in its
best where no mode holds them all), named in the row's number; the 192 GB OOM claim
needs LazyDP to have run there; the hardest sensitivity setting is taken over the paper's
settings only."""

from __future__ import annotations

from lazydp_bench.report.fidelity import AGREE, CLAIMS, DIFFER, NO_DATA, fidelity_rows
from tests.report.test_figure_points import GB96, NEW, OLD, failed, run

GB192 = 2 * GB96
H200 = "NVIDIA H200"
HYBRID = {"placement": "hybrid"}


def _step(algo: str, ms: float, *, machine: str | None = None, **kw) -> dict:
    r = run(algo, [ms * 0.99, ms, ms * 1.01], table_bytes=kw.pop("table_bytes", GB96), **kw)
    if machine:
        r["env"]["gpu_name"] = machine
    return r


def _stage_timed(r: dict) -> dict:
    """The same run timed stage by stage (breakdown on, no graph replay)."""
    r["config"]["breakdown"] = True
    r["timing"]["cuda_graph"] = False
    return r


def _speed_rows(records: list[dict]):
    claim = [c for c in CLAIMS if c.figure == "10" and "85-155x" in c.text]
    return fidelity_rows(records, claim)


def test_rows_are_keyed_by_machine_and_never_mix_two_machines():
    h100 = [_step("dpsgd-f", 1200.0, **HYBRID), _step("lazydp", 10.0, **HYBRID)]
    h200 = [_step("dpsgd-f", 600.0, machine=H200, **HYBRID)]
    rows = _speed_rows(h100 + h200)
    assert len(rows) == 1  # the H200 has no LazyDP run: no ratio there, none mixed
    assert rows[0].machine == "NVIDIA H100 80GB HBM3" and "120x (batch 2048)" in rows[0].ours
    h200.append(_step("lazydp", 2.0, machine=H200, **HYBRID))
    rows = {r.machine: r for r in _speed_rows(h100 + h200)}
    assert "300x (batch 2048)" in rows[H200].ours and H200 in rows[H200].ours
    assert "120x (batch 2048)" in rows["NVIDIA H100 80GB HBM3"].ours


def test_a_claims_points_come_from_the_newest_commit_that_has_all_of_them():
    records = [
        _step("dpsgd-f", 1000.0, commit=OLD, day=1, **HYBRID),
        _step("lazydp", 10.0, commit=OLD, day=1, **HYBRID),
        _step("lazydp", 5.0, commit=NEW, day=2, **HYBRID),  # no DP-SGD(F) on NEW
    ]
    [row] = _speed_rows(records)
    assert "100x (batch 2048)" in row.ours and f"commit {OLD[:7]}" in row.ours
    records.append(_step("dpsgd-f", 1000.0, commit=NEW, day=2, **HYBRID))
    [row] = _speed_rows(records)
    assert "200x (batch 2048)" in row.ours and f"commit {NEW[:7]}" in row.ours


def test_a_claims_points_share_one_timing_mode():
    """DP-SGD(F) was only stage-timed: LazyDP's stage-timed run is its partner, not its
    faster graph replay."""
    records = [
        _stage_timed(_step("dpsgd-f", 1200.0, **HYBRID)),
        _stage_timed(_step("lazydp", 12.0, **HYBRID)),
        _step("lazydp", 10.0, **HYBRID),  # graph replay
    ]
    [row] = _speed_rows(records)
    assert "100x (batch 2048)" in row.ours and "stage timing" in row.ours
    records.append(_step("dpsgd-f", 1500.0, **HYBRID))  # now both have graph replays
    [row] = _speed_rows(records)
    assert "150x (batch 2048)" in row.ours and "graph replay" in row.ours


HOST_WORK = "hybrid-host runs LazyDP's bookkeeping on host cores between GPU kernels"


def _end_to_end(r: dict, blocker: str = HOST_WORK) -> dict:
    """The same run timed end to end (no graph replay, no breakdown): by default because
    no CUDA graph can hold its step, else as `blocker` says."""
    r["timing"].update(cuda_graph=False, cuda_graph_blocker=blocker)
    if blocker == "--cuda-graph off":
        r["config"]["cuda_graph"] = "off"
    return r


def test_a_pair_no_one_mode_holds_is_read_each_in_its_best_mode_and_says_so():
    """hybrid-host: LazyDP's host bookkeeping cannot be graph-captured, DP-SGD(F)'s step
    can. Where no mode holds both, each is read in its best mode and both are named;
    where one mode holds both, that mode alone is read."""
    host = {"placement": "hybrid-host"}
    records = [
        _step("dpsgd-f", 5000.0, **host),  # graph replay
        _stage_timed(_step("dpsgd-f", 9000.0, **host)),
        _end_to_end(_step("lazydp", 25.0, **host)),
    ]
    [row] = _speed_rows(records)
    assert "200x (batch 2048)" in row.ours and "graph replay + end-to-end" in row.ours
    records.append(_end_to_end(_step("dpsgd-f", 5500.0, **host)))
    [row] = _speed_rows(records)
    assert "220x (batch 2048)" in row.ours and "graph replay" not in row.ours


def test_modes_never_mix_with_stage_timing_nor_where_every_point_was_graph_replayed():
    """A graph replay beside a stage-timed run (whose syncs add to the step) is no
    comparison; nor is a mixed one where the eager run was asked for (--cuda-graph off)
    rather than forced (a step no CUDA graph can hold)."""
    staged_only = [
        _stage_timed(_step("dpsgd-f", 1200.0, **HYBRID)),
        _end_to_end(_step("lazydp", 10.0, **HYBRID)),  # never graph-captured
    ]
    assert [r.verdict for r in _speed_rows(staged_only)] == [NO_DATA]
    asked_eager = [
        _end_to_end(_step("dpsgd-f", 1200.0, **HYBRID), blocker="--cuda-graph off"),
        _step("lazydp", 12.0, **HYBRID),
    ]
    assert [r.verdict for r in _speed_rows(asked_eager)] == [NO_DATA]
    ungraphable = _end_to_end(_step("dpsgd-f", 1200.0, **HYBRID))
    assert "100x" in _speed_rows([*asked_eager[1:], ungraphable])[0].ours


def _oom_row(records: list[dict]):
    claim = [c for c in CLAIMS if c.figure == "13a" and "out of memory" in c.text]
    [row] = fidelity_rows(records, claim)
    return row


def test_the_oom_claim_agrees_only_where_lazydp_ran_at_192_gb():
    memory = {"placement": "gpu", "estimate_gpu_bytes": 200e9, "limit_gpu_bytes": 139e9}
    skipped = [
        failed(a, "skipped", table_bytes=GB192, table_size="192GB", memory=memory)
        for a in ("sgd", "dpsgd-f", "lazydp")
    ]
    row = _oom_row(skipped)
    assert row.verdict == NO_DATA and "LazyDP did not run at 192 GB either" in row.ours
    lazy = _step("lazydp", 4.0, table_bytes=GB192)
    row = _oom_row([*skipped[:2], lazy])
    assert row.verdict == AGREE and "needs 200 GB GPU" in row.ours and "LazyDP ran" in row.ours
    assert _oom_row([_step("dpsgd-f", 90.0, table_bytes=GB192), lazy]).verdict == DIFFER


def _hardest_row(records: list[dict]):
    claim = [c for c in CLAIMS if c.figure == "13b-d"]
    [row] = fidelity_rows(records, claim)
    return row


def test_the_hardest_setting_is_taken_over_the_papers_settings_only():
    records = [_step("lazydp", 10.0), _step("dpsgd-f", 1000.0)]  # pooling 1: fig. 10's point
    assert _hardest_row(records).verdict == NO_DATA  # it alone varies nothing
    for pooling, speedup in ((10, 40.0), (20, 30.0)):
        records += [
            _step("lazydp", 10.0, pooling=pooling),
            _step("dpsgd-f", 10.0 * speedup, pooling=pooling),
        ]
    records += [
        _step("lazydp", 10.0, distribution="zipf:0.9"),  # fig. 13(d)'s medium locality
        _step("dpsgd-f", 250.0, distribution="zipf:0.9"),
    ]
    row = _hardest_row(records)
    assert row.verdict == AGREE and "lowest 25.0x (medium locality" in row.ours
    # off the paper's settings: pooling 5, a 9.6 GB table, another distribution
    records += [
        _step("lazydp", 10.0, pooling=5),
        _step("dpsgd-f", 20.0, pooling=5),
        _step("lazydp", 10.0, pooling=10, table_bytes=9_600_000_000),
        _step("dpsgd-f", 20.0, pooling=10, table_bytes=9_600_000_000),
        _step("lazydp", 10.0, distribution="zipf:0.7"),
        _step("dpsgd-f", 20.0, distribution="zipf:0.7"),
    ]
    row = _hardest_row(records)
    assert row.verdict == AGREE and "lowest 25.0x" in row.ours and "4 of the paper's" in row.ours
