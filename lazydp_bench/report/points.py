"""Which records a figure draws, and what one drawn point is (no plotting here).

A figure varies one configuration field along its x axis and the algorithm across its
bars, with one panel per machine and placement. Every other configuration field
(`CONFIG_FIELDS`) is fixed, per panel, to one reference value chosen by a stated rule, so
no bar stands on a record of another configuration. A panel draws one commit's records
unless mixed commits are allowed (then each point draws its own newest commit). The
records left at a point are repeats of one configuration on one commit: they are pooled,
never picked from.
"""

from __future__ import annotations

import numbers
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from lazydp_bench.errors import BenchError
from lazydp_bench.units import format_bytes, parse_size
from lazydp_bench.workloads import load_workload, scale_by_factor, scale_to_bytes

# Measured configuration besides the algorithm (bars) and machine/placement (panels), in
# the order a panel fixes them: a later field's rule sees the rows the earlier ones kept.
# The GPU count comes first, so a size or engine only a several-GPU run reaches never
# becomes a one-GPU figure's reference point.
CONFIG_FIELDS: tuple[str, ...] = (
    "gpus",
    "workload",
    "noise_impl",
    "noise_mode",
    "dtype",
    "distribution",
    "batch_size",
    "pooling",
    "table_bytes",
    "lr",
    "lr_decay",
    "chunk_bytes",
    "host_threads",
)
PANEL_FIELDS: tuple[str, ...] = ("machine", "placement")
FAILED: tuple[str, ...] = ("oom", "skipped", "timeout", "error")
NOT_RUN = "not run"
NOISY_IQR = 0.10  # a pooled point whose IQR exceeds this share of its median gets a note


# ---- one row per record -------------------------------------------------------------


def commit_label(env: dict) -> str:
    """The commit a record was measured on (git's 7-character short form, which every
    record has, long or short); a dirty tree is its own code version."""
    commit = (env.get("commit") or "unknown")[:7]
    return f"{commit}+dirty" if env.get("dirty") else commit


def failure_reason(record: dict) -> str:
    """The short label a failed record puts on its missing bar."""
    status = record.get("status")
    if status == "oom":
        return "OOM"
    if status == "skipped":
        need = _missing_memory(record.get("memory") or {})
        if need:
            return f"skipped: needs {need}"
        if "not implemented" in (record.get("error") or ""):
            return "skipped: not implemented"
        return "skipped"
    return str(status)


def _missing_memory(memory: dict) -> str | None:
    """What a skipped point's estimate needs beyond the machine's limits ("120 GB GPU")."""
    parts = []
    gpu, gpu_limit = memory.get("estimate_gpu_bytes"), memory.get("limit_gpu_bytes")
    host, host_limit = memory.get("estimate_host_bytes"), memory.get("limit_host_bytes")
    if gpu and (gpu_limit is None or gpu > gpu_limit):
        parts.append(f"{format_bytes(gpu)} GPU")
    if host and host_limit is not None and host > host_limit:
        parts.append(f"{format_bytes(host)} host")
    return " + ".join(parts) or None


def stub_table_bytes(config: dict) -> int | None:
    """A stub skipped before planning records no table bytes: derive them from its
    workload and `--table-size` (float32, the default), so its bar finds its x."""
    try:
        wl = load_workload(config["workload"])
        size = config.get("table_size")
        if size is None:
            return wl.table_bytes()
        if size.strip().lower().startswith("x"):
            return scale_by_factor(wl, float(size.strip()[1:])).table_bytes()
        return scale_to_bytes(wl, parse_size(size)).table_bytes()
    except (BenchError, KeyError, ValueError, AttributeError):
        return None


def record_placement(record: dict) -> str | None:
    """Where the run ran; a stub that never resolved `auto` matches any placement."""
    c = record.get("config") or {}
    placement = (record.get("memory") or {}).get("placement") or c.get("placement")
    return None if placement in (None, "auto") else placement


def _noise_impl(record: dict) -> str | None:
    """The engines the run used: as resolved in its record (`auto` became streamed or
    fused), else `auto` read as fused (records before the streamed engine); None (matches
    any) for a run without noise or a stub that does not say."""
    c, noise = record.get("config") or {}, record.get("noise")
    if isinstance(noise, dict) and noise.get("impl"):
        return noise["impl"]
    if c.get("algo") in NOISELESS or c.get("noise_impl") is None:
        return None
    return "torch" if c["noise_impl"] == "torch" else "fused"


NOISELESS = ("sgd",)  # runs whose noise engine is irrelevant


def config_fields(record: dict) -> dict:
    """The record's measured configuration, None where the record does not say."""
    c = record.get("config") or {}
    values = {f: c.get(f) for f in CONFIG_FIELDS}
    values["noise_impl"] = _noise_impl(record)
    values["gpus"] = c.get("gpus") or 1  # ranks of a sharded run; records before: one
    if values["table_bytes"] is None and record.get("status") != "ok":
        values["table_bytes"] = stub_table_bytes(c)
    return values


