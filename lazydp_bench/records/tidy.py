"""Stored records as tidy pandas tables: one typed row per training run (`load_runs`), per
run and stage (`load_stages`) and per `bench noise` engine (`load_benches`).

Each loader takes a `runs.jsonl` file, a folder (every `*.jsonl` file under it, so a
results folder's `bench/` subfolder too), or a list of them, and reads them with
`store.load_records`: older records are upgraded, and a line that is not a record is
skipped with a warning naming its file and line. Columns are the same whatever the
records hold: text is pandas' `string` dtype, counts and byte sizes `Int64`, flags
`boolean` (all three with `<NA>` where the record has no value), measurements `float64`
(NaN where not measured), and `created` a UTC timestamp. pandas is imported when a table
is built, not when this module is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lazydp_bench.errors import BenchError
from lazydp_bench.records.store import load_records

if TYPE_CHECKING:
    import pandas as pd

Source = str | Path
Sources = Source | Iterable[Source]

# The one-word name of a noise engine, by the prefix of the engine string a record holds.
ENGINE_LABELS = (
    ("roundtrip", "roundtrip"),
    ("streamed", "streamed"),
    ("host-threaded", "host"),
    ("host-philox", "host"),
    ("triton", "fused"),
    ("torch", "torch"),
)


def engine_label(engine: str | None) -> str | None:
    """roundtrip (a host table's rows noised on the GPU), streamed (noise drawn on the GPU
    for a host table), host (host threads), fused (the Triton kernel) or torch for a
    record's engine string; None for one that is none of these."""
    for prefix, label in ENGINE_LABELS:
        if str(engine or "").startswith(prefix):
            return label
    return None


def noise_label(rec: dict) -> str:
    """The engine of a private record's table noise in one word: roundtrip or streamed (a
    host table noised with the GPU's help), host (host threads), fused (the Triton kernel)
    or torch: the name a speedup over this record prints as its baseline."""
    noise = rec.get("noise") or {}
    label = engine_label((noise.get("table") or {}).get("engine"))
    if label is not None:
        return label
    return str(noise.get("impl") or rec["config"].get("noise_impl") or "?")


