"""The batch source's reader in a child process: the same batches, order, counts and
errors as the reader in threads, and no process or shared memory left behind when the
source is closed, dropped, fails, or its process is interrupted or killed."""

from __future__ import annotations

import gc
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lazydp_bench.config import RunConfig
from lazydp_bench.data import criteo, criteo_process
from lazydp_bench.data.criteo import CriteoBatchSource, reader_mode, scan
from lazydp_bench.errors import BenchError
from tests.conftest import ROOT, cli
from tests.data_criteo.helpers import CPU, config, line, varied, write

ROWS = (97,) * 26
SMALL_BLOCK = 4096  # ~60 lines a block: many blocks, batches cut across them


def _source(data, mode: str, batch: int = 64) -> CriteoBatchSource:
    return CriteoBatchSource(
        data, ROWS, batch_size=batch, table_device=CPU, mlp_device=CPU,
        dtype=torch.float64, threads=2, reader=mode,
    )  # fmt: skip


def _gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether process `pid` has exited (a zombie counts: it runs nothing), waiting up to
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _unlinked(name: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while (Path("/dev/shm") / name).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_process_reader_gives_the_thread_readers_batches(tmp_path, monkeypatch):
    """Batch for batch, byte for byte (skipped lines, the torchrec transform, blocks cut
    across batches, the wrap into a second pass), with the same counts and look-ahead;
    the process source, dropped without `close()`, leaves no process or shared memory."""
    monkeypatch.setattr(criteo, "SOURCE_BLOCK_BYTES", SMALL_BLOCK)  # passed to the child
    path = write(tmp_path / "t.txt", varied(1500, {999: line("x"), 1200: line("2")}))
    data = scan(config(path, on_bad_line="skip", dense_transform="torchrec"), need_lines=None)
    runs = {}
    for mode in ("thread", "process"):
        src = _source(data, mode)
        batches = []
        for _ in range(40):  # 2560 lines: into the second pass
            ahead = src.peek()
            batches.append(src.advance())
            assert batches[-1] is ahead
        stats = src.stats()
        runs[mode] = (batches, {k: v for k, v in stats.items() if "reader" not in k})
        assert stats["reader"] == mode and stats["reader_lines_per_s"] > 0
        if mode == "process":
            pid, name = src._process.pid, src._process.shm_name
            assert (Path("/dev/shm") / name).exists() and not _gone(pid, 0)
            assert 0 < stats["reader_start_s"] <= stats["reader_prefill_s"]
            del src, ahead  # dropped, not closed: collecting it stops the process
            gc.collect()
            assert _gone(pid) and _unlinked(name)
        else:
            src.close()
    (threaded, stats_t), (processed, stats_p) = runs["thread"], runs["process"]
    assert stats_t == stats_p, (stats_t, stats_p)
    assert stats_t["skipped_lines"] == 3 and stats_t["passes"] == 1  # 999 twice, 1200
    for a, b in zip(threaded, processed, strict=True):
        for name in ("dense", "labels", "rows"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.shape == y.shape
            assert x.numpy().tobytes() == y.numpy().tobytes()


def _first_error(data, mode: str) -> tuple[int, str, CriteoBatchSource | None]:
    """(batches taken before the error, its message, the source) through `mode`'s reader."""
    src = None
    taken = 0
    with pytest.raises(BenchError) as err:
        src = _source(data, mode)
        for taken in range(1, 200):  # noqa: B007
            src.advance()
    return taken, str(err.value), src


@pytest.mark.parametrize("kind", ["bad line", "truncated gzip"])
def test_process_reader_raises_the_same_error_at_the_same_batch(tmp_path, monkeypatch, kind):
    """A bad line (or a gzip stream that ends early) past what planning read surfaces at
    the same `advance()`, with the same one-line message naming file and line; the reader
    process is then gone and its shared memory unlinked."""
    monkeypatch.setattr(criteo, "SOURCE_BLOCK_BYTES", SMALL_BLOCK)
    if kind == "bad line":
        path = write(tmp_path / "t.txt", varied(3000, {2345: line("0", ["", "x"])}))
        want = f"{path}:2345: I2 'x' is not an integer"
    else:
        whole = gzip.compress("".join(varied(3000)).encode())
        path = tmp_path / "day_0.gz"
        path.write_bytes(whole[: len(whole) * 2 // 3])
        want = f"{path}:"
    # planning read a clean file; the source streams the damaged one
    clean = scan(config(write(tmp_path / "clean.txt", varied(100))), need_lines=None)
    data = replace(clean, files=(path,))
    taken_t, message_t, _ = _first_error(data, "thread")
    taken_p, message_p, src = _first_error(data, "process")
    assert want in message_t and len(message_t.splitlines()) == 1
    assert (taken_p, message_p) == (taken_t, message_t) and taken_t > 20
    assert _gone(src._process.pid) and _unlinked(src._process.shm_name)


_PARENT = """
import sys, time, torch
from lazydp_bench.data.criteo import CriteoBatchSource, scan
from lazydp_bench.config import DataConfig

if __name__ == "__main__":
    cpu = torch.device("cpu")
    src = CriteoBatchSource(
        scan(DataConfig((sys.argv[1],)), need_lines=None), (97,) * 26, batch_size=16,
        table_device=cpu, mlp_device=cpu, dtype=torch.float32, threads=2, reader="process",
    )
    src.advance()
    try:  # before the line the test waits for: its SIGINT may come right after it
        print(src._process.pid, src._process.shm_name, flush=True)
        while True:
            src.advance()
            time.sleep(0.01)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise SystemExit(130)
"""


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_no_orphan_process_or_shared_memory_when_the_run_is_interrupted(tmp_path, how):
    """Ctrl-C (SIGINT to the terminal's process group: the parent and its reader) ends the
    parent through KeyboardInterrupt, and the reader, which ignores SIGINT, with it; a
    parent killed outright leaves a reader that stops by itself once its pipe ends, and
    the resource tracker unlinks the shared memory."""
    path = write(tmp_path / "t.txt", varied(2000))
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        pid, name = parent.stdout.readline().split()
        assert not _gone(int(pid), 0) and (Path("/dev/shm") / name).exists()
        if how == "ctrl-c":
            os.killpg(parent.pid, signal.SIGINT)
        else:
            parent.kill()
        out, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    if how == "ctrl-c":
        assert parent.returncode == 130 and "interrupted" in out
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert _gone(int(pid)) and _unlinked(name)


def test_reader_mode_by_devices_and_room(monkeypatch):
    cuda, rows = torch.device("cuda"), 2048
    assert reader_mode("auto", (CPU, CPU), rows)[0] == "thread"
    assert reader_mode("auto", (CPU, cuda), rows)[0] == "process"
    assert reader_mode("thread", (cuda, cuda), rows)[0] == "thread"
    assert reader_mode("process", (CPU, CPU), rows)[0] == "process"
    with pytest.raises(BenchError, match="reader must be one of auto, thread, process"):
        reader_mode("fork", (CPU, CPU), rows)
    # a ring 2048 x 264 bytes a slot, 14 slots: /dev/shm must hold twice that
    assert criteo_process.ring_bytes(2048) == 14 * 528 * 1024
    monkeypatch.setattr(criteo_process, "SHM_DIR", "/proc")  # no free space there
    mode, why = reader_mode("auto", (cuda, cuda), rows)
    assert mode == "thread" and "the reader's ring needs 7 MiB" in why
    with pytest.raises(BenchError, match="reader process cannot start: /proc has 0 MiB"):
        reader_mode("process", (CPU, CPU), rows)


def test_data_speed_compares_both_readers_and_the_main_threads_latency(tmp_path):
    path = write(tmp_path / "t.txt", varied(3000))
    res = cli("data", "speed", str(path), "--batch-size", "64", "--threads", "2")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(r"^parse: 3,000 lines in [\d.]+ s = [\d,]+ lines/s$", out, re.M), out
    rate = r"46 batches of 64 in [\d.]+ s = [\d,]+ lines/s"
    assert re.search(rf"^batch source, reader in threads: {rate}$", out, re.M), out
    process = rf"^batch source, reader in a process: {rate} \(\+ [\d.]+ s process start\)$"
    assert re.search(process, out, re.M), out
    for label in ("no reader", "reader in threads", "reader in a process"):
        found = re.search(rf"^  {label}: ([\d,]+) / ([\d,]+) / ([\d,]+) µs$", out, re.M)
        assert found, out
        p50, p99, most = (int(v.replace(",", "")) for v in found.groups())
        assert 0 <= p50 <= p99 <= most


def test_run_trains_through_a_reader_process_and_refuses_a_bad_reader(tmp_path):
    """`run --data-reader process` on the CPU: the record says where the reader ran and
    counts the lines it took; a bad value is one line and exit code 2, before anything is
    written, and the option without --data is refused too."""
    data = write(tmp_path / "t.txt", varied(1000))
    out = tmp_path / "runs"
    run = ("run", "--workload", "criteo-kaggle", "--table-size", "1MB", "--placement", "cpu")
    steps = ("--iterations", "2", "--warmup", "1", "--batch-size", "64")
    process = ("--data", f"criteo:{data}", "--data-reader", "process", "--algo", "sgd")
    res = cli(*run, *steps, *process, "--out", str(out))
    assert res.returncode == 0, res.stderr
    (rec,) = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert rec["status"] == "ok", rec.get("error")
    assert (rec["data"]["reader"], rec["data"]["reader_why"]) == ("process", "asked")
    assert rec["data"]["lines_used"] == 4 * 64 and rec["data"]["reader_start_s"] > 0
    bad = cli(*run, *steps, *process[:3], "fork", "--out", str(tmp_path / "never"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip() == "error: unknown --data-reader 'fork' (valid: auto, thread, process)"
    )
    assert not (tmp_path / "never").exists()
    with pytest.raises(BenchError, match="--data-reader applies to --data criteo:PATH"):
        RunConfig(data_reader="thread")