def timing_fields(record: dict) -> dict:
    """Step-time summary, raw steps (kept as a tuple) and energy of one record."""
    t, energy = record.get("timing") or {}, record.get("energy") or {}
    raw = t.get("step_ms_raw")
    return {
        "step_ms": t.get("step_median_ms"),
        "step_p25_ms": t.get("step_p25_ms"),
        "step_p75_ms": t.get("step_p75_ms"),
        "step_ms_raw": tuple(raw) if raw else None,
        "throughput": t.get("throughput_samples_per_s"),
        "gpu_j_per_step": energy.get("gpu_j_per_step"),
        "cpu_j_per_step": energy.get("cpu_j_per_step"),
        "cpu_source": energy.get("cpu_source"),
        "energy_reason": energy.get("reason"),
        "energy_warning": energy.get("warning"),
        "cuda_graph": bool(t.get("cuda_graph", False)),
        # eager because no CUDA graph can hold the step (host work between kernels), not
        # because --cuda-graph off asked for it: the comparisons may read it beside replays
        "ungraphable": bool(t.get("cuda_graph_blocker"))
        and (record.get("config") or {}).get("cuda_graph") != "off",
        "flush_ms": t.get("flush_ms"),  # LazyDP's final flush of pending noise
    }


# ---- reference values: one per field off the axis ------------------------------------

Chooser = Callable[[pd.DataFrame, str], object]


def sort_key(value) -> tuple:
    return (0, float(value)) if isinstance(value, numbers.Number) else (1, str(value))


def _ok(part: pd.DataFrame) -> pd.DataFrame:
    return part[part["status"] == "ok"]


def most_common(part: pd.DataFrame, name: str) -> object:
    """The value with the most successful runs (the most runs if none succeeded); a tie
    goes to the smallest value, so the choice never depends on record order."""
    rows = _ok(part) if _ok(part)[name].notna().any() else part
    counts = rows[name].dropna().value_counts()
    top = [v for v, n in counts.items() if n == counts.max()]
    return min(top, key=sort_key)


def prefer(*values: object) -> Chooser:
    """The first of `values` a run has (the paper's setting, or the strongest baseline
    first), else the most common value."""

    def choose(part: pd.DataFrame, name: str) -> object:
        for value in values:
            if (part[name] == value).any():
                return value
        return most_common(part, name)

    return choose


def workload_default(attr: str) -> Chooser:
    """The panel's workload's own batch size or pooling where a run has it, else the most
    common value (a workload no longer on disk has no defaults to read)."""

    def choose(part: pd.DataFrame, name: str) -> object:
        names = part["workload"].dropna().unique()
        try:
            value = getattr(load_workload(str(names[0])), attr) if len(names) == 1 else None
        except BenchError:
            value = None
        return value if (part[name] == value).any() else most_common(part, name)

    return choose


def largest_table(algos: tuple[str, ...], axis: str | None = None) -> Chooser:
    """The largest table size at which every one of `algos` has successful runs at two or
    more `axis` values (a sensitivity sweep often runs below the headline size); else the
    largest at which each has a successful run; else the largest measured."""

    def covers(ok: pd.DataFrame, size, spread: int) -> bool:
        at = ok[ok["table_bytes"] == size]
        runs = [at[at["algo"] == a] for a in algos]
        return all(not r.empty and (not axis or r[axis].nunique() >= spread) for r in runs)

    def choose(part: pd.DataFrame, name: str) -> object:
        ok = _ok(part)
        sizes = sorted(ok[name].dropna().unique(), key=sort_key, reverse=True)
        for spread in (2, 1):
            fits = [s for s in sizes if covers(ok, s, spread)]
            if fits:
                return fits[0]
        pool = sizes or sorted(part[name].dropna().unique(), key=sort_key, reverse=True)
        return pool[0]

    return choose


@dataclass(frozen=True)
class Reference:
    """How a figure fixes the fields off its axis: a chooser per field (default: the most
    common value); `per_x` fields are fixed separately at each axis value (fig. 13c's
    models each run at their own batch size and pooling)."""

    choose: Mapping[str, Chooser] = field(default_factory=dict)
    per_x: tuple[str, ...] = ()

    def chooser(self, name: str) -> Chooser:
        return self.choose.get(name, most_common)