def result_files(sources: Sources) -> list[Path]:
    """The record files of `sources`: a file as given, a folder as the `*.jsonl` files
    under it (sorted); each file once. BenchError for a path that does not exist."""
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(path.rglob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise BenchError(f"no results at {path}")
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def read_records(sources: Sources) -> list[dict]:
    """Every record of `sources` (all kinds, in file order), each with a `source` key
    naming the file it was read from; bad lines are skipped with one warning per file."""
    records = []
    for path in result_files(sources):
        for rec in load_records([path]):
            rec["source"] = str(path)
            records.append(rec)
    return records


def _get(rec: dict, *keys: str) -> Any:
    """rec[k0][k1]...; None where a section or a field is missing or null."""
    value: Any = rec
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _scaled(value: Any, scale: float) -> float | None:
    return None if value is None else value / scale


def _epsilon(rec: dict) -> Any:
    privacy = rec.get("privacy") or {}
    eps = privacy.get("epsilon")
    return privacy.get("epsilon_rdp") if eps is None else eps


def _table_noise(rec: dict) -> str | None:
    return noise_label(rec) if rec.get("noise") else None


def _noise_impl(rec: dict) -> Any:
    return _get(rec, "noise", "impl") or _get(rec, "config", "noise_impl")


def _sweep_key(rec: dict) -> str | None:
    key = _get(rec, "sweep", "key")
    return None if key is None else str(key)


Column = tuple[str, str, Callable[[dict], Any]]

# What every kind of record shares: who, when, on what machine, and how it ended.
HEADER: list[Column] = [
    ("run_id", "string", lambda r: r.get("run_id")),
    ("created", "datetime", lambda r: r.get("created_utc")),
    ("source", "string", lambda r: r.get("source")),
    ("commit", "string", lambda r: _get(r, "env", "commit")),
    ("dirty", "boolean", lambda r: _get(r, "env", "dirty")),
    ("machine", "string", lambda r: _get(r, "env", "gpu_name")),
    ("status", "string", lambda r: r.get("status")),
    ("error", "string", lambda r: r.get("error")),
]

RUN_COLUMNS: list[Column] = [
    *HEADER,
    ("algo", "string", lambda r: _get(r, "config", "algo")),
    ("workload", "string", lambda r: _get(r, "config", "workload")),
    ("table_bytes", "Int64", lambda r: _get(r, "config", "table_bytes")),
    ("batch_size", "Int64", lambda r: _get(r, "config", "batch_size")),
    ("pooling", "Int64", lambda r: _get(r, "config", "pooling")),
    ("distribution", "string", lambda r: _get(r, "config", "distribution")),
    ("placement", "string", lambda r: _get(r, "config", "placement")),
    ("gpus", "Int64", lambda r: _get(r, "config", "gpus") or 1),  # absent before --gpus
    ("clipping", "string", lambda r: _get(r, "config", "clipping")),
    ("noise_impl", "string", _noise_impl),
    ("table_noise", "string", _table_noise),
    ("noise_update", "string", lambda r: _get(r, "config", "noise_update")),
    ("breakdown", "boolean", lambda r: _get(r, "config", "breakdown")),
    ("cuda_graph", "boolean", lambda r: _get(r, "timing", "cuda_graph")),
    ("timer", "string", lambda r: _get(r, "timing", "mode")),
    ("iterations", "Int64", lambda r: _get(r, "timing", "measured_iters")),
    ("step_median_ms", "float64", lambda r: _get(r, "timing", "step_median_ms")),
    ("step_p25_ms", "float64", lambda r: _get(r, "timing", "step_p25_ms")),
    ("step_p75_ms", "float64", lambda r: _get(r, "timing", "step_p75_ms")),
    ("step_mean_ms", "float64", lambda r: _get(r, "timing", "step_mean_ms")),
    ("throughput", "float64", lambda r: _get(r, "timing", "throughput_samples_per_s")),
    ("init_s", "float64", lambda r: _get(r, "timing", "init_s")),
    ("flush_ms", "float64", lambda r: _get(r, "timing", "flush_ms")),
    ("flush_ms_per_step", "float64", lambda r: _get(r, "timing", "flush_ms_per_step")),
    ("host_cpu_busy_pct", "float64", lambda r: _get(r, "timing", "host_cpu", "busy_pct")),
    ("host_cpu_steal_pct", "float64", lambda r: _get(r, "timing", "host_cpu", "steal_pct")),
    ("gpu_peak_bytes", "Int64", lambda r: _get(r, "memory", "gpu_peak_bytes")),
    ("host_peak_bytes", "Int64", lambda r: _get(r, "memory", "host_peak_bytes")),
    ("history_table_bytes", "Int64", lambda r: _get(r, "memory", "history_table_bytes")),
    ("gpu_j_per_step", "float64", lambda r: _get(r, "energy", "gpu_j_per_step")),
    ("gpu_j_per_sample", "float64", lambda r: _get(r, "energy", "gpu_j_per_sample")),
    ("gpu_avg_w", "float64", lambda r: _get(r, "energy", "gpu_avg_w")),
    ("cpu_j_per_step", "float64", lambda r: _get(r, "energy", "cpu_j_per_step")),
    ("cpu_source", "string", lambda r: _get(r, "energy", "cpu_source")),
    ("cpu_tdp_w", "float64", lambda r: _get(r, "energy", "cpu_tdp_w")),
    ("cpu_tdp_source", "string", lambda r: _get(r, "energy", "cpu_tdp_source")),
    ("cpu_busy_s", "float64", lambda r: _get(r, "energy", "cpu_busy_s")),
    ("private", "boolean", lambda r: _get(r, "privacy", "private")),
    ("dp_equivalent", "boolean", lambda r: _get(r, "privacy", "dp_equivalent")),
    ("sigma", "float64", lambda r: _get(r, "privacy", "noise_multiplier")),
    ("clip_norm", "float64", lambda r: _get(r, "privacy", "clip_norm")),
    ("delta", "float64", lambda r: _get(r, "privacy", "delta")),
    ("epsilon", "float64", _epsilon),
    ("epsilon_prv", "float64", lambda r: _get(r, "privacy", "epsilon_prv")),
    ("auc", "float64", lambda r: _get(r, "utility", "final_auc")),  # held-out, final
    ("logloss", "float64", lambda r: _get(r, "utility", "final_logloss")),
    ("sweep_key", "string", _sweep_key),
]

STAGE_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "string"),
    ("stage", "string"),
    ("parent", "string"),
    ("median_ms", "float64"),
    ("p25_ms", "float64"),
    ("p75_ms", "float64"),
    ("mean_ms", "float64"),
    ("n", "Int64"),
    ("share", "float64"),
]


