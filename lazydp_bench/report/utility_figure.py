"""`plot --figure utility`: held-out AUC and log-loss against training steps, one line per
run with `--eval-data` (the record's `utility` section), coloured by algorithm. Repeated
runs (e.g. other seeds) are separate thin lines of one colour, so equivalent algorithms
(SGD, DP-SGD(F), LazyDP with noise off; DP-SGD(F) and LazyDP in distribution with noise
on) overlap and a scheme that is not DP-SGD-equivalent shows its difference."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from lazydp_bench.report.figures import FigureResult, algo_color, algo_label

NAME = "utility"
COLUMNS = ["run_id", "algo", "seed", "workload", "batch_size", "step", "auc", "logloss"]


def utility_frame(records: list[dict]) -> pd.DataFrame:
    """One row per evaluation of every ok run record with a `utility` section."""
    rows = []
    for rec in records:
        utility = rec.get("utility")
        if rec.get("kind", "run") != "run" or rec.get("status") != "ok" or not utility:
            continue
        config = rec.get("config") or {}
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
                    "step": step,
                    "auc": auc,
                    "logloss": logloss,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def utility_figure(records: list[dict]) -> FigureResult:
    data = utility_frame(records)
    if data.empty:
        return FigureResult(NAME, None, data, [f"{NAME}: no runs with --eval-data"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn: set[str] = set()
    for _, run in data.groupby("run_id", sort=False):
        algo = str(run["algo"].iloc[0])
        label = None if algo in drawn else algo_label(algo)
        drawn.add(algo)
        for ax, column in zip(axes, ("auc", "logloss"), strict=True):
            ax.plot(
                run["step"],
                run[column],
                marker="o",
                markersize=3,
                linewidth=1,
                color=algo_color(algo),
                label=label if column == "auc" else None,
            )
    axes[0].axhline(0.5, color="grey", linestyle="dotted", linewidth=1)
    axes[0].set_ylabel("held-out AUC")
    axes[1].set_ylabel("held-out log-loss")
    for ax in axes:
        ax.set_xlabel("training steps (warm-up included)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    runs = data["run_id"].nunique()
    fig.suptitle(f"Utility on held-out lines ({runs} run{'s' if runs != 1 else ''})")
    fig.tight_layout()
    return FigureResult(NAME, fig, data, [])
