"""The paper's figures, redrawn from stored records only (DataFrame in, Figure out).

Every figure function takes the tidy frame of `figure_frame()` and returns a `FigureResult`:
the matplotlib Figure (or None when there is nothing to draw), the numbers behind it as a
DataFrame (written as CSV beside the image), and notes on what is missing. Runs from
different machines or placements are drawn in separate panels, never in one bar; when a
point was measured more than once the newest record is used.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from lazydp_bench.measure.stages import LABELS, UPDATE_CHILDREN, Stage
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


def algo_label(algo: str) -> str:
    """`LazyDP [bookkeeping]` for a variant `lazydp[bookkeeping]`; the name if unknown."""
    base, _, variant = algo.partition("[")
    label = ALGO_LABEL.get(base, base)
    return f"{label} [{variant.rstrip(']')}]" if variant else label


def algo_color(algo: str) -> str:
    """A registered algorithm's colour; variants and unknown names a stable spare one."""
    if algo in ALGO_COLOR:
        return ALGO_COLOR[algo]
    return SPARE_COLORS[sum(algo.encode()) % len(SPARE_COLORS)]


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
    Stage.OTHER: "#999999",
}
FAILED = ("oom", "skipped", "timeout", "error")
MAIN_ALGOS = ["sgd", "dpsgd-f", "lazydp"]


@dataclass
class FigureResult:
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