def _hybrid(key: str, scale: float = 1.0) -> Callable[[dict], Any]:
    return lambda r: _scaled(_get(r, "bench", "hybrid", key), scale)


BENCH_COLUMNS: list[Column] = [
    *HEADER,
    ("impl", "string", lambda r: _get(r, "config", "noise_impl")),
    (
        "engine",
        "string",
        lambda r: engine_label(_get(r, "noise", "engine")) or _get(r, "config", "noise_impl"),
    ),
    ("engine_detail", "string", lambda r: _get(r, "noise", "engine")),
    ("placement", "string", lambda r: _get(r, "config", "placement")),
    ("table_bytes", "Int64", lambda r: _get(r, "config", "table_bytes")),
    ("repeats", "Int64", lambda r: _get(r, "config", "repeats")),
    ("host_threads", "Int64", lambda r: _get(r, "config", "host_threads")),
    ("timer", "string", lambda r: _get(r, "timing", "mode")),
    ("median_ms", "float64", lambda r: _get(r, "timing", "step_median_ms")),
    ("p25_ms", "float64", lambda r: _get(r, "timing", "step_p25_ms")),
    ("p75_ms", "float64", lambda r: _get(r, "timing", "step_p75_ms")),
    ("gb_per_s", "float64", lambda r: _scaled(_get(r, "bench", "achieved_bytes_per_s"), 1e9)),
    ("copy_gb_per_s", "float64", lambda r: _scaled(_get(r, "bench", "copy_bytes_per_s"), 1e9)),
    ("pct_of_copy", "float64", lambda r: _get(r, "bench", "pct_of_copy")),
    ("samples_per_s", "float64", lambda r: _get(r, "bench", "samples_per_s")),
    (
        "memory_bound_samples_per_s",
        "float64",
        lambda r: _get(r, "bench", "memory_bound_samples_per_s"),
    ),
    (
        "arithmetic_bound_samples_per_s",
        "float64",
        lambda r: _get(r, "bench", "arithmetic_bound_samples_per_s"),
    ),
    ("pct_of_bound", "float64", lambda r: _get(r, "bench", "pct_of_bound")),
    ("h2d_gb_per_s", "float64", _hybrid("h2d_bytes_per_s", 1e9)),
    ("d2h_gb_per_s", "float64", _hybrid("d2h_bytes_per_s", 1e9)),
    ("duplex_gb_per_s", "float64", _hybrid("duplex_bytes_per_s", 1e9)),
    ("host_add_gb_per_s", "float64", _hybrid("host_add_bytes_per_s", 1e9)),
    ("host_copy_gb_per_s", "float64", _hybrid("host_copy_bytes_per_s", 1e9)),
    ("host_dram_gb_per_s", "float64", _hybrid("host_dram_bytes_per_s", 1e9)),
    ("gpu_draw_samples_per_s", "float64", _hybrid("gpu_draw_samples_per_s")),
    ("bound_noise_down_ms", "float64", _hybrid("bound_noise_down_ms")),
    ("bound_round_trip_ms", "float64", _hybrid("bound_round_trip_ms")),
    ("bound_ms", "float64", _hybrid("bound_ms")),
    ("bound_unshared_ms", "float64", _hybrid("bound_unshared_ms")),
    ("bound_design", "string", lambda r: _get(r, "bench", "hybrid", "bound_design")),
]


