"""Result records: one complete JSON object per line in `<out>/runs.jsonl`, append-only.

A line is written with a single `write` on an O_APPEND descriptor and fsynced, so a crash
leaves either the whole record or nothing (a torn last line, if the OS ever produced
one, is skipped on load with a warning). Units live in field names; a missing
measurement is null, never 0. Every line written is a record `schema.from_dict` accepts;
`upgrade()` brings older versions to the current schema on load.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from lazydp_bench.errors import BenchError
from lazydp_bench.records.schema import SCHEMA_VERSION, Record, from_dict, to_dict

RUNS_FILE = "runs.jsonl"
# energy fields added with the host CPU estimate (measure/energy.py), null in older records
ENERGY_ADDED = ("cpu_tdp_w", "cpu_tdp_source", "cpu_tdp_share", "cpu_busy_s")


def _finite(obj):
    """JSON has no inf/nan: non-finite floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def ensure_writable(out_dir: Path) -> Path:
    """Create `out_dir` if needed and check runs.jsonl can be appended to; BenchError if not."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / RUNS_FILE
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BenchError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from exc
    return path


@contextlib.contextmanager
def exclusive_store(out_dir: Path) -> Iterator[None]:
    """One sweep writes a results folder at a time: a second one refuses to start (two
    `--resume` sweeps on one store ran the same points twice)."""
    lock = out_dir / ".runs.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BenchError(f"another sweep is writing to {out_dir} (it holds {lock})") from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def append_record(path: Path, record: dict | Record) -> None:
    """Append one record (checked against the schema first: nothing malformed is written)."""
    typed = record if isinstance(record, Record) else from_dict(_finite(record))
    line = (json.dumps(to_dict(typed), allow_nan=False, sort_keys=False) + "\n").encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line: start anew
                line = b"\n" + line
            written = os.write(fd, line)
            if written != len(line):  # pragma: no cover - regular files do not short-write
                raise OSError(f"short write to {path}")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk or a lost folder: one line, not a traceback
        raise BenchError(f"cannot append to {path}: {exc.strerror or exc}") from exc


def upgrade(record: dict) -> dict:
    """Bring an older record to the current schema.

    v2: every record names its `kind` (v1 run records had none); `bench noise` records
    spell the host placement `cpu` (v1: `host`) and carry the engine's key width and the
    pass's bounds (null where v1 did not measure them).

    Any version: an `energy` section from before the host CPU estimate gets the
    estimate's fields as null (`ENERGY_ADDED`; its `cpu_source`, rapl or unavailable,
    still holds), so readers see one shape."""
    if not isinstance(record, dict):
        raise BenchError("a record must be a JSON object")
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BenchError(f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise BenchError(f"record {record.get('run_id')} has newer schema {version}")
    if version < 2:
        record.setdefault("kind", "run")
        record["schema_version"] = 2
    if version < 2 and record.get("kind") == "bench_noise":
        config = record.get("config") or {}
        if config.get("placement") == "host":
            config["placement"] = "cpu"
        (record.get("noise") or {}).setdefault("key_bits", None)
        bench = record.get("bench") or {}
        for key in ("memory_bound_samples_per_s", "arithmetic_bound_samples_per_s"):
            bench.setdefault(key, None)
        bench.setdefault("pct_of_bound", None)
    if isinstance(record.get("energy"), dict):
        for key in ENERGY_ADDED:
            record["energy"].setdefault(key, None)
    return record


def iter_result_files(paths: Iterable[Path]) -> list[Path]:
    """The record files of `paths`: a file as given, a folder's `runs.jsonl` at any depth."""
    files = []
    for p in paths:
        try:
            if p.is_dir():
                files.extend(sorted(p.rglob(RUNS_FILE)))
            elif p.is_file():
                files.append(p)
            else:
                raise BenchError(f"no results at {p}")
        except OSError as exc:  # a folder the user may not enter
            raise BenchError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_records(paths: Iterable[Path]) -> list[dict]:
    """Every valid record of the files; lines that are not one (not UTF-8, not JSON, not a
    record of this or an older schema) are skipped and named in ONE warning."""
    records, bad = [], []
    for path in iter_result_files(paths):
        for n, raw in enumerate(_read(path).splitlines(), 1):
            if not raw.strip():
                continue
            try:
                records.append(to_dict(from_dict(upgrade(json.loads(raw.decode())))))
            except UnicodeDecodeError:
                bad.append(f"{path}:{n} (not UTF-8)")
            except json.JSONDecodeError:
                bad.append(f"{path}:{n} (not JSON)")
            except BenchError as exc:
                bad.append(f"{path}:{n} ({exc})")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        warnings.warn(f"skipped {len(bad)} malformed line(s): {shown}", stacklevel=2)
    return records
