"""Sweeps: records per point, resume, isolation of failures, crash safety, presets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazydp_bench.config import RunConfig
from lazydp_bench.sweep.presets import expand_preset
from lazydp_bench.sweep.runner import grid_configs
from tests.conftest import ROOT, cli

TINY = ("--workload", "tiny", "--iterations", "2", "--warmup", "1", "--noise-multiplier", "1")


def records(out):
    return [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]


def test_2x2x2_sweep_then_resume_runs_nothing(tmp_path):
    args = (
        "sweep",
        *TINY,
        "--algo",
        "sgd,lazydp",
        "--table-size",
        "full,x2",
        "--batch-size",
        "4,8",
        "--out",
        str(tmp_path),
    )
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    recs = records(tmp_path)
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs)
    combos = {
        (r["config"]["algo"], r["config"]["table_bytes"], r["config"]["batch_size"]) for r in recs
    }
    assert len(combos) == 8
    assert "x SGD" in res.stdout
    before = (tmp_path / "runs.jsonl").read_bytes()
    again = cli(*args, "--resume")
    assert again.returncode == 0 and "resumed" in again.stdout
    assert (tmp_path / "runs.jsonl").read_bytes() == before


def test_failures_become_records_and_the_rest_still_runs(tmp_path):
    res = cli(
        "sweep",
        *TINY,
        "--algo",
        "sgd",
        "--table-size",
        "full,50TB",
        "--placement",
        "cpu",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    by_size = {r["config"]["table_size"]: r for r in records(tmp_path)}
    assert by_size["50TB"]["status"] == "skipped"
    assert "host needs" in by_size["50TB"]["error"]
    assert (
        by_size["50TB"]["memory"]["estimate_host_bytes"]
        > by_size["50TB"]["memory"]["limit_host_bytes"]
    )
    assert by_size[None]["status"] == "ok"
    slow = cli("sweep", *TINY, "--algo", "sgd", "--point-timeout", "0.5", "--out", str(tmp_path))
    assert slow.returncode == 1  # a failed point fails the sweep
    assert records(tmp_path)[-1]["status"] == "timeout"


def test_killed_sweep_leaves_valid_jsonl(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lazydp_bench",
            "sweep",
            *TINY,
            "--algo",
            "sgd,eana,lazydp,dpsgd-f",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    path = tmp_path / "runs.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (path.exists() and path.read_text().count("\n") >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its point in flight
    proc.wait()
    lines = path.read_text().splitlines()
    assert 1 <= len(lines) < 4
    assert all(json.loads(x)["status"] == "ok" for x in lines)
    assert path.read_text().endswith("\n")


def test_presets_match_the_paper_grids():
    base = RunConfig()
    fig3 = grid_configs(base, expand_preset("fig3"))
    assert len(fig3) == 16
    assert {c.table_size for c in fig3} == {"96MB", "960MB", "9.6GB", "96GB"}
    assert {c.algo for c in fig3} == {"sgd", "dpsgd-b", "dpsgd-r", "dpsgd-f"}
    fig10 = grid_configs(base, expand_preset("fig10"))
    assert {(c.algo, c.batch_size) for c in fig10} == {
        (a, b) for a in ("sgd", "dpsgd-f", "lazydp") for b in (1024, 2048, 4096)
    }
    assert {c.table_size for c in grid_configs(base, expand_preset("fig13a"))} == {
        "24GB",
        "48GB",
        "96GB",
        "192GB",
    }
    assert {c.pooling for c in grid_configs(base, expand_preset("fig13b"))} == {1, 10, 20, 30}
    fig13c = grid_configs(base, expand_preset("fig13c"))
    assert {c.workload for c in fig13c} == {"rmc1", "rmc2", "rmc3"} and {
        c.table_size for c in fig13c
    } == {None}
    assert {c.distribution for c in grid_configs(base, expand_preset("fig13d"))} == {
        "low",
        "medium",
        "high",
    }
    assert {c.algo for c in grid_configs(base, expand_preset("fig14"))} == {"eana", "lazydp"}
    paper = grid_configs(base, expand_preset("paper"))
    # fig5 = fig3 and fig11/12 = fig10; fig10 repeats fig3's sgd/dpsgd-f at 96GB batch 2048,
    # fig13a and fig13b (pooling 1) repeat fig10's 96GB points, fig14 its lazydp points
    assert len(paper) == 16 + (9 - 2) + (12 - 3) + (12 - 3) + 9 + 9 + (6 - 3)


def test_dry_run_lists_points_and_writes_nothing(tmp_path):
    res = cli(
        "sweep",
        "--preset",
        "fig13a",
        "--placement",
        "cpu",
        "--host-mem-limit",
        "125GiB",
        "--noise-multiplier",
        "1",
        "--dry-run",
        "--out",
        str(tmp_path / "none"),
    )
    assert res.returncode == 0, res.stderr
    assert "12 points" in res.stdout and "skip" in res.stdout
    assert not (tmp_path / "none").exists()


def test_time_budget_lowers_measured_steps_to_a_floor_of_three(tmp_path):
    from lazydp_bench.runtime.trainer import budget_iterations

    assert budget_iterations(10, None, 0.5) == 10
    assert budget_iterations(10, 100.0, 0.5) == 10
    assert budget_iterations(10, 2.0, 0.5) == 4
    assert budget_iterations(10, 0.1, 0.5) == 3
    res = cli(
        "sweep",
        *TINY,
        "--algo",
        "sgd",
        "--iterations",
        "50",
        "--max-seconds",
        "1e-6",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    (rec,) = records(tmp_path)
    assert rec["config"]["iterations"] == 50
    assert rec["config"]["iterations_measured"] == 3
    assert rec["timing"]["measured_iters"] == 3


def test_a_killed_worker_is_oom_only_with_evidence(tmp_path):
    """SIGKILL used to be recorded as `oom` ("likely out of host memory") with no evidence;
    now only a kill the cgroup's OOM killer counted is, and a signal is named."""
    import signal

    from lazydp_bench.sweep.runner import killed_status, oom_kills

    kill, term = -signal.SIGKILL, -signal.SIGTERM
    assert killed_status(kill, 3, 3) == ("error", "killed (signal 9: SIGKILL)")
    assert killed_status(kill, None, None) == ("error", "killed (signal 9: SIGKILL)")
    assert killed_status(kill, 3, 4) == ("oom", "killed by the OOM killer (SIGKILL)")
    assert killed_status(term, 0, 0) == ("error", "killed (signal 15: SIGTERM)")
    assert killed_status(1, 0, 0) == ("error", "exit code 1")
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 2\noom 1\noom_kill 5\n")
    assert oom_kills(events) == 5
    assert oom_kills(tmp_path / "missing") is None