def _frame(rows: list[list[Any]], columns: list[tuple[str, str]]) -> pd.DataFrame:
    """A DataFrame of `rows` with every column cast to its dtype (also when empty)."""
    import pandas as pd

    names = [name for name, _ in columns]
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    for name, dtype in columns:
        if dtype == "datetime":
            frame[name] = pd.to_datetime(frame[name], utc=True, format="ISO8601")
        else:
            frame[name] = frame[name].astype(dtype)
    return frame


def runs_table(records: Iterable[dict]) -> pd.DataFrame:
    """`load_runs`'s table of already loaded records (records of other kinds are left out)."""
    runs = [r for r in records if r.get("kind") == "run"]
    rows = [[get(r) for _, _, get in RUN_COLUMNS] for r in runs]
    return _frame(rows, [(name, dtype) for name, dtype, _ in RUN_COLUMNS])


def stages_table(records: Iterable[dict]) -> pd.DataFrame:
    """`load_stages`'s table of already loaded records."""
    rows = []
    for r in records:
        if r.get("kind") != "run":
            continue
        step = _get(r, "timing", "step_median_ms")
        for s in r.get("stages") or []:
            median = s.get("median_ms")
            share = median / step if median is not None and step else None
            rows.append(
                [
                    r.get("run_id"),
                    s.get("name"),
                    s.get("parent"),
                    median,
                    s.get("p25_ms"),
                    s.get("p75_ms"),
                    s.get("mean_ms"),
                    s.get("n"),
                    share,
                ]
            )
    return _frame(rows, STAGE_COLUMNS)


def benches_table(records: Iterable[dict]) -> pd.DataFrame:
    """`load_benches`'s table of already loaded records (other kinds are left out)."""
    benches = [r for r in records if r.get("kind") == "bench_noise"]
    rows = [[get(r) for _, _, get in BENCH_COLUMNS] for r in benches]
    return _frame(rows, [(name, dtype) for name, dtype, _ in BENCH_COLUMNS])


