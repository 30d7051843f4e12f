"""The paper's figures, redrawn from stored records only (records in, Figure out).

`make_figure` returns a `FigureResult`: the matplotlib Figure (None when nothing can be
drawn), the numbers behind it as a DataFrame (one row per bar slot, or per stage of a
stacked bar; written as CSV beside the image) and notes. `points.py` holds the rules by
which records become points:

- one panel per (machine, placement), never mixed in one bar;
- every configuration field off the figure's axis is fixed per panel to one reference
  value (the workload's own batch size and pooling, uniform access, float32, Gaussian
  noise, the table size the figure's rule names, else the most common value), written
  under the panel and in the notes with what was measured but left out;
- a panel draws only its newest commit's records (a note names what was left out) unless
  mixed commits are allowed, when each point draws its own newest commit; the footer
  names the commits drawn;
- repeated runs of a point are pooled: raw step times concatenated (median, IQR, run
  count), a note when the IQR exceeds 10 % of the median;
- bars at one axis value (per GPU count) are read in one timing mode, the one all their
  algorithms have (`points.shared_mode`); peers (Opacus) keep their own; the caption names
  the modes;
- a point without a successful run is a short empty hatched stub labelled with its
  algorithm and reason (not run, OOM, skipped: needs N GB, timeout, error), with a legend
  entry; a panel none of whose points succeeded is left out and named, with its
  reasons, in the footer and a note (its points stay in the CSV), a figure none of whose
  points succeeded is skipped with a reason, and an algorithm with no run at all is named
  in a note;
- a figure draws one-GPU runs (the GPU count is fixed before any other field) and its
  caption names the runs on more GPUs it left out, except fig. 13(a), where each
  (algorithm, GPU count) is a series of its own (`LazyDP, 2 GPUs`, its algorithm's colour
  lightened), each GPU count at its own reference point and newest commit, matching the
  one-GPU series where it ran alike; the caption names where it differs
  (`2 GPUs: noise_impl=global-keyed`).

How a figure reads at a glance:

- each panel's y axis is logarithmic when its bars span more than `LOG_SPAN` (largest
  over smallest), linear otherwise (`y_scale`); a log axis says so in its label and
  labels its ticks as plain numbers, at 1, 2 and 5 of each decade when it spans few;
- a figure with speedups on LazyDP's bars says what they are under its title;
- a stacked bar sums to its whole: the step time (fig. 3) or the model update (figs. 5
  and 11), the part its drawn stages leave out stacked on top as its own segment;
- legends stand right of their panel, labels above bars get headroom inside the axes, x
  tick labels that would overlap are slanted, and the line under each panel (its
  reference point, table and batch size among it) and the footer wrap to their width.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.colors import to_hex, to_rgb
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Annotation, Text
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lazydp_bench.measure.cpu_power import CPU_ESTIMATE
from lazydp_bench.measure.stages import LABELS, UPDATE_CHILDREN, Stage
from lazydp_bench.report.points import (
    CONFIG_FIELDS,
    ENERGY,
    GRAD_SIZE,
    NOISY_IQR,
    PANEL_FIELDS,
    STAGES,
    STEPS,
    Fixed,
    Measure,
    Point,
    Reference,
    commit_label,
    config_fields,
    failure_reason,
    fix_reference,
    largest_table,
    matching,
    most_common,
    newest_commit,
    pool_stages,
    prefer,
    record_placement,
    resolve,
    shared_mode,
    sort_key,
    timing_fields,
    workload_default,
)
from lazydp_bench.report.tables import noise_label
from lazydp_bench.units import format_bytes

# Okabe-Ito, colorblind-safe; the stages' colours, and the algorithms' (set on their classes).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
# Tol's muted scheme: algorithms without a colour of their own, and variants
SPARE_COLORS = ["#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#117733", "#88CCEE"]


def algo_styles() -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Order, labels and colours of the registered algorithms, from each class's
    `plot_order`, `label` and `color`: a new algorithm appears in every figure without a
    change here."""
    from lazydp_bench.algorithms import ALGORITHMS

    classes = sorted(ALGORITHMS.values(), key=lambda c: (c.plot_order, c.name))
    spare = iter(SPARE_COLORS * (1 + len(classes) // len(SPARE_COLORS)))
    order = [c.name for c in classes]
    labels = {c.name: c.label or c.name for c in classes}
    colors = {c.name: c.color or next(spare) for c in classes}
    return order, labels, colors


ALGO_ORDER, ALGO_LABEL, ALGO_COLOR = algo_styles()


SERIES_SEP = "@"  # `lazydp@2`: LazyDP's runs on 2 GPUs, a series of its own


def series_name(algo: str, gpus: int | None) -> str:
    """The bar series of an algorithm's runs on `gpus` GPUs: the algorithm itself on one."""
    return algo if gpus in (None, 1) else f"{algo}{SERIES_SEP}{int(gpus)}"


def split_series(name: str) -> tuple[str, int]:
    """(`lazydp[bookkeeping]`, 2) for `lazydp[bookkeeping]@2`; one GPU without a suffix."""
    algo, _, gpus = name.partition(SERIES_SEP)
    return algo, int(gpus) if gpus else 1


def base_algo(name: str) -> str:
    """The registered algorithm of a series or variant name (`lazydp` for `lazydp[bk]@2`)."""
    return split_series(name)[0].partition("[")[0]


def algo_label(algo: str) -> str:
    """`LazyDP [bookkeeping]` for a variant `lazydp[bookkeeping]`, `LazyDP, 2 GPUs` for a
    series `lazydp@2`; the name if unknown."""
    name, gpus = split_series(algo)
    base, _, variant = name.partition("[")
    label = ALGO_LABEL.get(base, base)
    label = f"{label} [{variant.rstrip(']')}]" if variant else label
    return f"{label}, {gpus} GPUs" if gpus > 1 else label


def algo_color(algo: str) -> str:
    """A registered algorithm's colour; variants and unknown names a stable spare one; a
    several-GPU series its algorithm's colour lightened (2 GPUs: 45 % towards white)."""
    name, gpus = split_series(algo)
    if name in ALGO_COLOR:
        color = ALGO_COLOR[name]
    else:
        color = SPARE_COLORS[sum(name.encode()) % len(SPARE_COLORS)]
    return color if gpus == 1 else _lighten(color, min(0.75, 0.45 * math.log2(gpus)))


def _lighten(color: str, share: float) -> str:
    """`color` moved `share` of the way towards white."""
    return to_hex([c + (1 - c) * share for c in to_rgb(color)])


REST_COLOR = "#999999"  # what a stack adds to sum to its whole
TOP_STACK = [
    Stage.FORWARD,
    Stage.BACKWARD_PER_EXAMPLE,
    Stage.BACKWARD_PER_BATCH,
    Stage.MODEL_UPDATE,
]
STAGE_COLOR = {
    Stage.FORWARD: PALETTE[0],
    Stage.BACKWARD_PER_EXAMPLE: PALETTE[1],
    Stage.BACKWARD_PER_BATCH: PALETTE[2],
    Stage.MODEL_UPDATE: PALETTE[3],
    Stage.GRAD_COALESCE: PALETTE[0],
    Stage.NOISE_SAMPLING: PALETTE[1],
    Stage.NOISY_GRAD: PALETTE[2],
    Stage.PARAM_UPDATE: PALETTE[3],
    Stage.LAZYDP_OVERHEAD: PALETTE[4],
    Stage.NOISY_UPDATE_FUSED: PALETTE[5],
    Stage.SELECTION: PALETTE[6],
    Stage.OTHER: REST_COLOR,
}
MAIN_ALGOS = ("sgd", "dpsgd-f", "lazydp")
SPARSE_ALGOS = ("dpsgd-f", "lazydp", "dp-fest", "dp-adafest", "dp-adafest-plus")
PEERS = ("opacus", "opacus-ghost")  # other libraries' DP-SGD: drawn where run, never noted
RMC = ("rmc1", "rmc2", "rmc3")
MISSING_HATCH = "///"
NARROW = 0.2  # a bar slot narrower than this (in groups) gets its labels turned upright
MISSING_HEIGHT = 0.15  # axes fraction: a stub, not a bar that reads as a value
MISSING_LABEL = "not drawn (why: on the bar)"


@dataclass(frozen=True)
class FigureResult:
    """A drawn figure (None when skipped), the numbers behind it and what to tell the
    reader about it."""

    name: str
    figure: plt.Figure | None
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def algo_variant(algo: str | None, clipping: str | None) -> str | None:
    """`lazydp[bookkeeping]` for a run whose clipping is not its algorithm's default, so
    such runs never stand in for the default variant in a figure."""
    from lazydp_bench.algorithms import ALGORITHMS

    cls = ALGORITHMS.get(algo or "")
    if cls is None or clipping in (None, cls.default_clipping):
        return algo
    return f"{algo}[{clipping}]"


# ---- records to a frame ----------------------------------------------------------------


def _frame_row(r: dict) -> dict:
    """What the figures read from one record: configuration, status, timing, commit."""
    c, env = r.get("config") or {}, r.get("env") or {}
    status = r.get("status")
    stages = r.get("stages") or []
    return {
        "algo": algo_variant(c.get("algo"), c.get("clipping")),
        **config_fields(r),
        "placement": record_placement(r),
        "machine": env.get("gpu_name") or env.get("cpu") or "unknown",
        "status": status,
        "reason": None if status == "ok" else failure_reason(r),
        **timing_fields(r),
        "stages": {s["name"]: s["median_ms"] for s in stages if s.get("median_ms") is not None},
        "commit": commit_label(env),
        "table_noise": noise_label(r) if r.get("noise") else None,
        "grad_fraction": _grad_fraction(r),
        "breakdown": bool(c.get("breakdown", True)),
        "created": r.get("created_utc") or "",
    }


def _grad_fraction(r: dict) -> float | None:
    """The share of the table's rows a step's noisy update writes: the selected rows of
    DP-FEST / DP-AdaFEST (their `sparsity` section), every row for the dense DP-SGD
    variants; None where a record does not say (LazyDP, SGD, EANA: sparse, not counted)."""
    if r.get("status") != "ok":
        return None
    sparsity = r.get("sparsity") or {}
    if sparsity.get("grad_size_fraction") is not None:
        return float(sparsity["grad_size_fraction"])
    return 1.0 if (r.get("config") or {}).get("algo") in DP_FAMILY else None


def figure_frame(records: list[dict]) -> pd.DataFrame:
    """One row per training-run record (bench records are kept apart), repeats included.
    Configuration columns keep Python values (batch 2048, not 2048.0) and None where a
    record does not say."""
    rows = [_frame_row(r) for r in records if r.get("kind") != "bench_noise"]
    df = pd.DataFrame(rows)
    for name in ("algo", *CONFIG_FIELDS, *PANEL_FIELDS):
        if not df.empty:
            df[name] = pd.Series([row[name] for row in rows], dtype=object, index=df.index)
    return df


# gpus (ranks) .. table_bytes
POINT_KEY = [
    "algo",
    *CONFIG_FIELDS[: CONFIG_FIELDS.index("table_bytes") + 1],
    "placement",
    "machine",
]


# ---- figure specs ------------------------------------------------------------------------


def main_workloads(df: pd.DataFrame) -> pd.DataFrame:
    """Every workload but the RMC models (those belong to fig. 13c)."""
    return df[~df["workload"].isin(RMC)]


def rmc_workloads(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["workload"].isin(RMC)]


def reference(**overrides) -> Reference:
    """The paper's setting where a run has it: mlperf-dlrm at its own batch size and
    pooling, uniform access, float32, Gaussian noise, the largest table with LazyDP runs;
    `overrides` replace a field's rule."""
    choose = {
        "workload": prefer("mlperf-dlrm"),
        "noise_mode": prefer("gaussian"),
        "dtype": prefer("float32"),
        "distribution": prefer("uniform"),
        "batch_size": workload_default("batch_size"),
        "pooling": workload_default("pooling"),
        "table_bytes": largest_table(("lazydp",)),
        "noise_impl": prefer("roundtrip", "streamed"),  # the strongest baseline where run
        "gpus": prefer(1),  # one GPU; several-GPU runs only where a figure has a GPU series
    }
    per_x = overrides.pop("per_x", ())
    return Reference({**choose, **overrides}, per_x)


@dataclass(frozen=True)
class StackRest:
    """The segment a stacked bar carries above its drawn stages so that it sums to its
    whole: `total` (a stage's pooled median, or the pooled step time when None) less the
    drawn stages, never negative. `name` is its `stage` in the figure's numbers."""

    total: Stage | None
    name: str
    label: str


@dataclass(frozen=True)
class Segment:
    """One segment of a stacked bar, bottom up: its name in the figure's numbers, legend
    label, colour, value (None: not measured, drawn as missing, never as 0), hatch, why it
    is missing and the word its bar's label names it by then."""

    name: str
    label: str
    color: str
    value: float | None
    hatch: str | None = None
    reason: str | None = None
    tag: str = ""


@dataclass(frozen=True)
class CustomStack:
    """A stacked bar whose segments are not timed stages: `labels` in legend order
    (bottom up) and `parts(spec, panel, slot, notes)` giving a slot's segments."""

    labels: tuple[str, ...]
    parts: Callable[..., list[Segment]]


STEP_REST = StackRest(None, "rest_of_step", "Other (data, sync)")
UPDATE_REST = StackRest(Stage.MODEL_UPDATE, "rest_of_update", "Other (update, sync)")
STACK_SLACK = 0.01  # stages adding to more than their whole by this share get a note


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its axis, algorithms, reference rule, what it reads and how it draws."""

    name: str
    title: str
    axis: str
    algos: tuple[str, ...]
    measure: Measure
    ylabel: str
    reference: Reference = field(default_factory=reference)
    candidates: Callable[[pd.DataFrame], pd.DataFrame] = main_workloads
    stages: tuple[Stage, ...] = ()
    rest: StackRest | None = None  # what completes a stacked bar
    stack: CustomStack | None = None  # segments that are not stages (fig. 12's energies)
    normalize: bool = False
    speedup: bool = False
    min_x: int = 1  # sensitivity figures need two axis values
    gpu_series: bool = False  # each (algorithm, GPUs) its own series; else one GPU drawn

    @property
    def stacked(self) -> bool:
        return bool(self.stages) or self.stack is not None


# ---- panels and their slots ----------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One bar slot of a panel: its group, axis value, algorithm, position and point."""

    i: int
    j: int
    x: object
    algo: str
    pos: float
    width: float
    point: Point


@dataclass(frozen=True)
class Panel:
    """One machine and placement at its reference point, with its bar slots."""

    label: str
    fixed: Fixed
    xs: list
    slots: list[Slot]
    baseline: dict  # axis value -> SGD's pooled value (normalized figures)
    series: dict = field(default_factory=dict)  # GPUs -> Fixed of a further GPU series


def _panel_parts(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One part per (machine, placement); a stub that did not resolve its placement joins
    every panel of its machine."""
    known = df[df["placement"].notna()]
    out = []
    for (machine, placement), _ in known.groupby(["machine", "placement"], sort=True):
        here = (df["machine"] == machine) & (
            (df["placement"] == placement) | df["placement"].isna()
        )
        out.append((f"{machine} · {placement}", df[here]))
    return out


def _one_commit(spec: FigureSpec, label: str, rows: pd.DataFrame, notes: list[str]) -> Fixed:
    """The panel at its reference point, from its newest commit's records only."""
    fixed = fix_reference(rows, spec.axis, spec.reference)
    commits = set(fixed.rows["commit"])
    if len(commits) <= 1:
        return fixed
    newest = newest_commit(fixed.rows)
    older = fixed.rows[fixed.rows["commit"] != newest]["commit"].value_counts()
    left = ", ".join(f"{n} from {c}" for c, n in sorted(older.items()))
    notes.append(
        f"{spec.name} [{label}]: records from {len(commits)} commits; drew only the newest, "
        f"{newest} (left out {left}); --allow-mixed-commits draws them together"
    )
    return fix_reference(rows[rows["commit"] == newest], spec.axis, spec.reference)


def _x_modes(spec: FigureSpec, fixed: Fixed, algos: list[str], xs: list) -> dict:
    """Per (axis value, GPU count), the timing mode its algorithms (and SGD, the
    normalizing baseline) all draw, where they share one (`shared_mode`). Peers (other
    libraries, which replay no graphs) and runs on other GPU counts (sharded runs replay
    none either) would hold the comparison they stand beside to their mode: each GPU
    count shares its own, and peers draw theirs."""
    rows = fixed.rows
    own = [a for a in algos if base_algo(a) not in PEERS]
    names = [*own, *(["sgd"] if spec.normalize and "sgd" not in own else [])]
    out = {}
    for gpus in {split_series(a)[1] for a in names}:
        mine = [a for a in names if split_series(a)[1] == gpus]
        for x in xs:
            at_x = rows[rows[spec.axis] == x]
            out[x, gpus] = shared_mode((at_x[at_x["algo"] == a] for a in mine), spec.measure)
    return out


def _slot_mode(modes: dict, algo: str, x) -> str | None:
    """The mode `algo`'s bar at `x` is read in: its GPU count's shared one; a peer's own."""
    return None if base_algo(algo) in PEERS else modes.get((x, split_series(algo)[1]))


def _slots(spec: FigureSpec, fixed: Fixed, algos: list[str], xs: list, modes: dict) -> list[Slot]:
    """Every (axis value, algorithm) slot of a panel with its resolved point, read in
    `_slot_mode`."""
    rows = fixed.rows
    width = 0.8 / max(1, len(algos))
    slots = []
    for j, algo in enumerate(algos):
        for i, x in enumerate(xs):
            here = rows[(rows["algo"] == algo) & (rows[spec.axis] == x)]
            pos = i + (j - (len(algos) - 1) / 2) * width
            point = resolve(here, spec.measure, _slot_mode(modes, algo, x))
            slots.append(Slot(i, j, x, algo, pos, width, point))
    return slots


def _axis_xs(spec: FigureSpec, fixed: Fixed) -> list:
    return sorted(fixed.rows[spec.axis].dropna().unique(), key=sort_key)


def _bar_value(spec: FigureSpec, point: Point) -> float:
    """The pooled quantity a bar shows: median J per step, else the step-time median."""
    if spec.measure is ENERGY:  # GPU and host energy, each where measured
        parts = (_median(point.rows[c]) for c in ("gpu_j_per_step", "cpu_j_per_step"))
        return float(sum(v for v in parts if v is not None))
    if spec.measure is GRAD_SIZE:
        return float(statistics.median(point.rows["grad_fraction"]))
    return float(point.stats.median_ms)


def _baseline(spec: FigureSpec, fixed: Fixed, xs: list, modes: dict) -> dict:
    """SGD's pooled value per axis value, which normalized figures divide by, in the
    timing mode of the bars it divides."""
    out = {}
    rows = fixed.rows
    for x in xs:
        here = rows[(rows["algo"] == "sgd") & (rows[spec.axis] == x)]
        point = resolve(here, spec.measure, modes.get((x, 1)))
        if point.status == "ok":
            out[x] = _bar_value(spec, point)
    return out


def _present_algos(spec: FigureSpec, fixed: list[Fixed], notes: list[str]) -> list[str]:
    """The figure's algorithms with a record in some panel; the others are noted."""
    seen = set().union(*(set(f.rows["algo"].dropna()) for f in fixed)) if fixed else set()
    bases = {split_series(a)[0] for a in seen}
    for algo in spec.algos:
        if algo not in bases and algo not in PEERS:
            notes.append(
                f"{spec.name}: no {algo} runs at the reference point and commit drawn; left out"
            )
    return _algos(pd.DataFrame({"algo": sorted(seen)}), list(spec.algos))


def _algos(df: pd.DataFrame, wanted: list[str] | None) -> list[str]:
    """The algorithms (and GPU series) of `df` in the registry's plot order, unregistered
    names last, each algorithm's several-GPU series right after it."""
    present = set(df["algo"].dropna())
    rank = {a: i for i, a in enumerate(ALGO_ORDER)}

    def key(name: str) -> tuple:
        algo, gpus = split_series(name)
        return (rank.get(algo, len(rank)), algo, gpus)

    return [a for a in sorted(present, key=key) if wanted is None or split_series(a)[0] in wanted]


def _fix_panel(
    spec: FigureSpec, label: str, rows: pd.DataFrame, allow_mixed: bool, notes: list[str]
) -> Fixed:
    """A panel's (or one GPU series') rows at its reference point, on one commit unless
    mixed commits are allowed."""
    if allow_mixed:
        return fix_reference(rows, spec.axis, spec.reference)
    return _one_commit(spec, label, rows, notes)


def _fix_series(
    spec: FigureSpec, label: str, rows: pd.DataFrame, allow_mixed: bool, notes: list[str]
) -> tuple[Fixed, dict[int, Fixed]]:
    """A GPU-series panel: each GPU count fixed on its own rows and its own newest commit
    (sharded runs use their own noise engine and host, so one reference for all would
    drop a series); the fewest GPUs first, each further series at that series' values
    where it has them. Returns the first series' Fixed with every series' rows, and the
    further series' own Fixed by GPU count."""
    gpus = rows["algo"].map(lambda a: split_series(a)[1] if isinstance(a, str) else 1)
    counts = sorted(set(gpus))
    first = _fix_panel(spec, label, rows[gpus == counts[0]], allow_mixed, notes)
    follow = replace(spec, reference=matching(spec.reference, first.chosen))
    series = {
        n: _fix_panel(follow, f"{label}, {n} GPUs", rows[gpus == n], allow_mixed, notes)
        for n in counts[1:]
    }
    merged = pd.concat([first.rows, *(f.rows for f in series.values())])
    return replace(first, rows=merged, left_out=_left_out(first, series)), series


def _left_out(first: Fixed, series: dict[int, Fixed]) -> dict[str, list]:
    """Values some series measured but left out and no series kept."""
    fixes = [first, *series.values()]
    kept = {n: {f.chosen.get(n) for f in fixes} for f in fixes for n in f.left_out}
    out = {}
    for name in kept:
        values = {v for f in fixes for v in f.left_out.get(name, [])} - kept[name]
        if values:
            out[name] = sorted(values, key=sort_key)
    return out


def build_panels(
    spec: FigureSpec, df: pd.DataFrame, allow_mixed: bool, notes: list[str]
) -> list[Panel]:
    """Each panel at its reference point, on one commit (unless allowed), with its slots;
    in a GPU-series figure each series at its own reference point and commit."""
    parts = []
    for label, rows in _panel_parts(df):
        if spec.gpu_series:
            parts.append((label, *_fix_series(spec, label, rows, allow_mixed, notes)))
        else:
            parts.append((label, _fix_panel(spec, label, rows, allow_mixed, notes), {}))
    algos = _present_algos(spec, [f for _, f, _ in parts], notes)
    panels = []
    for label, fixed, series in parts:
        # a several-GPU series only where the panel has its runs (sharding is per
        # placement); a peer (another library) too: Opacus has no host-RAM placement
        here = set(fixed.rows["algo"].dropna())
        mine = [
            a for a in algos if a in here or (split_series(a)[1] == 1 and base_algo(a) not in PEERS)
        ]
        xs = _axis_xs(spec, fixed)
        modes = _x_modes(spec, fixed, mine, xs)
        slots = _slots(spec, fixed, mine, xs, modes)
        panels.append(Panel(label, fixed, xs, slots, _baseline(spec, fixed, xs, modes), series))
    return panels


# ---- notes -----------------------------------------------------------------------------------


def _x_label(axis: str, value) -> str:
    if axis == "table_bytes":
        return format_bytes(value)
    if axis == "batch_size":
        return f"batch {value}"
    if axis == "pooling":
        return f"pooling {value}"
    return str(value)


MAIN_FIELDS = ("workload", "table_bytes", "batch_size", "pooling", "distribution")
FIELD_NAMES = {"table_bytes": "table", "batch_size": "batch"}


def _value_text(name: str, value) -> str:
    return format_bytes(value) if name == "table_bytes" else str(value)


def _field_text(name: str, value) -> str:
    """`table 9.6 GB`, `batch 2048`, `uniform`, `host_threads=16`; per axis value for a
    dict."""
    label = FIELD_NAMES.get(name, name)
    if isinstance(value, dict):
        per = ", ".join(f"{x} {_value_text(name, v)}" for x, v in value.items())
        return f"{label} per model: {per}"
    if name in ("workload", "distribution"):
        return str(value)
    if name in MAIN_FIELDS:
        return f"{label} {_value_text(name, value)}"
    return f"{label}={value}"


def reference_text(fixed: Fixed, axis: str) -> str:
    """The fixed fields a reader needs: the main ones, any other that had a choice, and
    the GPU count whenever it is not one or runs on other counts were left out."""
    others = [n for n in CONFIG_FIELDS if n not in (*MAIN_FIELDS, "gpus") and n in fixed.left_out]
    shown = [n for n in (*MAIN_FIELDS, *others) if n != axis and fixed.chosen.get(n) is not None]
    parts = [_field_text(n, fixed.chosen[n]) for n in shown]
    gpus = _gpus_text(fixed) if axis != "gpus" else None
    return " · ".join([*parts, gpus] if gpus else parts)


def _gpus_text(fixed: Fixed) -> str | None:
    """`1 GPU (runs on 2 GPUs not drawn)` where a panel left several-GPU runs out, `2 GPUs`
    for a panel of only such runs; None for a one-GPU panel with nothing left out."""
    chosen, left = fixed.chosen.get("gpus"), fixed.left_out.get("gpus")
    if chosen is None or (chosen == 1 and not left):
        return None
    text = f"{chosen} GPU" + ("s" if chosen != 1 else "")
    if left:
        counts = ", ".join(str(g) for g in left)
        text += f" (runs on {counts} GPUs not drawn)"
    return text


def panel_reference_text(panel: Panel, axis: str) -> str:
    """The panel's reference point, then each further GPU series' values where they
    differ from it (`2 GPUs: noise_impl=global-keyed · host_threads=32`)."""
    parts = [reference_text(panel.fixed, axis)]
    for gpus, fixed in panel.series.items():
        differ = [
            _field_text(n, v)
            for n, v in fixed.chosen.items()
            if n != axis and v is not None and v != panel.fixed.chosen.get(n)
        ]
        if differ:
            parts.append(f"{gpus} GPUs: " + " · ".join(differ))
    return " | ".join(p for p in parts if p)


def _reference_note(spec: FigureSpec, panel: Panel) -> str:
    """The panel's reference point, and the values measured off it (left out)."""
    text = f"{spec.name} [{panel.label}]: reference point {panel_reference_text(panel, spec.axis)}"
    left = panel.fixed.left_out
    if left:
        parts = [
            f"{FIELD_NAMES.get(n, n)} {', '.join(_value_text(n, v) for v in vs)}"
            for n, vs in left.items()
        ]
        text += "; measured but left out: " + "; ".join(parts)
    return text


def _slot_notes(spec: FigureSpec, panel: Panel) -> list[str]:
    """Missing points, noisy pooled points and runs on older commits left out."""
    notes = []
    for s in panel.slots:
        where = f"{spec.name} [{panel.label}]: {s.algo} at {_x_label(spec.axis, s.x)}"
        p = s.point
        if p.status != "ok":
            notes.append(f"{where}: {p.reason}")
            continue
        if spec.measure is not GRAD_SIZE and p.stats.iqr_pct > 100 * NOISY_IQR:  # times only
            notes.append(
                f"{where}: noisy, IQR {p.stats.p75_ms - p.stats.p25_ms:.3g} ms is "
                f"{p.stats.iqr_pct:.0f}% of the median {p.stats.median_ms:.3g} ms "
                f"({p.stats.runs} run(s), {p.stats.method})"
            )
    older = [s.point.older_runs for s in panel.slots if s.point.older_runs]
    if older:
        notes.append(
            f"{spec.name} [{panel.label}]: {len(older)} point(s) drew their newest commit; "
            f"{sum(older)} run(s) on older commits left out (see the commit column)"
        )
    modes = {s.point.mode for s in panel.slots if s.point.status == "ok"}
    if len(modes) > 1 and spec.measure is not GRAD_SIZE:
        notes.append(
            f"{spec.name} [{panel.label}]: bars use different timing modes "
            f"({', '.join(sorted(modes))}); see the mode column"
        )
    return notes


# ---- data rows ------------------------------------------------------------------------------

COLUMNS = [
    "panel",
    "algo",
    "stage",
    "status",
    "reason",
    "value",
    "step_median_ms",
    "step_p25_ms",
    "step_p75_ms",
    "step_iqr_pct",
    "runs",
    "steps",
    "pooled",
    "commit",
    "mode",
]


def _data_row(panel: Panel, axis: str, slot: Slot, value: float | None = None, **extra) -> dict:
    """The numbers behind one slot: its value and how its runs were pooled."""
    p = slot.point
    row = {"panel": panel.label, axis: slot.x, "algo": slot.algo, **extra}
    row.update(status=p.status, reason=p.reason, value=value, runs=0)
    if p.stats is not None:
        row.update(
            step_median_ms=p.stats.median_ms,
            step_p25_ms=p.stats.p25_ms,
            step_p75_ms=p.stats.p75_ms,
            step_iqr_pct=p.stats.iqr_pct,
            runs=p.stats.runs,
            steps=p.stats.steps,
            pooled=p.stats.method,
            commit=p.commit,
            mode=p.mode,
        )
    return row


def _frame_of(rows: list[dict], axis: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    order = [c for c in [COLUMNS[0], axis, *COLUMNS[1:]] if c in df.columns]
    return df[order]


# ---- drawing ------------------------------------------------------------------------------------


def _draw_missing(ax, slot: Slot, label: str) -> None:
    """A short empty hatched stub in the algorithm's colour (`gid` "missing"), labelled
    with whose bar it is and why it is empty on a white ground, so neither reads as a
    measured value."""
    trans = ax.get_xaxis_transform()  # x in data, y in axes fractions: any y scale
    left = slot.pos - slot.width / 2
    ax.add_patch(
        Rectangle(
            (left, 0),
            slot.width,
            MISSING_HEIGHT,
            transform=trans,
            fill=False,
            hatch=MISSING_HATCH,
            edgecolor=algo_color(slot.algo),
            linewidth=0.6,
            gid="missing",
        )
    )
    ax.text(
        slot.pos,
        0.02,
        label,
        rotation=90,
        ha="center",
        va="bottom",
        fontsize=7,
        color="#222222",
        transform=trans,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0},
    )


def _missing_handles(ax) -> tuple[list, list[str]]:
    """The legend entry of the hatched stubs, where the panel has one."""
    if not any(p.get_gid() == "missing" for p in ax.patches):
        return [], []
    proxy = Rectangle((0, 0), 1, 1, fill=False, hatch=MISSING_HATCH, edgecolor="#555555")
    return [proxy], [MISSING_LABEL]


def _speedup(panel: Panel, x, gpus: int = 1) -> str | None:
    """DP-SGD(F)'s step over LazyDP's at `x` on `gpus` GPUs, both pooled."""
    at = {s.algo: s.point for s in panel.slots if s.x == x and s.point.status == "ok"}
    dpsgd, lazydp = series_name("dpsgd-f", gpus), series_name("lazydp", gpus)
    if dpsgd not in at or lazydp not in at:
        return None
    return f"{at[dpsgd].stats.median_ms / at[lazydp].stats.median_ms:.1f}x"


def _draw_bars(ax, spec: FigureSpec, panel: Panel, data: list[dict], notes) -> list[float]:
    """One bar per slot in the algorithm's colour (legend once per algorithm); returns the
    heights drawn."""
    labelled: set[str] = set()
    heights = []
    for s in panel.slots:
        if s.point.status != "ok":
            _draw_missing(ax, s, f"{algo_label(s.algo)}: {s.point.reason}")
            data.append(_data_row(panel, spec.axis, s))
            continue
        v = _bar_value(spec, s.point)
        if spec.normalize:
            if s.x not in panel.baseline or not panel.baseline[s.x]:
                _missing_baseline(ax, spec, panel, s, data, notes)
                continue
            v /= panel.baseline[s.x]
        label = _legend_label(s) if s.algo not in labelled else None
        labelled.add(s.algo)
        ax.bar(s.pos, v, s.width, color=algo_color(s.algo), label=label)
        if v == 0:  # no bar to see (none at all on a log axis): say it is a zero
            ax.annotate(
                "0", (s.pos, 0), xycoords=("data", "axes fraction"), ha="center", va="bottom"
            )
        heights.append(v)
        algo, gpus = split_series(s.algo)
        text = _speedup(panel, s.x, gpus) if spec.speedup and algo == "lazydp" else None
        if text:  # upright where a slot is narrower than the text
            _bar_label(ax, text, s.pos, v, fontsize=7, rotation=90 if s.width < NARROW else 0)
        data.append(_data_row(panel, spec.axis, s, v))
    return heights


def _bar_label(ax, text: str, x: float, top: float, **kw) -> None:
    """A label standing on a bar, 2 points above it (clear of a line drawn at its top);
    left out of the layout, `_headroom` keeps it inside."""
    ax.annotate(
        text,
        (x, top),
        xytext=(0, 2),
        textcoords="offset points",
        ha="center",
        va="bottom",
        in_layout=False,
        **kw,
    )


def _legend_label(s: Slot) -> str:
    """The algorithm's label, with the engine of its table noise for the dense-noise
    algorithms (`DP-SGD(F) [streamed]`): a speedup over it names its baseline."""
    algo, gpus = split_series(s.algo)
    label = algo_label(algo)
    engines = s.point.rows["table_noise"].dropna().unique() if s.point.rows is not None else []
    if base_algo(algo) in DP_FAMILY and len(engines):
        label += f" [{', '.join(sorted(engines))}]"
    return f"{label}, {gpus} GPUs" if gpus > 1 else label


def _missing_baseline(ax, spec, panel: Panel, s: Slot, data: list[dict], notes) -> None:
    """A normalized bar with no SGD value at its x: drawn empty, its numbers kept."""
    reason = "no SGD baseline"
    _draw_missing(ax, s, f"{algo_label(s.algo)}: {reason}")
    notes.append(
        f"{spec.name} [{panel.label}]: no SGD value at {_x_label(spec.axis, s.x)} "
        f"to normalize {s.algo} by"
    )
    data.append({**_data_row(panel, spec.axis, s), "status": "no baseline", "reason": reason})


def _stack_parts(spec: FigureSpec, panel: Panel, s: Slot, notes) -> list[Segment]:
    """The segments of a slot's stack, bottom up: `spec.stack`'s, else the pooled stage
    medians in `spec.stages` order, then `spec.rest` (the whole less those stages)."""
    if spec.stack is not None:
        return spec.stack.parts(spec, panel, s, notes)
    pooled = pool_stages(s.point.rows)
    parts = [
        Segment(stage.value, LABELS[stage], STAGE_COLOR[stage], pooled.get(stage.value, 0.0))
        for stage in spec.stages
    ]
    rest = spec.rest
    if rest is None:
        return parts
    whole = s.point.stats.median_ms if rest.total is None else pooled.get(rest.total.value)
    if whole is None:
        return parts
    drawn = sum(p.value for p in parts)
    parts.append(Segment(rest.name, rest.label, REST_COLOR, max(0.0, whole - drawn)))
    if drawn > whole * (1 + STACK_SLACK):
        what = "step time" if rest.total is None else f"{rest.total.value} median"
        notes.append(
            f"{spec.name} [{panel.label}]: {s.algo} at {_x_label(spec.axis, s.x)}: its stage "
            f"medians add to {drawn:.3g} ms, {100 * (drawn / whole - 1):.0f}% above its "
            f"{what} ({whole:.3g} ms); the stack stands that much taller"
        )
    return parts


def _draw_stacked(ax, spec: FigureSpec, panel: Panel, data: list[dict], notes) -> list[float]:
    """One bar per slot, its segments from `_stack_parts` (legend once per segment that
    some bar shows; a segment not measured is drawn as none and named on the bar's label,
    or once in the legend when no bar of the panel has it; its row in the numbers empty
    with its reason); returns the stacks' heights."""
    labelled: set[str] = set()
    heights: list[float] = []
    tops: list[tuple[Slot, float, str, list[str]]] = []
    for s in panel.slots:
        short = algo_label(s.algo).split(" ")[0]
        if s.point.status != "ok":
            _draw_missing(ax, s, f"{short}: {s.point.reason}")
            data.append(_data_row(panel, spec.axis, s))
            continue
        scale = 1.0
        if spec.normalize:
            if not panel.baseline.get(s.x):
                _missing_baseline(ax, spec, panel, s, data, notes)
                continue
            scale = 1.0 / panel.baseline[s.x]
        bottom, missing = 0.0, []
        for seg in _stack_parts(spec, panel, s, notes):
            if seg.value is None:
                missing.append(seg.tag or seg.name)
                row = _data_row(panel, spec.axis, s, None, stage=seg.name)
                data.append({**row, "status": "no data", "reason": seg.reason})
                continue
            v = seg.value * scale
            ax.bar(
                s.pos,
                v,
                s.width,
                bottom=bottom,
                color=seg.color,
                hatch=seg.hatch,
                label=seg.label if v > 0 and seg.label not in labelled else None,
                edgecolor="white",
                linewidth=0.3,
            )
            if v > 0:
                labelled.add(seg.label)
            bottom += v
            data.append(_data_row(panel, spec.axis, s, v, stage=seg.name))
        heights.append(bottom)
        tops.append((s, bottom, short, missing))
    _stack_labels_on_bars(ax, tops)
    return heights


def _stack_labels_on_bars(ax, tops: list[tuple[Slot, float, str, list[str]]]) -> None:
    """Each stack's label on top of it, naming the segments it lacks; a segment every
    stack of the panel lacks is named once, as a legend entry, instead."""
    common = set.intersection(*(set(m) for *_, m in tops)) if tops else set()
    for s, top, short, missing in tops:
        own = [m for m in missing if m not in common]
        text = f"{short} ({', '.join(own)} n/a)" if own else short
        _bar_label(ax, text, s.pos, top, fontsize=6, rotation=90)
    if common:
        names = ", ".join(m for m in tops[0][3] if m in common)
        ax.plot([], [], " ", label=f"{names}: not measured\n(no bar here has it)")


def _pooled_runs(panels: list[Panel]) -> pd.DataFrame:
    return pd.concat([s.point.rows for p in panels for s in p.slots if s.point.rows is not None])


def _panel_caption(spec: FigureSpec, panel: Panel) -> str:
    """Under each panel: its reference point, the commit(s) its bars come from and their
    timing mode(s)."""
    runs = [s.point.rows for s in panel.slots if s.point.rows is not None]
    commits = sorted(set(pd.concat(runs)["commit"])) if runs else []
    word = "commit" if len(commits) == 1 else "commits"
    text = panel_reference_text(panel, spec.axis)
    text = f"{text} | {word} {', '.join(commits)}" if commits else text
    modes = _modes_text(spec, panel) if spec.measure is not GRAD_SIZE else ""  # no times
    return f"{text} | {modes}" if modes else text


def _modes_text(spec: FigureSpec, panel: Panel) -> str:
    """The bars' timing mode; where it differs between axis values, each mode with the
    values drawn in it (`mixed` where one value's bars differ), so a graph replay beside
    an eager step is read as such."""
    by_x: dict = {}
    peers: dict[str, set[str]] = {}  # peer -> its modes, in slot order
    for s in panel.slots:
        if s.point.status == "ok" and base_algo(s.algo) in PEERS:
            peers.setdefault(s.algo, set()).add(s.point.mode)
        elif s.point.status == "ok":
            by_x.setdefault(s.x, set()).add(s.point.mode)
    named = {x: modes.pop() if len(modes) == 1 else "mixed" for x, modes in by_x.items()}
    kinds = list(dict.fromkeys(named[x] for x in panel.xs if x in named))
    if len(kinds) <= 1:
        text = kinds[0] if kinds else ""
    else:
        groups = (
            f"{k} at {', '.join(_x_label(spec.axis, x) for x in panel.xs if named.get(x) == k)}"
            for k in kinds
        )
        text = "timing: " + "; ".join(groups)
    peer_modes = set().union(*peers.values())
    if peers and peer_modes != set(kinds):
        named_peers = f"{', '.join(map(algo_label, peers))}: {', '.join(sorted(peer_modes))}"
        text = f"{text}; {named_peers}" if text else named_peers
    return text


def _footer(fig: plt.Figure, panels: list[Panel], hidden: Iterable[Panel] = ()) -> Text:
    """Machines, placements, dates and commits of the runs drawn, how they pooled, and
    the panels left out for want of a bar."""
    runs = _pooled_runs(panels)
    machines = ", ".join(sorted(set(runs["machine"].astype(str))))
    places = ", ".join(sorted(set(runs["placement"].astype(str))))
    dates = sorted(d[:10] for d in runs["created"] if d)
    span = f"{dates[0]}..{dates[-1]}" if dates else "-"
    commits = sorted(set(runs["commit"]))
    word = "commit" if len(commits) == 1 else "commits"
    methods = sorted({s.point.stats.method for p in panels for s in p.slots if s.point.stats})
    return _footer_text(
        fig,
        f"{machines} | placement {places} | {span} | {word} {', '.join(commits)} | "
        f"median step: {'; '.join(methods)}"
        + "".join(f" | not drawn: {p.label} ({_why_empty(p)})" for p in hidden),
    )


def _footer_text(fig: plt.Figure, text: str) -> Text:
    return fig.text(0.01, 0.005, text, fontsize=7, color="#555555", ha="left", va="bottom")


def _skip(spec: FigureSpec, panels: list[Panel], data: pd.DataFrame, notes) -> FigureResult:
    """No point succeeded: no image, and the reasons counted."""
    reasons = pd.Series([s.point.reason for p in panels for s in p.slots]).value_counts()
    why = ", ".join(f"{n} {r}" for r, n in reasons.items()) or "no points"
    notes.insert(0, f"{spec.name}: skipped, no point has a run to draw ({why})")
    return FigureResult(spec.name, None, data, notes)


def _axis_values(panels: list[Panel]) -> list:
    return sorted({x for p in panels for x in p.xs}, key=sort_key)


def render(spec: FigureSpec, df: pd.DataFrame, allow_mixed: bool = False) -> FigureResult:
    """Draw one figure from the frame's candidate records (see the module docstring)."""
    cands = spec.candidates(df) if not df.empty else df
    cands = cands[cands["algo"].isin(spec.algos)] if not cands.empty else cands
    if spec.gpu_series and not cands.empty:
        cands = gpu_series(cands)
    if cands.empty:
        return FigureResult(spec.name, None, pd.DataFrame(), [f"{spec.name}: no runs to draw"])
    notes: list[str] = []
    panels = build_panels(spec, cands, allow_mixed, notes)
    if not panels:  # only stubs that never resolved their placement
        return FigureResult(spec.name, None, pd.DataFrame(), [f"{spec.name}: no runs to draw"])
    xs = _axis_values(panels)
    if len(xs) < spec.min_x:
        found = ", ".join(_x_label(spec.axis, x) for x in xs) or "none"
        note = f"{spec.name}: needs runs at two or more values of {spec.axis}; found {found}"
        return FigureResult(spec.name, None, pd.DataFrame(), [note, *notes])
    for panel in panels:
        notes.append(_reference_note(spec, panel))
        notes.extend(_slot_notes(spec, panel))
    shown = [p for p in panels if _has_bar(p)]
    if not shown:
        rows = [_data_row(p, spec.axis, s) for p in panels for s in p.slots]
        return _skip(spec, panels, _frame_of(rows, spec.axis), notes)
    hidden = [p for p in panels if not _has_bar(p)]
    notes.extend(f"{spec.name} [{p.label}]: panel not drawn: {_why_empty(p)}" for p in hidden)
    fig, data = _draw(spec, shown, notes, hidden=hidden)
    return FigureResult(spec.name, fig, data, notes)


def _has_bar(panel: Panel) -> bool:
    return any(s.point.status == "ok" for s in panel.slots)


def _why_empty(panel: Panel) -> str:
    """Why a panel has no bar: its slots' reasons, counted (`6 not run, 3 no stage
    breakdown`)."""
    reasons = pd.Series([s.point.reason for s in panel.slots]).value_counts()
    return ", ".join(f"{n} {r}" for r, n in reasons.items())


def gpu_series(df: pd.DataFrame) -> pd.DataFrame:
    """Each algorithm's runs on N > 1 GPUs as a series of their own (`lazydp@2`, drawn
    `LazyDP, 2 GPUs`), so a panel's reference point no longer fixes the GPU count."""
    out = df.copy()
    gpus = out["gpus"].fillna(1).astype(int)
    out["algo"] = [series_name(a, g) for a, g in zip(out["algo"], gpus, strict=True)]
    out["gpus"] = pd.Series([None] * len(out), dtype=object, index=out.index)
    return out


LEGEND_WIDTH = 1.7  # inches beside each panel for its legend
SPEEDUP_NOTE = "on LazyDP's bars: DP-SGD(F)'s step time ÷ LazyDP's (same GPUs)"


def _draw(spec: FigureSpec, panels: list[Panel], notes: list[str], *, hidden: list[Panel]) -> tuple:
    """The Figure (one axes per panel) and the numbers behind its bars. Panels side by
    side share one y scale kind (a log panel beside a linear one misreads) and, where
    their entries are the same, one legend, right of the last panel. A panel with no bar
    (`hidden`: hybrid-host runs, which have no stage breakdown, in a stage figure) gets no
    axes of empty hatches; the footer names it and why, and its slots stay in the data."""
    width, height = (7, 4.5) if spec.stacked else (6.5, 4.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    data: list[dict] = []
    drawn = []
    for ax, panel in zip(axes[0], panels, strict=True):
        draw = _draw_stacked if spec.stacked else _draw_bars
        heights = list(draw(ax, spec, panel, data, notes))
        ax.set_xticks(range(len(panel.xs)), [_x_label(spec.axis, x) for x in panel.xs])
        ax.set_xlim(-0.5, max(1, len(panel.xs)) - 0.5)
        ax.set_xlabel(_panel_caption(spec, panel), fontsize=7)
        ax.set_title(panel.label, fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        extra = _missing_handles(ax)
        drawn.append((ax, heights, handles + extra[0], labels + extra[1]))
    scale = y_scale(h for _, heights, _, _ in drawn for h in heights)
    order = _stack_labels(spec)[::-1]  # a stack's segments, top down
    shared = len(drawn) > 1 and all(d[3] == drawn[0][3] for d in drawn)
    for i, (ax, heights, handles, labels) in enumerate(drawn):
        scale_y(ax, heights, spec.ylabel, scale=scale)
        if not shared or i == len(drawn) - 1:
            _legend(ax, order=order, handles=handles, labels=labels)
    legends = 1 if shared else len(panels)
    fig.set_size_inches(width * len(panels) + LEGEND_WIDTH * legends, height)
    fig.suptitle(f"{spec.title}\n{SPEEDUP_NOTE}" if spec.speedup else spec.title)
    layout(fig, _footer(fig, panels, hidden))
    data.extend(_data_row(p, spec.axis, s) for p in hidden for s in p.slots)
    return fig, _frame_of(data, spec.axis)


# ---- reading at a glance: scale, legends, layout ---------------------------------------------

LOG_SPAN = 20.0  # a panel whose bars span more than this factor gets a log y axis


def y_scale(values: Iterable[float]) -> str:
    """`log` when the positive values span more than `LOG_SPAN` (largest over smallest),
    else `linear`: a linear axis flattens the small bars of a wide span, a log axis
    shrinks the differences of a narrow one."""
    positive = [v for v in map(float, values) if math.isfinite(v) and v > 0]
    if len(positive) < 2 or max(positive) <= LOG_SPAN * min(positive):
        return "linear"
    return "log"


FEW_DECADES = 1000.0  # a log axis spanning less than this factor also ticks 2x and 5x


def scale_y(ax, values: Iterable[float], label: str, scale: str | None = None) -> str:
    """Set the y axis scale (`scale`, else `y_scale(values)`; linear without a positive
    value) and its label, which names a log scale (`step time (ms, log scale)`); a log
    axis starts a power of ten below half the smallest value, so that bar shows, and
    labels its ticks as plain numbers (0.1, 20, 5000), at 1, 2 and 5 of each decade when
    it spans few decades, so a bar between two powers of ten can be read."""
    values = list(values)
    positive = [v for v in values if math.isfinite(v) and v > 0]
    scale = (scale or y_scale(values)) if positive else "linear"
    ax.set_yscale(scale)
    if scale == "log":
        low = min(positive)
        ax.set_ylim(bottom=10 ** math.floor(math.log10(low / 2)))
        subs = (1.0, 2.0, 5.0) if max(positive) < FEW_DECADES * low else (1.0,)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        label = f"{label[:-1]}, log scale)" if label.endswith(")") else f"{label} (log scale)"
    ax.set_ylabel(label)
    return scale


def _stack_labels(spec: FigureSpec) -> list[str]:
    """A stack's segment labels, bottom up."""
    if spec.stack is not None:
        return list(spec.stack.labels)
    return [LABELS[stage] for stage in spec.stages] + ([spec.rest.label] if spec.rest else [])


def _legend(ax, order: list[str] | None = None, handles=None, labels=None) -> None:
    """The panel's legend right of its axes, clear of its bars; entries named in `order`
    come in that order, before the others."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if order:
        rank = {label: i for i, label in enumerate(order)}
        pairs = sorted(zip(handles, labels, strict=True), key=lambda p: rank.get(p[1], len(rank)))
        handles, labels = [h for h, _ in pairs], [label for _, label in pairs]
    ax.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=7,
        frameon=False,
    )


HEADROOM_PAD = 0.02  # axes fraction left clear above the highest label on a bar
TICK_GAP = 4.0  # pixels between neighbouring x tick labels, else they are slanted
SLANTS = (45, 90)  # the x tick labels' rotations to try, in turn
SEPARATORS = re.compile(r"(?<= [·|]) ")  # where the caption and footer lines may break


def layout(fig: plt.Figure, footer: Text) -> None:
    """Fit the figure's text inside it without overlaps: the footer and each panel's
    caption wrapped to their width, x tick labels slanted where they would touch, and the
    y axes raised so the labels standing on bars end inside their axes."""
    renderer = fig.canvas.get_renderer()
    _wrap(footer, fig.bbox.width * 0.98, renderer)
    lines = footer.get_text().count("\n") + 1
    rect = (0, (lines * 7 * 1.3 + 4) / 72 / fig.get_figheight(), 1, 1)
    fig.tight_layout(rect=rect)
    fig.canvas.draw()
    for ax in fig.axes:
        _wrap(ax.xaxis.label, ax.bbox.width, renderer)
        _slant_ticks(ax, renderer)
    fig.tight_layout(rect=rect)
    for ax in fig.axes:
        _headroom(ax, renderer)


def _wrap(text: Text, width: float, renderer) -> None:
    """Break a text at its ` · ` and ` | ` separators so each line fits `width` pixels."""
    font = FontProperties(size=text.get_fontsize())
    lines: list[str] = []
    for part in SEPARATORS.split(text.get_text()):
        wider = f"{lines[-1]} {part}" if lines else part
        fits = renderer.get_text_width_height_descent(wider, font, ismath=False)[0] <= width
        if lines and fits:
            lines[-1] = wider
        else:
            lines.append(part)
    text.set_text("\n".join(line.rstrip() for line in lines))


def _slant_ticks(ax, renderer) -> None:
    """Slant the x tick labels when two neighbours would touch, upright if slanted ones
    still would."""
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    for rotation in SLANTS:
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        if all(a.x1 + TICK_GAP <= b.x0 for a, b in itertools.pairwise(boxes)):
            return
        for t in labels:
            t.set(rotation=rotation, ha="right", rotation_mode="anchor")


def _headroom(ax, renderer) -> None:
    """Raise the top of the y axis until every label standing on a bar ends inside the
    axes, below the panel's title."""
    log = ax.get_yscale() == "log"
    fwd, back = (math.log10, lambda v: 10**v) if log else (float, float)
    y0, y1 = (fwd(v) for v in ax.get_ylim())
    top = y1
    box = ax.bbox
    for t in ax.texts:
        if not isinstance(t, Annotation) or t.xy[1] <= 0:
            continue  # labels of missing bars stand inside the axes already
        y = fwd(t.xy[1])
        anchor = box.y0 + (y - y0) / (y1 - y0) * box.height
        above = (t.get_window_extent(renderer).y1 - anchor) / box.height
        room = 1 - HEADROOM_PAD - above
        if room > 0.2:  # a label taller than the axes stays where it is
            top = max(top, y0 + (y - y0) / room)
    if top > y1:
        ax.set_ylim(back(y0), back(top))


# ---- the noise roofline ------------------------------------------------------------------


def bench_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        if r.get("kind") != "bench_noise":
            continue
        c, b = r["config"], r["bench"]
        rows.append(
            {
                "engine": r["noise"]["engine"],
                "impl": c["noise_impl"],
                "placement": c["placement"],
                "table_bytes": c["table_bytes"],
                "achieved_gbps": b["achieved_bytes_per_s"] / 1e9,
                "copy_gbps": b["copy_bytes_per_s"] / 1e9,
                # the generator alone, as GB/s of a table it would noise (4 B read + 4 written)
                "draw_gbps": 8 * (b.get("arithmetic_bound_samples_per_s") or math.nan) / 1e9,
                "pct_of_copy": b["pct_of_copy"],
                "gsamples_per_s": b["samples_per_s"] / 1e9,
                **_hybrid_bounds(c["table_bytes"], b.get("hybrid")),
                "pct_of_bound": b.get("pct_of_bound"),
                "machine": (r.get("env") or {}).get("gpu_name") or "host",
                "commit": commit_label(r.get("env") or {}),
                "created": r.get("created_utc") or "",
            }
        )
    return pd.DataFrame(rows)


def _hybrid_bounds(table_bytes: int, hybrid: dict | None) -> dict:
    """A hybrid bench's bounds as GB/s of the table read and written (the bars' unit):
    with the host DRAM shared by copies and adds, and with each resource alone."""

    def gbps(ms: float | None) -> float | None:
        return 2 * table_bytes / (ms / 1e3) / 1e9 if ms else None

    hybrid = hybrid or {}
    if hybrid and "bound_unshared_ms" not in hybrid:  # records before the shared-DRAM term
        return {"bound_gbps": None, "unshared_bound_gbps": gbps(hybrid.get("bound_ms"))}
    return {
        "bound_gbps": gbps(hybrid.get("bound_ms")),
        "unshared_bound_gbps": gbps(hybrid.get("bound_unshared_ms")),
    }


def noise_roofline(bench: pd.DataFrame) -> FigureResult:
    """Each engine's dense noisy update against its bound: the measured copy bandwidth for
    a table in GPU or host memory (dashed), and for a host table noised with a GPU's help
    (`hybrid`) the bound of PCIe, the host's add and the GPU's draw (solid: the host DRAM
    shared by copies and adds; dotted: each resource alone)."""
    if bench.empty:
        return FigureResult(
            "noise-roofline", None, bench, ["noise-roofline: no `bench noise` records"]
        )
    bench = bench.sort_values("created").drop_duplicates(
        ["engine", "placement", "table_bytes", "machine"], keep="last"
    )
    # bars by table size, then engine; one colour per engine across panels
    bench = bench.sort_values(["table_bytes", "engine"], kind="stable")
    engines = sorted(set(bench["engine"]))
    colors = {e: PALETTE[i % len(PALETTE)] for i, e in enumerate(engines)}
    parts = [
        (title, part)
        for title, part in (
            ("table in GPU or host memory", bench[bench["placement"] != "hybrid"]),
            ("table in host RAM, GPU beside it (hybrid)", bench[bench["placement"] == "hybrid"]),
        )
        if not part.empty
    ]
    size = ((6.5 + LEGEND_WIDTH) * len(parts), 4.4)
    fig, axes = plt.subplots(1, len(parts), figsize=size, squeeze=False)
    drawn = [
        _roofline_panel(ax, part, title, colors)
        for ax, (title, part) in zip(axes[0], parts, strict=True)
    ]
    scale = y_scale(v for values in drawn for v in values)  # one kind for panels side by side
    for ax, values in zip(axes[0], drawn, strict=True):
        scale_y(ax, values, "dense noisy update, GB/s (read + write)", scale=scale)
    fig.suptitle("Noise roofline: dense noisy update vs its measured bound")
    commits = sorted(set(bench["commit"]))
    word = "commit" if len(commits) == 1 else "commits"
    machines = ", ".join(sorted(set(bench["machine"])))
    layout(fig, _footer_text(fig, f"{machines} | {word} {', '.join(commits)}"))
    return FigureResult("noise-roofline", fig, bench.drop(columns=["created"]), [])


PCT_TITLE = "% on a bar: of its lowest line"
BOUND_LINES = {
    "dashed": "copy bandwidth",
    "dashdot": "generator alone, in cache\n(no DRAM traffic)",
    "solid": "bound, host DRAM shared\nby copies and adds",
    "dotted": "bound, each resource alone",
}


MEMORY_NAMES = {"gpu": "GPU", "cpu": "host"}  # where a non-hybrid bench's table lives


def _roofline_label(r) -> str:
    """A bar's engine and table size; in GPU or host memory, which memory too (one engine
    runs in both, and its two bars would read alike)."""
    engine = r.engine.split(" (")[0]
    memory = MEMORY_NAMES.get(r.placement)
    name = f"{memory} · {engine}" if memory else engine
    return f"{name}\n{format_bytes(r.table_bytes)}"


def _roofline_panel(ax, part: pd.DataFrame, title: str, colors: dict[str, str]) -> list[float]:
    """Bars of achieved GB/s in their engine's colour, each with its bound lines (the copy
    bandwidth and, where measured, the generator's rate alone; hybrid: the two models of
    `hybrid_bound.py`) and, above the bar and its lines, the % of the lowest, the bound
    that binds; returns the values drawn, for the y scale."""
    xs = range(len(part))
    labels = [_roofline_label(r) for r in part.itertuples()]
    ax.bar(xs, part["achieved_gbps"], color=[colors[e] for e in part["engine"]])
    values, styles = list(part["achieved_gbps"]), []
    for i, r in enumerate(part.itertuples()):
        lines = [(r.copy_gbps, "dashed")] + ([(r.draw_gbps, "dashdot")] if r.draw_gbps > 0 else [])
        if r.placement == "hybrid":
            pairs = ((r.bound_gbps, "solid"), (r.unshared_bound_gbps, "dotted"))
            lines = [(v, style) for v, style in pairs if pd.notna(v)]
        for value, style in lines:
            ax.hlines(value, i - 0.4, i + 0.4, colors="black", linestyles=style)
            values.append(value)
            styles.append(style)
        if lines:  # a hybrid record without its bounds gets no percentage
            pct = 100 * r.achieved_gbps / min(value for value, _ in lines)
            top = max(r.achieved_gbps, *(value for value, _ in lines))  # above its lines
            _bar_label(ax, f"{pct:.0f}%", i, top, fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    keys = [s for s in BOUND_LINES if s in styles]
    handles = [Line2D([], [], color="black", linestyle=s) for s in keys]
    _legend(ax, handles=handles, labels=[BOUND_LINES[s] for s in keys])
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title(PCT_TITLE, prop={"size": 7})
    return values


# ---- energy: GPU measured, host CPU read or estimated -------------------------------------

GPU_ENERGY = "GPU (NVML, measured)"
HOST_ENERGY = {
    "rapl": "host CPU (RAPL)",
    CPU_ESTIMATE: "host CPU (TDP x utilisation, estimated)",
}
ESTIMATED_HATCH = "////"
SHORT_WINDOW = "window under ~1 s, unreliable"  # every pooled run's energy warned so
SHORT_HATCH = "...."


def _median(values: pd.Series) -> float | None:
    known = [float(v) for v in values if v is not None and not pd.isna(v)]
    return statistics.median(known) if known else None


def _energy_reason(rows: pd.DataFrame, what: str) -> str:
    reasons = [r for r in rows.sort_values("created")["energy_reason"] if isinstance(r, str)]
    return f"no {what} energy" + (f": {reasons[-1]}" if reasons else "")


def energy_parts(spec: FigureSpec, panel: Panel, s: Slot, notes: list[str]) -> list[Segment]:
    """A slot's GPU energy per step (NVML) under its host CPU energy per step (RAPL, or
    rated power x utilisation, hatched as an estimate): pooled medians; a part no pooled
    run has is a missing segment with the records' reason, and a note."""
    rows = s.point.rows
    gpu, host = _median(rows["gpu_j_per_step"]), _median(rows["cpu_j_per_step"])
    sources = sorted(set(rows.loc[rows["cpu_j_per_step"].notna(), "cpu_source"].dropna()))
    label = " / ".join(HOST_ENERGY.get(src, f"host CPU ({src})") for src in sources)
    short = bool(rows["energy_warning"].map(lambda w: isinstance(w, str)).all())
    parts = [
        Segment("gpu", GPU_ENERGY, PALETTE[0], gpu, reason=_energy_reason(rows, "GPU"), tag="GPU"),
        Segment(
            "host_cpu",
            label or HOST_ENERGY["rapl"],
            PALETTE[1],
            host,
            hatch=ESTIMATED_HATCH if CPU_ESTIMATE in sources else None,
            reason=_energy_reason(rows, "host CPU"),
            tag="host",
        ),
    ]
    where = f"{spec.name} [{panel.label}]: {s.algo} at {_x_label(spec.axis, s.x)}"
    for seg in parts:
        if seg.value is None:
            notes.append(f"{where}: {seg.reason}; drawn without it (missing, not 0)")
    if short:  # drawn, and marked as such in its own legend entry
        notes.append(f"{where}: energy {SHORT_WINDOW} ({rows['energy_warning'].iloc[0]})")
        parts = [_short_window(seg) for seg in parts]
    return parts


def _short_window(seg: Segment) -> Segment:
    """A segment whose every pooled run measured too short a window: dotted, and named so."""
    return replace(seg, label=f"{seg.label}, {SHORT_WINDOW}", hatch=(seg.hatch or "") + SHORT_HATCH)


ENERGY_STACK = CustomStack((GPU_ENERGY, *HOST_ENERGY.values()), energy_parts)


# ---- the paper's figures -----------------------------------------------------------------

DP_FAMILY = ("dpsgd-b", "dpsgd-r", "dpsgd-f", "dpsgd-bk")
STEP = "step time (ms)"


def _sensitivity(
    name: str, axis: str, title: str, algos: tuple[str, ...] = MAIN_ALGOS, **ref
) -> FigureSpec:
    """A fig. 13 panel: `algos`' step times at two or more values of `axis`."""
    return FigureSpec(
        name,
        title,
        axis,
        algos,
        STEPS,
        STEP,
        reference=reference(**ref),
        speedup=True,
        min_x=2,
    )


SPECS: list[FigureSpec] = [
    FigureSpec(
        "fig3",
        "Fig. 3: DP-SGD step time by stage, normalized to SGD",
        "table_bytes",
        ("sgd", *DP_FAMILY, *PEERS),
        STAGES,
        "step time normalized to SGD",
        stages=tuple(TOP_STACK),
        rest=STEP_REST,
        normalize=True,
    ),
    FigureSpec(
        "fig5",
        "Fig. 5: model update breakdown (ms per step)",
        "table_bytes",
        DP_FAMILY,
        STAGES,
        "time per step (ms)",
        stages=tuple(UPDATE_CHILDREN),
        rest=UPDATE_REST,
    ),
    # Fig. 5 from --noise-impl torch runs: noise sampling and the parameter update as
    # separate passes, as the paper measured them (the fused engines draw and add in one
    # pass, `noisy_update_fused`).
    FigureSpec(
        "fig5-torch",
        "Fig. 5, torch noise engine: DP-SGD(F) model update (ms per step)",
        "table_bytes",
        ("dpsgd-f",),
        STAGES,
        "time per step (ms)",
        stages=tuple(UPDATE_CHILDREN),
        rest=UPDATE_REST,
    ),
    FigureSpec(
        "fig10",
        "Fig. 10: step time by batch size",
        "batch_size",
        MAIN_ALGOS,
        STEPS,
        STEP,
        speedup=True,
    ),
    FigureSpec(
        "fig11",
        "Fig. 11: model update breakdown by batch size (ms per step)",
        "batch_size",
        MAIN_ALGOS,
        STAGES,
        "time per step (ms)",
        stages=tuple(UPDATE_CHILDREN),
        rest=UPDATE_REST,
    ),
    # Energy per step, GPU and host stacked: a run too short for the NVML counter (under
    # ~50 ms) has no GPU energy, so a point pools the runs that measured the most.
    FigureSpec(
        "fig12",
        "Fig. 12: energy per step, GPU (measured) and host CPU (RAPL or estimated)",
        "batch_size",
        MAIN_ALGOS,
        ENERGY,
        "energy per step (J)",
        stack=ENERGY_STACK,
    ),
    replace(
        _sensitivity("fig13a", "table_bytes", "Fig. 13(a): table size", (*MAIN_ALGOS, *PEERS)),
        gpu_series=True,
    ),
    _sensitivity(
        "fig13b",
        "pooling",
        "Fig. 13(b): pooling factor",
        table_bytes=largest_table(("lazydp",), "pooling"),
    ),
    # The RMC models each run at their own batch size and pooling.
    FigureSpec(
        "fig13c",
        "Fig. 13(c): models RMC1-3",
        "workload",
        MAIN_ALGOS,
        STEPS,
        STEP,
        reference=reference(per_x=("batch_size", "pooling"), workload=most_common),
        candidates=rmc_workloads,
        speedup=True,
        min_x=2,
    ),
    _sensitivity(
        "fig13d",
        "distribution",
        "Fig. 13(d): access locality",
        table_bytes=largest_table(("lazydp",), "distribution"),
    ),
    # Ghazi et al. 2023 (DP-FEST, DP-AdaFEST) beside LazyDP: time, and what each writes
    FigureSpec(
        "sparse-step",
        "Sparsity-preserving DP (NOT DP-SGD-equivalent) vs LazyDP: step time by table size",
        "table_bytes",
        SPARSE_ALGOS,
        STEPS,
        STEP,
    ),
    FigureSpec(
        "sparse-grad",
        "Rows a step's noisy update writes, as a share of the table",
        "table_bytes",
        tuple(a for a in SPARSE_ALGOS if a != "lazydp"),
        GRAD_SIZE,
        "share of table rows written per step",
    ),
    FigureSpec(
        "fig14",
        "Fig. 14: EANA (NOT DP-SGD-equivalent) vs LazyDP",
        "batch_size",
        ("eana", "lazydp"),
        STEPS,
        STEP,
        reference=reference(table_bytes=largest_table(("eana", "lazydp"), "batch_size")),
    ),
]
FIGURES: dict[str, FigureSpec] = {spec.name: spec for spec in SPECS}
ALL_FIGURES = [*FIGURES, "noise-roofline", "utility"]


def make_figure(name: str, records: list[dict], allow_mixed_commits: bool = False) -> FigureResult:
    """Figures compare algorithms under the fused, streamed or roundtrip engines (the
    strongest baseline where it was run: roundtrip, then streamed), each panel under one;
    `fig5-torch` draws only the `--noise-impl torch` runs. A panel draws one commit's records unless
    `allow_mixed_commits`."""
    if name == "noise-roofline":
        return noise_roofline(bench_frame(records))
    if name == "utility":  # held-out AUC and log-loss vs step (report/utility_figure.py)
        from lazydp_bench.report.utility_figure import utility_figure

        return utility_figure(records)
    df = figure_frame(records)
    if not df.empty:
        torch_runs = df["noise_impl"] == "torch"
        df = df[(torch_runs if name == "fig5-torch" else ~torch_runs) | df["noise_impl"].isna()]
    return render(FIGURES[name], df, allow_mixed_commits)
