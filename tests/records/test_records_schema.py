"""The record schema: what the writer accepts, what the loader upgrades and skips, and the
README's record section checked against the dataclasses."""

import json
import re
from pathlib import Path

import pytest

from lazydp_bench.errors import BenchError
from lazydp_bench.records.schema import (
    KINDS,
    BenchRecord,
    RunRecord,
    field_names,
    from_dict,
    new_header,
    to_dict,
)
from lazydp_bench.records.store import append_record, load_records, upgrade
from tests.conftest import ROOT

OK_RUN = {
    **new_header("ok"),
    "kind": "run",
    "config": {"algo": "sgd"},
    "env": {},
    "timing": {"step_median_ms": 1.0},
    "stages": [],
    "memory": {},
}


def test_a_complete_run_record_round_trips():
    rec = from_dict(OK_RUN)
    assert isinstance(rec, RunRecord) and rec.energy is None  # not measured: null
    assert to_dict(rec) == {
        **OK_RUN,
        **{
            k: None
            for k in (
                "privacy",
                "energy",
                "noise",
                "sweep",
                "traceback",
                "data",
                "sparsity",
                "utility",
            )
        },
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "bogus"}, "unknown record kind"),
        ({"kind": []}, "unknown record kind []"),  # was a TypeError: unhashable
        ({"stages": [{"median_ms": 1.0}]}, "every stage needs a name"),
        ({"stages": [{"name": "forward", "median_ms": "1"}]}, "'forward' needs a numeric"),
        ({"stages": [{"name": "forward"}]}, "stage 'forward' has no median_ms"),
        ({"extra": 1}, "unknown run record field(s): extra"),
        ({"status": "fine"}, "status must be one of"),
        ({"timing": None}, "an ok run record needs 'timing'"),
        ({"config": "sgd"}, "'config' must be an object"),
        ({"schema_version": 1}, "was not upgraded"),
    ],
)
def test_malformed_records_are_refused(change, message):
    with pytest.raises(BenchError, match=re.escape(message)):
        from_dict({**OK_RUN, **change})


def test_a_missing_field_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "runs.jsonl"
    broken = {k: v for k, v in OK_RUN.items() if k != "env"}
    with pytest.raises(BenchError, match="incomplete run record"):
        append_record(path, broken)
    assert not path.exists() or path.read_text() == ""
    stub = {**OK_RUN, "status": "skipped", "timing": None, "stages": None, "memory": None}
    append_record(path, stub)  # a stub may leave its measurements null
    assert json.loads(path.read_text())["status"] == "skipped"


def test_loader_skips_a_schema_invalid_line_with_its_place(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, OK_RUN)
    with open(path, "a") as f:
        f.write(json.dumps({**OK_RUN, "status": "fine"}) + "\n")
    with pytest.warns(UserWarning, match=r"malformed line\(s\): .*runs.jsonl:2 \("):
        records = load_records([path])
    assert [r["status"] for r in records] == ["ok"]


def test_v1_run_records_gain_their_kind():
    v1 = {k: v for k, v in OK_RUN.items() if k != "kind"} | {"schema_version": 1}
    upgraded = upgrade(v1)
    assert (upgraded["kind"], upgraded["schema_version"]) == ("run", 2)
    assert isinstance(from_dict(upgraded), RunRecord)


def test_readme_record_section_names_every_field():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Records") : readme.index("### `sweep`")]
    for cls in KINDS.values():
        for name in field_names(cls):
            assert name in section, f"README's Records section does not name {name!r}"
    assert BenchRecord.kind in section


def test_a_failed_run_is_recorded_with_its_traceback(tmp_path, monkeypatch):
    """A run that raises becomes an error record (with where it failed) that the writer
    accepts: a crash never loses the record or stops a sweep."""
    from lazydp_bench.runtime import trainer
    from tests.conftest import tiny_config

    def broken(*_args, **_kw):
        raise RuntimeError("a kernel failed")

    monkeypatch.setattr(trainer, "_measure", broken)
    record = trainer.execute(trainer.plan_run(tiny_config("sgd")))
    assert record["status"] == "error" and "a kernel failed" in record["error"]
    assert "RuntimeError" in record["traceback"]
    path = tmp_path / "runs.jsonl"
    append_record(path, record)
    assert load_records([path])[0]["traceback"] == record["traceback"]


BAD_LINES = [
    b"[1, 2]",
    b"null",
    b'{"schema_version": "abc"}',
    b'{"schema_version": 99, "kind": "run"}',
    b"\xff\xfe not utf-8",
    b"{torn",
]


def test_every_kind_of_bad_line_is_skipped_in_one_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, OK_RUN)
    no_median = {**OK_RUN, "stages": [{"name": "forward"}]}
    config_text = {**OK_RUN, "config": "sgd"}
    with open(path, "ab") as f:
        for line in [*BAD_LINES, json.dumps(no_median).encode(), json.dumps(config_text).encode()]:
            f.write(line + b"\n")
    append_record(path, {**OK_RUN, "run_id": "last"})
    with pytest.warns(UserWarning) as caught:
        records = load_records([path])
    assert [r["run_id"] for r in records] == [OK_RUN["run_id"], "last"]
    assert len(caught) == 1  # one warning with the count, not one per line
    message = str(caught[0].message)
    assert message.startswith("skipped 8 malformed line(s): ")
    assert "runs.jsonl:2 (" in message and "and 3 more" in message


def test_an_append_after_a_torn_line_starts_a_new_line(tmp_path):
    """A crash mid-line used to glue the next record onto it, losing both."""
    path = tmp_path / "runs.jsonl"
    append_record(path, OK_RUN)
    text = path.read_text()
    path.write_text(text + text[: len(text) // 2])  # a second copy, torn mid-way
    append_record(path, {**OK_RUN, "run_id": "after"})
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        records = load_records([path])
    assert [r["run_id"] for r in records] == [OK_RUN["run_id"], "after"]


def test_a_failed_append_is_one_bench_error(tmp_path):
    with pytest.raises(BenchError, match=r"cannot append to .*gone/runs\.jsonl: No such file"):
        append_record(tmp_path / "gone" / "runs.jsonl", OK_RUN)
    (tmp_path / "runs.jsonl").mkdir()
    with pytest.raises(BenchError, match=r"cannot append to .*: Is a directory"):
        append_record(tmp_path / "runs.jsonl", OK_RUN)


def test_a_record_file_that_cannot_be_read_is_one_bench_error(tmp_path, monkeypatch):
    (tmp_path / "a" / "runs.jsonl").mkdir(parents=True)  # a folder where records go
    with pytest.raises(BenchError, match=r"cannot read .*a/runs\.jsonl: Is a directory"):
        load_records([tmp_path])

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "is_dir", denied)  # a folder the user may not enter
    with pytest.raises(BenchError, match=r"cannot read .*: Permission denied"):
        load_records([tmp_path / "locked"])