def matching(ref: Reference, chosen: Mapping[str, object]) -> Reference:
    """`ref` with each field at its value in `chosen` wherever a run has it, else by
    `ref`'s own rule: a second series of a panel (runs on more GPUs) then matches the
    first where it was measured alike, and keeps its own engine or thread count where
    it could not be."""

    def first(value: object, otherwise: Chooser) -> Chooser:
        def choose(part: pd.DataFrame, name: str) -> object:
            return value if (part[name] == value).any() else otherwise(part, name)

        return choose

    choose = {
        name: first(value, ref.chooser(name))
        for name, value in chosen.items()
        if value is not None and name not in ref.per_x
    }
    return Reference({**ref.choose, **choose}, ref.per_x)


@dataclass(frozen=True)
class Fixed:
    """A panel's rows at its reference point: the chosen value of each field (a dict by
    axis value for `per_x` fields) and the values measured but left out."""

    rows: pd.DataFrame
    chosen: dict[str, object]
    left_out: dict[str, list]


def _fix_field(part: pd.DataFrame, name: str, choose: Chooser) -> tuple[pd.DataFrame, object]:
    """Rows at the chosen value of `name`; a row that does not record it (a stub from
    before planning) stays, as it may be this point's failure."""
    if not part[name].notna().any():
        return part, None
    value = choose(part, name)
    return part[(part[name] == value) | part[name].isna()], value


def fix_reference(part: pd.DataFrame, axis: str, ref: Reference) -> Fixed:
    """Fix every configuration field but `axis` to one value, in `CONFIG_FIELDS` order."""
    chosen: dict[str, object] = {}
    left_out: dict[str, list] = {}
    for name in CONFIG_FIELDS:
        if name == axis:
            continue
        measured = set(part[name].dropna())
        if name in ref.per_x:
            fixed = [(x, *_fix_field(g, name, ref.chooser(name))) for x, g in _by_x(part, axis)]
            part = pd.concat([rows for _, rows, _ in fixed]) if fixed else part
            chosen[name] = {x: v for x, _, v in fixed}
            kept = set(chosen[name].values())
        else:
            part, chosen[name] = _fix_field(part, name, ref.chooser(name))
            kept = {chosen[name]}
        others = sorted(measured - kept, key=sort_key)
        if others:
            left_out[name] = others
    return Fixed(part, chosen, left_out)


def _by_x(part: pd.DataFrame, axis: str) -> list[tuple[object, pd.DataFrame]]:
    xs = sorted(part[axis].dropna().unique(), key=sort_key)
    return [(x, part[part[axis] == x]) for x in xs]


def newest_commit(rows: pd.DataFrame) -> str | None:
    """The commit of the newest successful run (of the newest record if none succeeded)."""
    pool = _ok(rows) if not _ok(rows).empty else rows
    if pool.empty:
        return None
    return str(pool.sort_values("created", kind="stable")["commit"].iloc[-1])


# ---- one point: pooled repeats, or why there are none ---------------------------------


@dataclass(frozen=True)
class StepStats:
    """Step time of a point's pooled runs."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    runs: int
    steps: int | None  # raw steps pooled; None when the records hold only summaries
    method: str

    @property
    def iqr_pct(self) -> float:
        return 100 * (self.p75_ms - self.p25_ms) / self.median_ms if self.median_ms else 0.0


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(p25, median, p75) as the records compute them (linear, inclusive)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def pool_steps(rows: pd.DataFrame) -> StepStats:
    """Repeats pool their raw per-step times; records without them (older schema) give
    one run's own summary, or the median of the runs' medians (and of their quartiles)."""
    raws = list(rows["step_ms_raw"])
    if all(r for r in raws):
        steps = [x for r in raws for x in r]
        p25, med, p75 = quartiles(steps)
        return StepStats(med, p25, p75, len(rows), len(steps), "raw steps")
    if len(rows) == 1:
        r = rows.iloc[0]
        p25 = r["step_p25_ms"] if pd.notna(r["step_p25_ms"]) else r["step_ms"]
        p75 = r["step_p75_ms"] if pd.notna(r["step_p75_ms"]) else r["step_ms"]
        return StepStats(r["step_ms"], p25, p75, 1, None, "run median (no raw steps)")
    med = statistics.median(rows["step_ms"])
    p25 = statistics.median(rows["step_p25_ms"].fillna(rows["step_ms"]))
    p75 = statistics.median(rows["step_p75_ms"].fillna(rows["step_ms"]))
    return StepStats(med, p25, p75, len(rows), None, "median of run medians (no raw steps)")


def pool_stages(rows: pd.DataFrame) -> dict[str, float]:
    """Per-stage median over the runs' stage medians (records keep no raw stage times)."""
    names = {n for st in rows["stages"] for n in st}
    return {n: statistics.median(st[n] for st in rows["stages"] if n in st) for n in names}


def mode_of(row: pd.Series) -> str:
    if row["cuda_graph"]:
        return "graph replay"
    return "stage timing" if row["breakdown"] else "end-to-end"


