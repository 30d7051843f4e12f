"""`data make-criteo`, `data profile` and `run --data criteo:...` as a user runs them, and
bad data refused in one line with exit code 2 before anything is written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli
from tests.data_criteo.helpers import line, write

RUN = (
    "run",
    "--workload",
    "criteo-kaggle",
    "--table-size",
    "1MB",
    "--placement",
    "cpu",
    "--iterations",
    "2",
    "--warmup",
    "1",
)


def test_make_profile_and_train_on_a_generated_file(tmp_path):
    data = tmp_path / "train.txt.gz"
    made = cli("data", "make-criteo", str(data), "--lines", "3000", "--seed", "1", "--gzip")
    assert made.returncode == 0, made.stderr
    assert "3,000 lines" in made.stdout and "% clicks" in made.stdout

    prof = tmp_path / "p.json"
    shown = cli(
        "data", "profile", str(data), "--table-size", "96MB", "--out", str(prof), columns=80
    )
    assert shown.returncode == 0, shown.stderr
    assert all(len(x) <= 80 for x in shown.stdout.splitlines()), shown.stdout
    assert "│ C26" in shown.stdout and "top 0.1%" in shown.stdout
    assert json.loads(prof.read_text())["lines"] == 3000

    out = tmp_path / "runs"
    res = cli(*RUN, "--algo", "sgd,lazydp", "--data", f"criteo:{data}", "--out", str(out))
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["config"]["algo"] for r in recs] == ["sgd", "lazydp"]
    for rec in recs:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["config"]["data"] == {
            "source": "criteo",
            "paths": [str(data)],
            "categorical": "hash",
            "dense_transform": "dlrm",
            "on_bad_line": "error",
        }
        assert rec["config"]["distribution"] == "criteo"
        # 3 steps plus the first look-ahead batch, 128 lines each
        assert rec["data"]["lines_used"] == 4 * 128 and rec["data"]["skipped_lines"] == 0
        assert rec["data"]["reader_lines_per_s"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "criteo:{bad}"), "bad.txt:3: I1 'x' is not an integer (--on-bad-line skip"),
        (("--data", "criteo:{bad}", "--workload", "tiny"), "needs a Criteo-shaped workload"),
        (("--categorical", "vocab"), "--categorical applies to --data criteo:PATH"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    bad = write(tmp_path / "bad.txt", [line("0"), line("1"), line("0", ["x"])])
    out = tmp_path / "never"
    args = tuple(a.format(bad=bad) for a in args)
    res = cli(*RUN, "--algo", "sgd,lazydp", *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and message in " ".join(res.stderr.split())
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("out", "args", "message"),
    [
        ("p.png", (), "ends in .png, the figure's name"),
        ("p.json", ("--batch-size", "0"), "--batch-size must be positive, got 0"),
        ("p.json", ("--workload", "nope"), "unknown workload 'nope'"),
        ("sub", (), "is a directory; give a file name"),
        ("missing/p.json", (), "folder"),
        ("blocked.json", (), "blocked.png is a directory"),
    ],
)
def test_bad_profile_outputs_are_refused_before_reading(tmp_path, out, args, message):
    """Refused in one line with nothing written: the JSON and the figure beside it (OUT
    with .png) are both checked before the data is read."""
    data = write(tmp_path / "d.txt", [line("0"), line("1")])
    (tmp_path / "sub").mkdir()
    (tmp_path / "blocked.png").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    res = cli("data", "profile", str(data), "--out", str(tmp_path / out), *args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and message in " ".join(res.stderr.split())
    assert len(res.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("sig", "code", "how"), [("SIGTERM", 143, "SIGTERM"), ("SIGINT", 130, "Ctrl-C")]
)
def test_an_interrupted_make_criteo_leaves_nothing_and_says_so(tmp_path, sig, code, how):
    """SIGTERM used to kill the writer outright, leaving its temporary file (31 MB after
    3 s) beside the target; now it ends like Ctrl-C: the temporary file is removed, one
    `interrupted` line, exit 143 (130 for Ctrl-C)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    folder = tmp_path / "out"
    folder.mkdir()
    cmd = [sys.executable, "-m", "lazydp_bench", "data", "make-criteo", str(folder / "t.txt")]
    with open(tmp_path / "stderr", "w") as stderr:  # a file: never a full pipe
        proc = subprocess.Popen([*cmd, "--lines", "100000000"], env=env, cwd=ROOT, stderr=stderr)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(folder.glob(".t.txt.*.tmp")):
            time.sleep(0.05)
        assert list(folder.glob(".t.txt.*.tmp")), "the writer never started"
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=90)
    finally:
        proc.kill()  # a failed check leaves no writer filling the disk
        proc.wait()
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({how})")
    assert list(folder.iterdir()) == []