def test_resume_keys_leave_out_the_memory_limit_and_retry_failed_points(tmp_path):
    from lazydp_bench.config import RunConfig
    from lazydp_bench.records.schema import new_header
    from lazydp_bench.records.store import append_record
    from lazydp_bench.sweep.runner import done_keys, point_key

    assert point_key(RunConfig(host_mem_limit=2**30)) == point_key(RunConfig())
    for key, status in (("a", "ok"), ("b", "oom"), ("c", "timeout"), ("d", "skipped")):
        stub = {**new_header(status, "x"), "config": {}, "env": {}, "sweep": {"key": key}}
        if status == "ok":
            stub |= {"timing": {}, "stages": [], "memory": {}}
        append_record(tmp_path / "runs.jsonl", stub)
    assert done_keys(tmp_path) == {"a", "b", "c", "d"}
    assert done_keys(tmp_path, retry_failed=True) == {"a", "d"}


def test_resume_keys_of_older_points_survive_later_config_fields():
    """Fields added to RunConfig later (`data`, `sparsity`) leave a point's key as it was
    while at their defaults (the key older records carry), and change it otherwise."""
    import hashlib
    import json

    from lazydp_bench.config import RunConfig, SparsityConfig
    from lazydp_bench.sweep.runner import point_key

    old = RunConfig().to_dict()
    old["privacy"]["epsilon"] = RunConfig().privacy.target_epsilon
    for name in ("data", "sparsity", "gpus", "data_reader"):
        del old[name]
    old.pop("cpu_tdp_w")  # an input of the host energy estimate: never in a key
    blob = json.dumps(old, sort_keys=True, default=str)
    assert point_key(RunConfig()) == hashlib.sha1(blob.encode()).hexdigest()[:16]
    assert point_key(RunConfig(sparsity=SparsityConfig(tau=2.0))) != point_key(RunConfig())
    assert point_key(RunConfig(gpus=2)) != point_key(RunConfig())
    # keys computed by commit 3c0adc0's point_key: stored sweeps from then still resume
    assert point_key(RunConfig()) == "975100d025a9d9f5"
    assert point_key(RunConfig(algo="lazydp", table_size="9.6GB")) == "ef20915137e96bd1"


