"""`lazydp-bench sweep`: a grid of runs, each point in its own subprocess.

An OOM, a CUDA fault or a hang ends only its point, which becomes a record with status
ok | oom | timeout | error | skipped (the memory estimate says it cannot fit: the record
says what it needs and what the machine has). Each record is appended atomically as soon
as its point ends, so a killed sweep loses at most the point in flight; `resume` skips
points whose record is already in the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lazydp_bench.algorithms import ALGORITHMS
from lazydp_bench.config import RunConfig
from lazydp_bench.errors import DoesNotFit
from lazydp_bench.measure.env import machine_info
from lazydp_bench.placement.layout import MemoryLimits
from lazydp_bench.records.schema import new_header
from lazydp_bench.records.store import RUNS_FILE, load_records
from lazydp_bench.runtime.sharded_trainer import plan_point
from lazydp_bench.runtime.trainer import RunPlan
from lazydp_bench.sweep.worker import PARENT_ENV
from lazydp_bench.workloads import load_workload

AXES = (
    "workload",
    "table_size",
    "placement",
    "gpus",
    "batch_size",
    "pooling",
    "distribution",
    "algo",
)
STDERR_TAIL_LINES = 12


@dataclass(frozen=True)
class Point:
    config: RunConfig
    key: str
    plan: RunPlan | None  # None: skipped (does not fit) or not implemented
    skip_reason: str | None
    need: dict | None = None  # estimate for a point skipped because it does not fit


def point_key(config: RunConfig) -> str:
    """Identity of a point for --resume: the measured configuration, canonical JSON,
    hashed. The privacy target is spelled out (50 unless given, never None), and the host
    memory limit (a planning input) and --cpu-tdp (an input of the host energy estimate)
    are left out, so adding either re-runs nothing."""
    data = config.to_dict()
    data["privacy"]["epsilon"] = config.privacy.target_epsilon
    data["host_mem_limit"] = None  # a planning limit, not part of what is measured
    data.pop("cpu_tdp_w", None)  # an input of the host energy estimate, not of the run
    for name, default in later_defaults().items():
        if data.get(name) == default:
            del data[name]
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def later_defaults() -> dict[str, object]:
    """Configuration fields added after results existed, at their defaults: left out of a
    point's identity while at them, so older results still resume."""
    defaults = RunConfig().to_dict()
    return {
        "data": None,
        "sparsity": defaults["sparsity"],
        "gpus": 1,
        "data_reader": defaults["data_reader"],
    }


def grid_configs(base: RunConfig, grids: list[dict[str, tuple]]) -> list[RunConfig]:
    """Cross product of each grid's axes over `base`; points in order, duplicates dropped."""
    seen, out = set(), []
    for grid in grids:
        values = [grid.get(axis, (getattr(base, axis),)) for axis in AXES]
        for combo in itertools.product(*values):
            fields = dict(zip(AXES, combo, strict=True))
            if fields["table_size"] == "full":
                fields["table_size"] = None
            # the workload's own batch/pooling, spelled out, so equal points dedupe
            wl = load_workload(fields["workload"])
            fields["batch_size"] = fields["batch_size"] or wl.batch_size
            fields["pooling"] = fields["pooling"] or wl.pooling
            algo = ALGORITHMS.get(fields["algo"])
            if algo is not None and not algo.private:
                fields["clipping"] = None  # a clipping override is for the private algorithms
            config = replace(base, **fields)
            key = point_key(config)
            if key not in seen:
                seen.add(key)
                out.append(config)
    return out


def plan_points(configs: list[RunConfig], limits: MemoryLimits) -> list[Point]:
    """Validate every point before running any; a point that cannot fit is planned as skipped."""
    points = []
    for config in configs:
        key = point_key(config)
        if config.algo not in ALGORITHMS:
            points.append(Point(config, key, None, f"algorithm {config.algo!r} is not implemented"))
            continue
        try:
            points.append(Point(config, key, plan_point(config, limits), None))
        except DoesNotFit as exc:
            need = {
                "placement": exc.placement,
                "estimate_gpu_bytes": exc.gpu_bytes,
                "estimate_host_bytes": exc.host_bytes,
            }
            points.append(Point(config, key, None, str(exc), need))
    return points


FAILED = ("oom", "timeout", "error")


def done_keys(out_dir: Path, retry_failed: bool = False) -> set[str]:
    """Keys of the points already recorded in `out_dir` (with `retry_failed`, only those
    that did not fail: an oom, timeout or error point runs again)."""
    path = out_dir / RUNS_FILE
    if not path.exists():
        return set()
    records = load_records([path])
    keys = {(r.get("sweep") or {}).get("key") for r in records if r.get("sweep")}
    if retry_failed:
        keys = {
            (r.get("sweep") or {}).get("key")
            for r in records
            if r.get("sweep") and r.get("status") not in FAILED
        }
    return keys - {None}


