"""`plot --figure utility`: held-out AUC and log-loss against training steps, one line per
run with `--eval-data` (the record's `utility` section), coloured by algorithm. Repeated
runs (e.g. other seeds) are separate thin lines of one colour, so equivalent algorithms
(SGD, DP-SGD(F), LazyDP with noise off; DP-SGD(F) and LazyDP in distribution with noise
on) overlap and a scheme that is not DP-SGD-equivalent shows its difference.

One row of panels per privacy level (the runs' noise multiplier, and the epsilon those
that are accounted spend; EANA's records carry no epsilon), so runs at different privacy
are never drawn as one series; non-private runs are drawn dashed in every row as the
reference. Each row names its learning rates."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lazydp_bench.report.figures import FigureResult, algo_color, algo_label

NAME = "utility"
COLUMNS = ["run_id", "algo", "seed", "workload", "batch_size", "lr", "level", "epsilon"]
COLUMNS += ["step", "auc", "logloss"]
REFERENCE = "non-private"


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
        for step, auc, logloss in zip(
            utility["steps"], utility["auc"], utility["logloss"], strict=True
        ):
            rows.append(
                {
                    "run_id": rec.get("run_id"),
                    "algo": config.get("algo"),
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
    fig, grid = plt.subplots(len(levels), 2, figsize=(11, 3.6 * len(levels)), squeeze=False)
    for axes, level in zip(grid, levels, strict=True):
        here = data[(data["level"] == level) | (data["level"] == REFERENCE)]
        _draw_row(axes, here, level)
    algos = list(dict.fromkeys(data["algo"].astype(str)))
    handles = [plt.Line2D([], [], color=algo_color(a), marker="o") for a in algos]
    fig.legend(handles, [algo_label(a) for a in algos], loc="lower center", ncol=len(algos))
    runs = data["run_id"].nunique()
    fig.suptitle(f"Utility on held-out lines ({runs} run{'s' if runs != 1 else ''})")
    fig.tight_layout(rect=(0, 0.1 / len(levels), 1, 1))
    return FigureResult(NAME, fig, data, [])


def _draw_row(axes, data: pd.DataFrame, level: str) -> None:
    """AUC and log-loss of the runs at one privacy level (non-private ones dashed)."""
    drawn: set[str] = set()
    for _, run in data.groupby("run_id", sort=False):
        algo = str(run["algo"].iloc[0])
        label = None if algo in drawn else algo_label(algo)
        drawn.add(algo)
        dashed = run["level"].iloc[0] == REFERENCE and level != REFERENCE
        for ax, column in zip(axes, ("auc", "logloss"), strict=True):
            ax.plot(
                run["step"],
                run[column],
                marker="o",
                markersize=3,
                linewidth=1,
                linestyle="--" if dashed else "-",
                color=algo_color(algo),
                label=label if column == "auc" else None,
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
