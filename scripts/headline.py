"""Print the README's headline table (markdown) from stored records.

Usage: python3 scripts/headline.py results/2026-11-23-h100
Newest record per point; breakdown runs (the sweeps' default) are used for all columns.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lazydp_bench.plots import figure_frame
from lazydp_bench.results import load_records
from lazydp_bench.units import format_bytes


def main(paths: list[str]) -> None:
    df = figure_frame(load_records([Path(p) for p in paths]))
    df = df[(df["workload"] == "mlperf-dlrm") & df["breakdown"] & (df["batch_size"] == 2048)]
    print(
        "| placement | table | SGD ms | DP-SGD(F) ms | LazyDP ms | LazyDP-BK ms | "
        "LazyDP vs DP-SGD(F) | LazyDP / SGD | J/step SGD / DP-SGD(F) / LazyDP |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (placement, size), part in sorted(df.groupby(["placement", "table_bytes"])):
        get = {a: part[part["algo"] == a].iloc[0] for a in set(part["algo"])}
        if not {"sgd", "dpsgd-f", "lazydp"} <= set(get):
            continue
        s, f, lz = (get[a]["step_ms"] for a in ("sgd", "dpsgd-f", "lazydp"))
        bk = get.get("lazydp[bookkeeping]")
        bk_text = f"{bk['step_ms']:.1f}" if bk is not None else "-"
        energy = " / ".join(
            f"{get[a]['gpu_j_per_step']:.2f}"
            if get[a]["gpu_j_per_step"] == get[a]["gpu_j_per_step"]
            and get[a]["gpu_j_per_step"] is not None
            else "n/a"
            for a in ("sgd", "dpsgd-f", "lazydp")
        )
        print(
            f"| {placement} | {format_bytes(size)} | {s:.1f} | {f:.1f} | {lz:.1f} | {bk_text} | "
            f"{f / lz:.1f}x | {lz / s:.2f} | {energy} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