def figure_frame(records: list[dict]) -> pd.DataFrame:
    """One row per training-run record (bench records are kept apart), newest per point."""
    rows = []
    for r in records:
        if r.get("kind") == "bench_noise":
            continue
        c, t = r.get("config") or {}, r.get("timing") or {}
        env, energy = r.get("env") or {}, r.get("energy") or {}
        stages = {s["name"]: s["median_ms"] for s in r.get("stages") or []}
        rows.append(
            {
                "algo": algo_variant(c.get("algo"), c.get("clipping")),
                "workload": c.get("workload"),
                "table_bytes": c.get("table_bytes"),
                "placement": c.get("placement"),
                "batch_size": c.get("batch_size"),
                "pooling": c.get("pooling"),
                "distribution": c.get("distribution"),
                "noise_impl": "torch" if c.get("noise_impl") == "torch" else "fused",
                "status": r.get("status"),
                "step_ms": t.get("step_median_ms"),
                "throughput": t.get("throughput_samples_per_s"),
                "gpu_j_per_step": energy.get("gpu_j_per_step"),
                "stages": stages,
                "machine": env.get("gpu_name") or env.get("cpu") or "unknown",
                "commit": (env.get("commit") or "")[:10],
                "breakdown": bool(c.get("breakdown", True)),
                "cuda_graph": bool(t.get("cuda_graph", False)),
                "created": r.get("created_utc") or "",
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    mode = [*POINT_KEY, "breakdown", "cuda_graph"]
    df = df.sort_values("created").drop_duplicates(subset=mode, keep="last")
    return df.reset_index(drop=True)


POINT_KEY = [
    "algo",
    "workload",
    "table_bytes",
    "placement",
    "batch_size",
    "pooling",
    "distribution",
    "noise_impl",
    "machine",
]


def for_steps(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point for step-time figures: an end-to-end (--no-breakdown) record wins,
    and among those a CUDA-graph replay (the step without launch overhead)."""
    if df.empty:
        return df
    order = df.sort_values(["breakdown", "cuda_graph"], ascending=[True, False])
    return order.drop_duplicates(subset=POINT_KEY, keep="first")


def for_stages(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with a stage breakdown, for the stacked figures."""
    return df if df.empty else df[df["breakdown"]]


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
                "pct_of_copy": b["pct_of_copy"],
                "gsamples_per_s": b["samples_per_s"] / 1e9,
                "machine": (r.get("env") or {}).get("gpu_name") or "host",
                "created": r.get("created_utc") or "",
            }
        )
    return pd.DataFrame(rows)


def _footer(fig: plt.Figure, df: pd.DataFrame) -> None:
    machines = ", ".join(sorted(set(df["machine"].astype(str))))
    places = ", ".join(sorted(set(df["placement"].astype(str)))) if "placement" in df else "-"
    dates = sorted(d[:10] for d in df["created"] if d)
    span = f"{dates[0]}..{dates[-1]}" if dates else "-"
    commits = (
        ", ".join(sorted(set(df.get("commit", pd.Series(dtype=str)).astype(str)) - {""})) or "-"
    )
    fig.text(
        0.01,
        0.005,
        f"{machines} | placement {places} | {span} | commit {commits}",
        fontsize=7,
        color="#555555",
        ha="left",
        va="bottom",
    )


def _panels(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per (machine, placement): never mixed into one bar."""
    out = []
    for (machine, placement), part in df.groupby(["machine", "placement"], sort=True):
        out.append((f"{machine} · {placement}", part))
    return out


def _algos(df: pd.DataFrame, wanted: list[str] | None) -> list[str]:
    present = set(df["algo"].dropna())
    order = [a for a in ALGO_ORDER if a in present]
    order += sorted(present - set(order))  # variants and algorithms not registered here
    return [a for a in order if wanted is None or a in wanted]


def _x_label(axis: str, value) -> str:
    if axis == "table_bytes":
        return format_bytes(value)
    if axis == "batch_size":
        return f"batch {value}"
    if axis == "pooling":
        return f"pooling {value}"
    return str(value)


def _sgd_base(part: pd.DataFrame, axis: str) -> dict:
    ok = part[(part["algo"] == "sgd") & (part["status"] == "ok")]
    return dict(zip(ok[axis], ok["step_ms"], strict=True))


@dataclass(frozen=True)
class Cell:
    """One bar slot of a grouped figure: group index, axis value, algorithm, position, row."""

    i: int
    j: int
    x: object
    algo: str
    pos: float
    width: float
    row: pd.Series


def _cells(name: str, part: pd.DataFrame, axis: str, algos, label: str, notes: list[str]):
    """The (x, algorithm) slots of one panel that have a record; missing ones become notes."""
    xs = sorted(part[axis].dropna().unique(), key=_sort_key)
    names = _algos(part, algos)
    width = 0.8 / max(1, len(names))
    cells = []
    for j, algo in enumerate(names):
        for i, x in enumerate(xs):
            row = part[(part["algo"] == algo) & (part[axis] == x)]
            if row.empty:
                notes.append(f"{name}: no {algo} run at {_x_label(axis, x)} ({label})")
                continue
            pos = i + (j - (len(names) - 1) / 2) * width
            cells.append(Cell(i, j, x, algo, pos, width, row.iloc[0]))
    return xs, cells


def _grouped_bars(
    name: str,
    df: pd.DataFrame,
    axis: str,
    algos: list[str] | None,
    value: Callable[[pd.Series], float | None],
    ylabel: str,
    title: str,
    logy: bool = False,
    normalize: bool = False,
    annotate: Callable[[pd.DataFrame, object, str], str | None] | None = None,
) -> FigureResult:
    """Bars of `value` per algorithm, grouped by `axis`, one panel per machine/placement."""
    notes: list[str] = []
    df = for_steps(df)
    if df.empty:
        return FigureResult(name, None, pd.DataFrame(), [f"{name}: no runs to draw"])
    panels = _panels(df)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    data_rows = []
    for ax, (label, part) in zip(axes[0], panels, strict=True):
        base = _sgd_base(part, axis)
        xs, cells = _cells(name, part, axis, algos, label, notes)
        for cell in cells:
            i, x, algo, pos, width, r = cell.i, cell.x, cell.algo, cell.pos, cell.width, cell.row
            if r["status"] != "ok":
                ax.text(
                    pos,
                    0.02,
                    r["status"].upper(),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    transform=ax.get_xaxis_transform(),
                )
                data_rows.append({"panel": label, axis: x, "algo": algo, "status": r["status"]})
                continue
            v = value(r)
            if v is None:
                notes.append(f"{name}: {algo} at {_x_label(axis, x)} has no value ({label})")
                continue
            if normalize:
                sgd = part[(part["algo"] == "sgd") & (part[axis] == x)]
                ref = value(sgd.iloc[0]) if x in base and not sgd.empty else None
                if not ref:
                    notes.append(f"{name}: no SGD value at {_x_label(axis, x)} to normalize by")
                    continue
                v = v / ref
            ax.bar(
                pos,
                v,
                width,
                color=algo_color(algo),
                label=algo_label(algo) if i == 0 else None,
            )
            text = annotate(part, x, algo) if annotate else None
            if text:
                ax.annotate(text, (pos, v), ha="center", va="bottom", fontsize=7)
            data_rows.append({"panel": label, axis: x, "algo": algo, "status": "ok", "value": v})
        ax.set_xticks(range(len(xs)), [_x_label(axis, x) for x in xs])
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=9)
        if logy:
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    _footer(fig, df)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return FigureResult(name, fig, pd.DataFrame(data_rows), notes)


def _stacked(
    name: str,
    df: pd.DataFrame,
    axis: str,
    algos: list[str] | None,
    stages: list[Stage],
    title: str,
    normalize: bool,
) -> FigureResult:
    """Stacked stage bars per algorithm, grouped by `axis` (the paper's Fig. 3/5/11 layout)."""
    notes: list[str] = []
    df = for_stages(df)
    ok = df[df["status"] == "ok"] if not df.empty else df
    if ok.empty:
        return FigureResult(name, None, pd.DataFrame(), [f"{name}: no successful runs to draw"])
    panels = _panels(ok)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    data_rows = []
    for ax, (label, part) in zip(axes[0], panels, strict=True):
        base = _sgd_base(part, axis)
        xs, cells = _cells(name, part, axis, algos, label, notes)
        for cell in cells:
            i, j, x, algo, pos, width = cell.i, cell.j, cell.x, cell.algo, cell.pos, cell.width
            st = cell.row["stages"]
            if not st:
                notes.append(f"{name}: {algo} at {_x_label(axis, x)} has no stage breakdown")
                continue
            scale = 1.0
            if normalize:
                if x not in base:
                    notes.append(f"{name}: no SGD run at {_x_label(axis, x)} to normalize by")
                    continue
                scale = 1.0 / base[x]
            bottom = 0.0
            for s in stages:
                v = st.get(s.value, 0.0) * scale
                if s is Stage.OTHER:
                    v += st.get(Stage.DATA.value, 0.0) * scale
                ax.bar(
                    pos,
                    v,
                    width,
                    bottom=bottom,
                    color=STAGE_COLOR[s],
                    label=_stage_label(s) if (i == 0 and j == 0) else None,
                    edgecolor="white",
                    linewidth=0.3,
                )
                bottom += v
                data_rows.append(
                    {"panel": label, axis: x, "algo": algo, "stage": s.value, "value": v}
                )
            ax.annotate(
                algo_label(algo).split(" ")[0],
                (pos, bottom),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
            )
        ax.set_xticks(range(len(xs)), [_x_label(axis, x) for x in xs])
        ax.set_ylabel("step time normalized to SGD" if normalize else "time per step (ms)")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _footer(fig, ok)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return FigureResult(name, fig, pd.DataFrame(data_rows), notes)


def _stage_label(stage: Stage) -> str:
    return "Data + other" if stage is Stage.OTHER else LABELS[stage]


def _sort_key(v):
    return (0, float(v)) if isinstance(v, numbers.Number) else (1, str(v))


def _select(df: pd.DataFrame, algos: list[str] | None = None, **eq) -> pd.DataFrame:
    if df.empty:
        return df
    out = df
    if algos:
        out = out[out["algo"].isin(algos)]
    for k, v in eq.items():
        out = out[out[k] == v]
    return out


def _mlperf(df: pd.DataFrame) -> pd.DataFrame:
    """The main workload's uniform-access runs: mlperf-dlrm if present, else the workload
    with the most runs (so a small local sweep plots too); RMC runs belong to fig13c."""
    if df.empty:
        return df
    main = df[~df["workload"].isin(["rmc1", "rmc2", "rmc3"])]
    if main.empty:
        return main
    name = (
        "mlperf-dlrm" if (main["workload"] == "mlperf-dlrm").any() else main["workload"].mode()[0]
    )
    return _select(main, workload=name, distribution="uniform")


def _step(r: pd.Series) -> float | None:
    return r["step_ms"]


def _speedup_label(part: pd.DataFrame, x, algo: str, axis: str) -> str | None:
    if algo != "lazydp":
        return None
    f = part[(part["algo"] == "dpsgd-f") & (part[axis] == x) & (part["status"] == "ok")]
    lz = part[(part["algo"] == "lazydp") & (part[axis] == x) & (part["status"] == "ok")]
    if f.empty or lz.empty:
        return None
    return f"{f.iloc[0]['step_ms'] / lz.iloc[0]['step_ms']:.1f}x"


def fig3(df: pd.DataFrame) -> FigureResult:
    part = _one_batch(_select(_mlperf(df), ["sgd", "dpsgd-b", "dpsgd-r", "dpsgd-f", "dpsgd-bk"]))
    return _stacked(
        "fig3",
        part,
        "table_bytes",
        None,
        TOP_STACK,
        "Fig. 3: DP-SGD step time by stage, normalized to SGD",
        normalize=True,
    )


def fig5(df: pd.DataFrame) -> FigureResult:
    part = _one_batch(_select(_mlperf(df), ["dpsgd-b", "dpsgd-r", "dpsgd-f", "dpsgd-bk"]))
    return _stacked(
        "fig5",
        part,
        "table_bytes",
        None,
        list(UPDATE_CHILDREN),
        "Fig. 5: model update breakdown (ms per step)",
        normalize=False,
    )


def fig5_torch(df: pd.DataFrame) -> FigureResult:
    """Fig. 5 with the torch noise engine (`--noise-impl torch`): noise sampling and the
    parameter update as separate passes, as the paper measured them (the fused engines
    draw and add in one pass, `noisy_update_fused`)."""
    part = _one_batch(_select(_mlperf(df), ["dpsgd-f"]))
    return _stacked(
        "fig5-torch",
        part,
        "table_bytes",
        None,
        list(UPDATE_CHILDREN),
        "Fig. 5, torch noise engine: DP-SGD(F) model update (ms per step)",
        normalize=False,
    )


def _one_batch(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's batch 2048 where measured, else the most common batch size."""
    if df.empty:
        return df
    batch = 2048 if (df["batch_size"] == 2048).any() else df["batch_size"].mode()[0]
    return df[df["batch_size"] == batch]


def _largest(df: pd.DataFrame) -> pd.DataFrame:
    """Per panel, the points at the largest table size that has LazyDP runs."""
    if df.empty:
        return df
    parts = []
    for _, part in df.groupby(["machine", "placement"]):
        sizes = part[part["algo"] == "lazydp"]["table_bytes"]
        size = sizes.max() if not sizes.empty else part["table_bytes"].max()
        parts.append(part[part["table_bytes"] == size])
    return pd.concat(parts) if parts else df


def _varied(df: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Per panel, the largest table size whose LazyDP runs span two or more values of
    `axis` (a sensitivity sweep is often run at a smaller size than the headline points);
    the largest size if none does."""
    if df.empty:
        return df
    parts = []
    for _, part in df.groupby(["machine", "placement"]):
        lazy = part[part["algo"] == "lazydp"]
        spread = lazy.groupby("table_bytes")[axis].nunique()
        sizes = spread[spread >= 2].index
        size = sizes.max() if len(sizes) else part["table_bytes"].max()
        parts.append(part[part["table_bytes"] == size])
    return pd.concat(parts)


def fig10(df: pd.DataFrame) -> FigureResult:
    part = _largest(_select(_mlperf(df), MAIN_ALGOS))
    if not part.empty:
        part = part[part["pooling"] == part["pooling"].min()]
    return _grouped_bars(
        "fig10",
        part,
        "batch_size",
        MAIN_ALGOS,
        _step,
        "step time (ms, log)",
        "Fig. 10: step time by batch size (LazyDP speedup over DP-SGD(F) on bars)",
        logy=True,
        annotate=lambda p, x, a: _speedup_label(p, x, a, "batch_size"),
    )


def fig11(df: pd.DataFrame) -> FigureResult:
    part = _largest(_select(_mlperf(df), MAIN_ALGOS))
    return _stacked(
        "fig11",
        part,
        "batch_size",
        MAIN_ALGOS,
        list(UPDATE_CHILDREN),
        "Fig. 11: model update breakdown by batch size (ms per step)",
        normalize=False,
    )


def fig12(df: pd.DataFrame) -> FigureResult:
    """Energy per step. A run too short for the NVML counter (under ~50 ms) has none, so
    each point takes the preferred run (`for_steps`) among those that measured energy."""
    part = _largest(_select(_mlperf(df), MAIN_ALGOS))
    if not part.empty:
        part = part[part["gpu_j_per_step"].notna() | (part["status"] != "ok")]

    def energy(r: pd.Series) -> float | None:
        return r["gpu_j_per_step"] if pd.notna(r["gpu_j_per_step"]) else None

    res = _grouped_bars(
        "fig12",
        part,
        "batch_size",
        MAIN_ALGOS,
        energy,
        "GPU energy per step, normalized to SGD",
        "Fig. 12: GPU energy per step (NVML), normalized to SGD",
        normalize=True,
        logy=True,
    )
    return res


def _sensitivity(name: str, df: pd.DataFrame, axis: str, title: str) -> FigureResult:
    if df.empty or df[axis].nunique() < 2:
        note = f"{name}: needs runs at two or more values of {axis}; found "
        note += (
            ", ".join(map(str, sorted(df[axis].unique(), key=_sort_key)))
            if not df.empty
            else "none"
        )
        return FigureResult(name, None, pd.DataFrame(), [note])
    return _grouped_bars(
        name,
        df,
        axis,
        MAIN_ALGOS,
        _step,
        "step time (ms, log)",
        title,
        logy=True,
        annotate=lambda p, x, a: _speedup_label(p, x, a, axis),
    )


def fig13a(df: pd.DataFrame) -> FigureResult:
    part = _one_batch(_select(_mlperf(df), MAIN_ALGOS))
    if not part.empty:
        part = part[part["pooling"] == part["pooling"].min()]
    return _sensitivity("fig13a", part, "table_bytes", "Fig. 13(a): table size")


def fig13b(df: pd.DataFrame) -> FigureResult:
    part = _varied(_select(_mlperf(df), MAIN_ALGOS), "pooling")
    return _sensitivity("fig13b", part, "pooling", "Fig. 13(b): pooling factor")


def fig13c(df: pd.DataFrame) -> FigureResult:
    part = _select(df, MAIN_ALGOS) if not df.empty else df
    if not part.empty:
        part = part[part["workload"].isin(["rmc1", "rmc2", "rmc3"])]
    return _sensitivity("fig13c", part, "workload", "Fig. 13(c): models RMC1-3")


def fig13d(df: pd.DataFrame) -> FigureResult:
    main = _mlperf(df)
    if main.empty:
        return _sensitivity("fig13d", main, "distribution", "Fig. 13(d): access locality")
    part = _select(df, MAIN_ALGOS, workload=main["workload"].iloc[0])
    part = _varied(part, "distribution")
    return _sensitivity("fig13d", part, "distribution", "Fig. 13(d): access locality")


def fig14(df: pd.DataFrame) -> FigureResult:
    part = _select(_mlperf(df), ["eana", "lazydp"])
    if not part.empty:  # only sizes where EANA ran
        part = _varied(
            part[part["table_bytes"].isin(part[part["algo"] == "eana"]["table_bytes"])],
            "batch_size",
        )
    return _grouped_bars(
        "fig14",
        part,
        "batch_size",
        ["eana", "lazydp"],
        _step,
        "step time (ms)",
        "Fig. 14: EANA (NOT DP-SGD-equivalent) vs LazyDP",
    )


def noise_roofline(bench: pd.DataFrame) -> FigureResult:
    if bench.empty:
        return FigureResult(
            "noise-roofline", None, bench, ["noise-roofline: no `bench noise` records"]
        )
    bench = bench.sort_values("created").drop_duplicates(
        ["engine", "placement", "table_bytes", "machine"], keep="last"
    )
    fig, ax = plt.subplots(figsize=(7, 4.2))
    labels = [
        f"{r.engine}\n{r.placement}, {format_bytes(r.table_bytes)}" for r in bench.itertuples()
    ]
    ax.bar(
        range(len(bench)), bench["achieved_gbps"], color=[PALETTE[i % 8] for i in range(len(bench))]
    )
    for i, r in enumerate(bench.itertuples()):
        ax.hlines(r.copy_gbps, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
        ax.annotate(
            f"{r.pct_of_copy:.0f}%", (i, r.achieved_gbps), ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(range(len(bench)), labels, fontsize=7)
    ax.set_ylabel("dense noisy update, GB/s (read + write)")
    ax.set_yscale("log")
    ax.set_title("Noise roofline: achieved vs measured copy bandwidth (dashed)")
    fig.text(0.01, 0.005, ", ".join(sorted(set(bench["machine"]))), fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return FigureResult("noise-roofline", fig, bench.drop(columns=["created"]), [])


FIGURES: dict[str, Callable[[pd.DataFrame], FigureResult]] = {
    "fig3": fig3,
    "fig5": fig5,
    "fig5-torch": fig5_torch,
    "fig10": fig10,
    "fig11": fig11,
    "fig12": fig12,
    "fig13a": fig13a,
    "fig13b": fig13b,
    "fig13c": fig13c,
    "fig13d": fig13d,
    "fig14": fig14,
}
ALL_FIGURES = [*FIGURES, "noise-roofline"]


def make_figure(name: str, records: list[dict]) -> FigureResult:
    """Figures compare algorithms under the default (fused) noise engines; `fig5-torch`
    draws only the `--noise-impl torch` runs."""
    if name == "noise-roofline":
        return noise_roofline(bench_frame(records))
    df = figure_frame(records)
    if not df.empty:
        engine = "torch" if name == "fig5-torch" else "fused"
        df = df[df["noise_impl"] == engine]
    return FIGURES[name](df)