def load_runs(sources: Sources) -> pd.DataFrame:
    """One row per training-run record (`kind: run`, stubs of failed sweep points
    included; `bench noise` records are in `load_benches`), in file order.

    Columns (`<NA>`/NaN where the record has no value, e.g. a stub's measurements):

    - run_id: the record's id; joins `load_stages`.
    - created: when the record was written (UTC timestamp).
    - source: the file the record was read from.
    - commit, dirty: the tool's git commit and whether its tree had local changes.
    - machine: the GPU's name (`env.gpu_name`; `<NA>` on a machine without one).
    - status: ok, oom, timeout, error or skipped; error: why it was not ok.
    - algo: sgd, dpsgd-b, dpsgd-r, dpsgd-f, dpsgd-bk, lazydp, lazydp-noans or eana.
    - workload: the workload's name (e.g. mlperf-dlrm).
    - table_bytes: total embedding bytes after scaling.
    - batch_size, pooling, distribution (uniform or zipf:<alpha>).
    - placement: where the run ran (gpu, hybrid or cpu; `auto` resolved).
    - gpus: ranks of a row-wise sharded run (`--gpus`); 1 for one process and for
      records older than the option.
    - clipping: none, materialize, reweight, ghost or bookkeeping.
    - noise_impl: the noise engine option as resolved (`noise.impl` when the record has
      it, else the requested `config.noise_impl`, e.g. auto).
    - table_noise: the engine that noised the table in one word (roundtrip, streamed,
      host, fused, torch); `<NA>` for a non-private run.
    - noise_update: how LazyDP's queue noise reached the table (in-place, carried, merged;
      ahead in hybrid records before 212aefa).
    - breakdown: whether stages were timed (False: whole steps only).
    - cuda_graph: whether each measured step replayed a captured CUDA graph.
    - timer: cuda_events or sync_wall.
    - iterations: steps measured.
    - step_median_ms, step_p25_ms, step_p75_ms, step_mean_ms: step time.
    - throughput: samples per second.
    - init_s: table initialization time.
    - flush_ms, flush_ms_per_step: LazyDP's final flush of pending noise, in all and per
      step run.
    - host_cpu_busy_pct, host_cpu_steal_pct: host CPU busy and stolen shares.
    - gpu_peak_bytes, host_peak_bytes (RSS), history_table_bytes: memory.
    - gpu_j_per_step, gpu_j_per_sample, gpu_avg_w: GPU energy and average power (NVML).
    - cpu_j_per_step: host CPU energy per step, read (RAPL) or estimated; cpu_source says
      which: rapl, `estimate (TDP x utilisation)` or unavailable. cpu_tdp_w: the rated W
      an estimate used for this machine's CPUs; cpu_tdp_source: `table: <model>` or
      `--cpu-tdp`; cpu_busy_s: the machine's busy CPU-seconds over the measured steps.
    - private: whether the algorithm adds noise; dp_equivalent: whether it is
      DP-SGD-equivalent.
    - sigma: the noise multiplier; clip_norm: C; delta.
    - epsilon: epsilon spent over a full training run (RDP); epsilon_prv: the same under PRV.
    - auc, logloss: held-out AUC and mean log-loss of the final model (`--eval-data`;
      every evaluation is in the record's `utility` section).
    - sweep_key: the sweep point's key (`<NA>` outside a sweep).

    Text columns are `string`, counts and bytes `Int64`, flags `boolean`, measurements
    `float64`, `created` a UTC `datetime64`. `sources`: a file, a folder (its `*.jsonl`
    files, subfolders included) or a list of them.
    """
    return runs_table(read_records(sources))


def load_stages(sources: Sources) -> pd.DataFrame:
    """One row per stage of each training run, in record order (a run timed without
    `--breakdown`, or a stub, has none).

    Columns: run_id (joins `load_runs`), stage (data, forward, ..., other), parent
    (model_update for its parts, else `<NA>`), median_ms, p25_ms, p75_ms, mean_ms, n (steps
    timed), share (median_ms / the run's step_median_ms).
    """
    return stages_table(read_records(sources))


def load_benches(sources: Sources) -> pd.DataFrame:
    """One row per `bench noise` record (one engine's dense noisy update of a table).

    Columns: the header columns of `load_runs` (run_id, created, source, commit, dirty,
    machine, status, error), and

    - impl: the engine asked for (torch, fused, streamed, roundtrip); engine: the engine
      that ran, in one word (torch, fused, host, streamed, roundtrip); engine_detail: its
      full description.
    - placement (gpu, cpu, hybrid), table_bytes, repeats, host_threads, timer.
    - median_ms, p25_ms, p75_ms: one pass over the table.
    - gb_per_s: table bytes read and written per second (decimal GB); copy_gb_per_s: the
      measured copy bandwidth (read + write); pct_of_copy: the first as a share of it.
    - samples_per_s: normals drawn and added per second; memory_bound_samples_per_s,
      arithmetic_bound_samples_per_s: the bounds; pct_of_bound: samples_per_s as a share
      of the lower one (hybrid: bound_ms as a share of median_ms).
    - Hybrid placement only (NaN/`<NA>` otherwise): h2d_gb_per_s, d2h_gb_per_s,
      duplex_gb_per_s (pinned PCIe), host_add_gb_per_s (host threads adding a pinned chunk
      into the table), host_copy_gb_per_s (a threaded host copy, read + write; records
      from before it have none), host_dram_gb_per_s, gpu_draw_samples_per_s, bound_noise_down_ms
      (drawn on the GPU, added on the host), bound_round_trip_ms (rows through the GPU and
      back), bound_ms and bound_design (the better of the two), bound_unshared_ms (each
      resource alone).
    """
    return benches_table(read_records(sources))