@dataclass(frozen=True)
class Point:
    """One bar slot: the pooled runs it draws, or the status and reason it has none."""

    status: str  # "ok", a failure status, or "not run"
    reason: str | None = None
    rows: pd.DataFrame | None = None  # the pooled runs (one commit, one timing mode)
    stats: StepStats | None = None
    older_runs: int = 0  # successful runs on older commits, not pooled

    @property
    def commit(self) -> str | None:
        return None if self.rows is None else str(self.rows["commit"].iloc[0])

    @property
    def mode(self) -> str | None:
        return None if self.rows is None else mode_of(self.rows.iloc[0])


@dataclass(frozen=True)
class Measure:
    """What a figure reads from a point's runs: which runs can give it, in which timing
    mode preferred (lower first), and the label of a point whose runs cannot."""

    usable: Callable[[pd.DataFrame], pd.Series]
    rank: Callable[[pd.Series], int]
    unusable: str


def _newest_usable(rows: pd.DataFrame, measure: Measure) -> tuple[pd.DataFrame, int]:
    """The usable successful runs of the newest commit, and how many older ones."""
    ok = _ok(rows)
    usable = ok[measure.usable(ok)] if not ok.empty else ok
    if usable.empty:
        return usable, 0
    same = usable[usable["commit"] == newest_commit(usable)]
    return same, len(usable) - len(same)


# timing modes, preferred first: a CUDA-graph replay (the step without launch overhead),
# an eager end-to-end run, a run timed stage by stage (its syncs add to the step)
MODE_ORDER = ("graph replay", "end-to-end", "stage timing")


def shared_mode(groups: Iterable[pd.DataFrame], measure: Measure) -> str | None:
    """The timing mode that every group with usable runs can draw, so bars side by side
    compare like with like (an eager step carries launch overhead a graph replay does
    not): of the modes all groups have, the one whose worst group's best run ranks
    highest by `measure` (fig. 12: energy readings first), then by `MODE_ORDER`; None
    where the groups share none."""
    best: list[dict[str, int]] = []  # per group: mode -> its best rank
    for rows in groups:
        same, _ = _newest_usable(rows, measure)
        if same.empty:
            continue
        ranks = pd.DataFrame(
            {"mode": same.apply(mode_of, axis=1), "rank": same.apply(measure.rank, axis=1)}
        )
        best.append(ranks.groupby("mode")["rank"].min().to_dict())
    common = set.intersection(*(set(b) for b in best)) if best else set()
    if not common:
        return None
    return min(common, key=lambda m: (max(b[m] for b in best), MODE_ORDER.index(m)))


def resolve(rows: pd.DataFrame, measure: Measure, mode: str | None = None) -> Point:
    """Pool the usable successful runs of the newest commit in `mode` where they have it,
    else in their preferred mode; without any, the newest failure's status and reason, or
    'not run'."""
    same, older = _newest_usable(rows, measure)
    if not same.empty:
        if mode is not None:
            in_mode = same[same.apply(mode_of, axis=1) == mode]
            same = in_mode if not in_mode.empty else same
        ranks = same.apply(measure.rank, axis=1)
        pooled = same[ranks == ranks.min()]
        return Point("ok", None, pooled, pool_steps(pooled), older)
    failed = rows[rows["status"].isin(FAILED)]
    if not failed.empty:
        last = failed.sort_values("created", kind="stable").iloc[-1]
        return Point(str(last["status"]), str(last["reason"]))
    if not _ok(rows).empty:
        return Point("no data", measure.unusable)
    return Point(NOT_RUN, NOT_RUN)


def end_to_end_first(row: pd.Series) -> int:
    """The run's timing mode's place in `MODE_ORDER`."""
    return MODE_ORDER.index(mode_of(row))


STEPS = Measure(lambda ok: ok["step_ms"].notna(), end_to_end_first, "no step time")
STAGES = Measure(
    lambda ok: ok["breakdown"].astype(bool) & ok["stages"].map(bool),
    lambda row: 0,
    "no stage breakdown",
)


def both_energies_first(row: pd.Series) -> int:
    """Runs with GPU and host energy, then GPU energy alone, then host energy alone; among
    each, those whose window was long enough for the counters (no energy warning) first,
    then in `end_to_end_first` order."""
    missing = 20 * pd.isna(row["gpu_j_per_step"]) + 10 * pd.isna(row["cpu_j_per_step"])
    short = 5 * isinstance(row.get("energy_warning"), str)
    return int(missing) + short + end_to_end_first(row)


ENERGY = Measure(
    lambda ok: ok["gpu_j_per_step"].notna() | ok["cpu_j_per_step"].notna(),
    both_energies_first,
    "no energy reading",
)
GRAD_SIZE = Measure(lambda ok: ok["grad_fraction"].notna(), end_to_end_first, "no gradient size")
