"""`plot --figure utility`: held-out AUC and log-loss against training steps, one line per
run with `--eval-data` (the record's `utility` section), coloured by algorithm. Repeated
runs (e.g. other seeds) are separate thin lines of one colour, so equivalent algorithms
(SGD, DP-SGD(F), LazyDP with noise off; DP-SGD(F) and LazyDP in distribution with noise
on) overlap and a scheme that is not DP-SGD-equivalent shows its difference.

One row of panels per privacy level (the runs' noise multiplier, and the epsilon those
that are accounted spend; EANA's records carry no epsilon), so runs at different privacy
are never drawn as one series; non-private runs are drawn dashed in every row as the
reference. Each row names its learning rates.

A run with a selection threshold (DP-AdaFEST's `config.sparsity.tau`) belongs to the series
`algo[tau X]`: several thresholds of one algorithm are separate series, drawn in shades of
the algorithm's colour (lightest: the highest tau, which selects the fewest rows) with a
marker each."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.colors import to_hex, to_rgb

from lazydp_bench.report.figures import ALGO_ORDER, FigureResult, algo_color, algo_label

NAME = "utility"
COLUMNS = ["run_id", "algo", "series", "tau", "seed", "workload", "batch_size", "lr", "level"]
COLUMNS += ["epsilon", "step", "auc", "logloss"]
REFERENCE = "non-private"
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LEGEND_CHARS = 120  # label characters one legend row of the 11-inch figure holds


def utility_frame(records: list[dict]) -> pd.DataFrame:
    """One row per evaluation of every ok run record with a `utility` section."""
    rows = []
    for rec in records:
        utility = rec.get("utility")
        if rec.get("kind", "run") != "run" or rec.get("status") != "ok" or not utility:
            continue
        config = rec.get("config") or {}
        privacy = rec.get("privacy") or {}
        level = _level(privacy)
        tau = (config.get("sparsity") or {}).get("tau")
        algo = config.get("algo")
        series = str(algo) if tau is None else f"{algo}[tau {float(tau):g}]"
        for step, auc, logloss in zip(
            utility["steps"], utility["auc"], utility["logloss"], strict=True
        ):
            rows.append(
                {
                    "run_id": rec.get("run_id"),
                    "algo": algo,
                    "series": series,
                    "tau": tau,
                    "seed": config.get("seed"),
                    "workload": config.get("workload"),
                    "batch_size": config.get("batch_size"),
                    "lr": config.get("lr"),
                    "level": level,
                    "epsilon": privacy.get("epsilon"),
                    "step": step,
                    "auc": auc,
                    "logloss": logloss,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _level(privacy: dict) -> str:
    """The privacy level a run belongs to: its noise multiplier, or non-private."""
    sigma = privacy.get("noise_multiplier")
    if not privacy.get("private") or sigma is None:
        return REFERENCE
    return f"sigma {sigma:.4g}"


def utility_figure(records: list[dict]) -> FigureResult:
    data = utility_frame(records)
    if data.empty:
        return FigureResult(NAME, None, data, [f"{NAME}: no runs with --eval-data"])
    levels = sorted({lv for lv in data["level"] if lv != REFERENCE}) or [REFERENCE]
    styles = series_styles(data)
    fig, grid = plt.subplots(len(levels), 2, figsize=(11, 3.6 * len(levels)), squeeze=False)
    for axes, level in zip(grid, levels, strict=True):
        here = data[(data["level"] == level) | (data["level"] == REFERENCE)]
        _draw_row(axes, here, level, styles)
    handles = [plt.Line2D([], [], color=c, marker=m) for c, m in styles.values()]
    labels = [algo_label(s) for s in styles]
    ncol = max(1, min(len(labels), LEGEND_CHARS // max(len(x) for x in labels)))
    fig.legend(handles, labels, loc="lower center", ncol=ncol)
    runs = data["run_id"].nunique()
    fig.suptitle(f"Utility on held-out lines ({runs} run{'s' if runs != 1 else ''})")
    legend_rows = -(-len(styles) // ncol)
    fig.tight_layout(rect=(0, (0.06 + 0.04 * legend_rows) / len(levels), 1, 1))
    return FigureResult(NAME, fig, data, [])


def series_styles(data: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """(colour, marker) of each series, in the registry's algorithm order, an algorithm's
    thresholds from the highest tau down: one series of an algorithm keeps its colour;
    several get shades of it, from light (highest tau) to dark, and a marker each."""
    known = data[["algo", "series", "tau"]].drop_duplicates("series")
    rank = {a: k for k, a in enumerate(ALGO_ORDER)}
    known = known.assign(
        order=known["algo"].map(lambda a: rank.get(a, len(rank))),
        minus_tau=-known["tau"].astype(float).fillna(0.0),
    ).sort_values(["order", "algo", "minus_tau"], kind="stable")
    styles: dict[str, tuple[str, str]] = {}
    for algo, group in known.groupby("algo", sort=False):
        n = len(group)
        for k, series in enumerate(group["series"]):
            shift = 0.0 if n == 1 else -0.55 + 1.0 * k / (n - 1)
            styles[series] = (_shade(algo_color(str(algo)), shift), MARKERS[k % len(MARKERS)])
    return styles


def _shade(color: str, shift: float) -> str:
    """`color` blended toward white (shift < 0) or black (shift > 0) by |shift|."""
    rgb = to_rgb(color)
    target = 1.0 if shift < 0 else 0.0
    return to_hex(tuple(c + (target - c) * abs(shift) for c in rgb))


def _draw_row(axes, data: pd.DataFrame, level: str, styles: dict[str, tuple[str, str]]) -> None:
    """AUC and log-loss of the runs at one privacy level (non-private ones dashed)."""
    for _, run in data.groupby("run_id", sort=False):
        color, marker = styles[str(run["series"].iloc[0])]
        dashed = run["level"].iloc[0] == REFERENCE and level != REFERENCE
        for ax, column in zip(axes, ("auc", "logloss"), strict=True):
            ax.plot(
                run["step"],
                run[column],
                marker=marker,
                markersize=3,
                linewidth=1,
                linestyle="--" if dashed else "-",
                color=color,
            )
    axes[0].axhline(0.5, color="grey", linestyle="dotted", linewidth=1)
    axes[0].set_ylabel("held-out AUC")
    axes[1].set_ylabel("held-out log-loss")
    rates = ", ".join(f"{x:g}" for x in sorted({float(v) for v in data["lr"].dropna()}))
    spent = sorted({float(e) for e in data[data["level"] == level]["epsilon"].dropna()})
    title = level + (f", epsilon {', '.join(f'{e:.3g}' for e in spent)}" if spent else "")
    for ax in axes:
        ax.set_xlabel("training steps (warm-up included)")
        ax.set_title(f"{title} · lr {rates or '?'}", fontsize=9)
        ax.grid(alpha=0.3)
