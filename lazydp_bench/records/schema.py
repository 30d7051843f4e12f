"""The record schema: one frozen dataclass per kind of record, and the header every record
starts with.

- `RunRecord` (`kind: run`): one measured run, or a stub for a run that produced no
  measurements (`status` skipped, oom, timeout or error: the sections it could not fill
  are null);
- `BenchRecord` (`kind: bench_noise`): one engine of `bench noise`.
Top-level fields are typed here; each section (`config`, `timing`, ...) is a JSON object
whose fields the README lists. `store.append_record` writes only what `from_dict` accepts,
and `store.load_records` upgrades older versions (`store.upgrade`) before reading.
Units live in field names; a value that was not measured is null, never 0.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from lazydp_bench import __version__
from lazydp_bench.errors import BenchError

SCHEMA_VERSION = 2
STATUSES = ("ok", "oom", "timeout", "error", "skipped")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_header(status: str | None = None, error: str | None = None) -> dict[str, Any]:
    """The fields a producer starts a record with (it fills the status when it knows it)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(),
        "created_utc": utc_now(),
        "tool_version": __version__,
        "status": status,
        "error": error,
    }


@dataclass(frozen=True, kw_only=True)
class Record:
    """What every record has."""

    kind: ClassVar[str]
    schema_version: int = SCHEMA_VERSION
    run_id: str = field(default_factory=new_run_id)
    created_utc: str = field(default_factory=utc_now)
    tool_version: str = __version__
    status: str
    error: str | None = None
    config: dict
    env: dict

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise BenchError(f"record status must be one of {', '.join(STATUSES)}")
        if self.schema_version != SCHEMA_VERSION:
            raise BenchError(f"a record of schema {self.schema_version} was not upgraded")
        for name in ("config", "env"):
            if not isinstance(getattr(self, name), dict):
                raise BenchError(f"record field {name!r} must be an object")


@dataclass(frozen=True, kw_only=True)
class RunRecord(Record):
    kind: ClassVar[str] = "run"
    privacy: dict | None = None
    timing: dict | None = None
    stages: list | None = None
    memory: dict | None = None
    energy: dict | None = None
    noise: dict | None = None
    sweep: dict | None = None  # a sweep point's key and timeout
    traceback: str | None = None  # where an `error` run failed
    data: dict | None = None  # a run on data files: lines read and skipped, reader speed
    sparsity: dict | None = None  # dp-fest / dp-adafest: rows selected, gradient size
    utility: dict | None = None  # --eval-data: held-out log-loss and AUC per evaluation

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.status == "ok":
            for name in ("timing", "stages", "memory"):
                if getattr(self, name) is None:
                    raise BenchError(f"an ok run record needs {name!r}")
        for stage in self.stages or []:
            if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
                raise BenchError("every stage needs a name")
            if not isinstance(stage.get("median_ms"), int | float | None):
                raise BenchError(f"stage {stage['name']!r} needs a numeric median_ms")
            if "median_ms" not in stage:
                raise BenchError(f"stage {stage['name']!r} has no median_ms")


@dataclass(frozen=True, kw_only=True)
class BenchRecord(Record):
    kind: ClassVar[str] = "bench_noise"
    noise: dict
    timing: dict
    bench: dict


KINDS: dict[str, type[Record]] = {cls.kind: cls for cls in (RunRecord, BenchRecord)}


def field_names(cls: type[Record]) -> list[str]:
    """Top-level fields of a kind, in the order they are written (`kind` first)."""
    return ["kind", *(f.name for f in fields(cls))]


def from_dict(data: dict) -> Record:
    """The typed record of a current-schema dict; BenchError naming what is wrong."""
    if not isinstance(data, dict):
        raise BenchError("a record must be a JSON object")
    kind = data.get("kind", "run")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BenchError(f"unknown record kind {kind!r}")
    known = set(field_names(cls))
    unknown = sorted(set(data) - known)
    if unknown:
        raise BenchError(f"unknown {kind} record field(s): {', '.join(unknown)}")
    values = {k: v for k, v in data.items() if k != "kind"}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise BenchError(f"incomplete {kind} record: {exc}") from None


def to_dict(record: Record) -> dict:
    return {"kind": record.kind, **asdict(record)}