def test_a_second_sweep_on_the_same_store_refuses_to_start(tmp_path):
    from lazydp_bench.errors import BenchError
    from lazydp_bench.records.store import exclusive_store

    held = exclusive_store(tmp_path)
    with held, pytest.raises(BenchError, match="another sweep is writing to"):  # noqa: SIM117
        with exclusive_store(tmp_path):
            pass
    with exclusive_store(tmp_path):  # released: the next sweep may run
        pass


def _workers_of(parent: int) -> list[int]:
    """PIDs of the sweep workers whose parent is `parent`."""
    pids = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{proc}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"lazydp_bench.sweep.worker" in cmdline and parent_marker(proc) == parent:
            pids.append(int(proc))
    return pids


def parent_marker(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


LONG = ("--iterations", "100000")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_worker_dies_with_its_sweep_and_leaves_no_temp_folder(tmp_path, how):
    """kill -9 (or Ctrl-C) of the sweep alone used to leave its worker running (under PID
    1, for the rest of its point) and the point's temp folder behind."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)}
    out = ("--out", str(tmp_path / "out"))
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lazydp_bench", "sweep", *TINY, "--algo", "sgd", *LONG, *out],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _workers_of(sweep.pid):
        time.sleep(0.2)
    workers = _workers_of(sweep.pid)
    assert workers, "the sweep never started its worker"
    time.sleep(2)  # the worker is past its imports, running steps
    sweep.send_signal(how)  # SIGKILL: the sweep itself can clean nothing
    code = sweep.wait()
    assert code == {signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: 130, signal.SIGTERM: 143}[how]
    deadline = time.time() + 30
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in workers):
        time.sleep(0.2)
    alive = [p for p in workers if os.path.exists(f"/proc/{p}") and parent_marker(str(p))]
    assert not alive, f"workers outlived their sweep: {alive}"
    assert not list(temp.glob("lazydp-point-*")), "the point's temp folder was left behind"


def _worker(tmp_path, parent: int, iterations: int = 100_000) -> subprocess.Popen:
    """A sweep worker on a long tiny CPU point, as the sweep starts it (parent pid in its
    environment), its spec in a folder of its own."""
    from lazydp_bench.config import RunConfig
    from lazydp_bench.sweep.worker import PARENT_ENV

    folder = tmp_path / "point"
    folder.mkdir()
    config = RunConfig(workload="tiny", table_size=None, placement="cpu", iterations=iterations)
    (folder / "point.json").write_text(json.dumps({"config": config.to_dict(), "privacy": None}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), PARENT_ENV: str(parent)}
    cmd = [sys.executable, "-m", "lazydp_bench.sweep.worker", str(folder / "point.json")]
    return subprocess.Popen([*cmd, str(folder / "record.json")], env=env, cwd=ROOT)


def _catches(pid: int, sig: int) -> bool:
    """Whether the process has installed a handler for `sig` (SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_whose_sweep_is_gone_dies_at_once_and_cleans_up(tmp_path):
    """Its parent is not the sweep that started it (the sweep died before the worker
    could ask for SIGTERM on its death): it ends by SIGTERM and removes its folder."""
    worker = _worker(tmp_path, parent=1)
    try:
        assert worker.wait(timeout=60) == -signal.SIGTERM
    finally:
        worker.kill()  # a failed check leaves no worker running
    assert not (tmp_path / "point").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_from_outside_dies_of_the_signal(tmp_path):
    """A SIGTERM from outside (a scheduler, a user) used to end the worker with exit code
    143, which the sweep recorded as a plain error; it now dies of the signal, so the
    record says `killed (signal 15: SIGTERM)`, and removes its folder."""
    from lazydp_bench.sweep.runner import killed_status

    worker = _worker(tmp_path, parent=os.getpid())
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not _catches(worker.pid, signal.SIGTERM):
            time.sleep(0.05)
        assert _catches(worker.pid, signal.SIGTERM), "the worker never installed its handler"
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    finally:
        worker.kill()
    assert killed_status(code, 0, 0) == ("error", "killed (signal 15: SIGTERM)")
    assert not (tmp_path / "point").exists()