def oom_kills(events: Path = Path("/sys/fs/cgroup/memory.events")) -> int | None:
    """The cgroup's count of processes its OOM killer ended (None: not readable)."""
    try:
        for line in events.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def killed_status(returncode: int, oom_before: int | None, oom_after: int | None) -> tuple:
    """(status, message) of a worker that ended without a record: `oom` only when the
    cgroup's OOM killer counted a kill meanwhile, else what the exit says (a signal by
    name)."""
    oom = oom_before is not None and oom_after is not None and oom_after > oom_before
    if returncode < 0:
        name = signal.Signals(-returncode).name
        if oom:
            return "oom", f"killed by the OOM killer ({name})"
        return "error", f"killed (signal {-returncode}: {name})"
    if oom:
        return "oom", f"exit code {returncode} after an OOM kill in its cgroup"
    return "error", f"exit code {returncode}"


def _stub_record(point: Point, status: str, error: str, limits: MemoryLimits) -> dict:
    """A record for a point that produced none itself (skipped, timeout, crash)."""
    cfg = point.config
    need = point.need
    if point.plan is not None:
        n = point.plan.needs[point.plan.placement]
        need = {"estimate_gpu_bytes": n.gpu_bytes, "estimate_host_bytes": n.host_bytes}
    return {
        "kind": "run",
        **new_header(status, error),
        "config": {
            "algo": cfg.algo,
            "workload": point.plan.workload.name if point.plan else cfg.workload,
            "table_size": cfg.table_size,
            "table_bytes": point.plan.workload.table_bytes() if point.plan else None,
            "batch_size": point.plan.batch_size if point.plan else cfg.batch_size,
            "pooling": point.plan.pooling if point.plan else cfg.pooling,
            "distribution": cfg.distribution,
            "placement": point.plan.placement if point.plan else cfg.placement,
            "placement_requested": cfg.placement,
            "gpus": cfg.gpus,
            "iterations": cfg.iterations,
            "warmup": cfg.warmup,
            "seed": cfg.seed,
        },
        "privacy": None,
        "env": machine_info(),
        "timing": None,
        "stages": [],
        "memory": {
            **(need or {}),
            "limit_gpu_bytes": limits.gpu_bytes,
            "limit_host_bytes": limits.host_bytes,
            "limit_host_source": limits.host_source,
        },
        "energy": None,
    }


def run_point(point: Point, timeout_s: float, limits: MemoryLimits) -> dict:
    """Run one point in a subprocess and return its record (never raises for its failures)."""
    if point.plan is None:
        return _stub_record(point, "skipped", point.skip_reason or "", limits)
    with tempfile.TemporaryDirectory(prefix="lazydp-point-") as tmp:
        spec, out = Path(tmp) / "point.json", Path(tmp) / "record.json"
        privacy = point.plan.privacy.to_dict() if point.plan.privacy else None
        spec.write_text(json.dumps({"config": point.config.to_dict(), "privacy": privacy}))
        cmd = [sys.executable, "-m", "lazydp_bench.sweep.worker", str(spec), str(out)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_root(), os.environ.get("PYTHONPATH")])),
            PARENT_ENV: str(os.getpid()),  # the worker dies with this process
        }
        oom_before = oom_kills()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return _stub_record(point, "timeout", f"no result after {timeout_s:g} s", limits)
        except BaseException:  # Ctrl-C or a kill of the sweep: the point ends with it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if out.exists():
            return json.loads(out.read_text())
        tail = "\n".join(stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        status, message = killed_status(proc.returncode, oom_before, oom_kills())
        return _stub_record(point, status, f"{message}\n{tail}".rstrip(), limits)


def _root() -> str:
    return str(Path(__file__).resolve().parents[2])


def run_sweep(
    points: list[Point],
    out_dir: Path,
    timeout_s: float,
    limits: MemoryLimits,
    resume: bool,
    *,
    retry_failed: bool = False,
    on_start: Callable[[Point, int], None] = lambda p, i: None,
    on_done: Callable[[Point, dict | None], None] = lambda p, r: None,
) -> list[dict]:
    """Run the points in order, appending each record as soon as it exists."""
    from lazydp_bench.records.store import exclusive_store

    path = out_dir / RUNS_FILE
    with exclusive_store(out_dir):
        return _run_points(
            points,
            path,
            timeout_s=timeout_s,
            limits=limits,
            resume=resume,
            retry_failed=retry_failed,
            on_start=on_start,
            on_done=on_done,
        )


def _run_points(
    points, path, *, timeout_s, limits, resume, retry_failed, on_start, on_done
) -> list[dict]:
    from lazydp_bench.records.store import append_record

    skip = done_keys(path.parent, retry_failed) if resume else set()
    records = []
    for i, point in enumerate(points):
        if point.key in skip:
            on_done(point, None)
            continue
        on_start(point, i)
        record = run_point(point, timeout_s, limits)
        record["sweep"] = {"key": point.key, "index": i, "total": len(points)}
        append_record(path, record)
        records.append(record)
        on_done(point, record)
    return records
