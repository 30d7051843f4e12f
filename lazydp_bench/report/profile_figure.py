"""The access-skew figure of an access profile (`lazydp-bench data profile`): per table, the
share of lookups taken by the top fraction of its rows, as the paper's locality figure
shows the Criteo histograms it sampled. A table whose curve rises early is hot: few rows
take most lookups, so a batch's distinct rows (LazyDP's input queue) are few.

Profile in, Figure out: drawing reads nothing but the profile, so a profile made on one
machine is drawn on another. A bare `Figure` (no pyplot) needs no backend and no close.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from lazydp_bench.data.profile import AccessProfile, TableProfile

LABELLED = 6  # the largest tables get their own legend entry; the rest are drawn grey


def access_figure(profile: AccessProfile) -> Figure:
    """Cumulative share of lookups vs the fraction of a table's rows (log x), one line per
    table; the `LABELLED` largest tables coloured and named, the others grey."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    tables = sorted(profile.tables, key=lambda t: t.rows, reverse=True)
    for k, table in enumerate(tables):
        xs, ys = _curve(table)
        if k < LABELLED:
            ax.step(xs, ys, where="post", lw=1.6, label=f"{table.name} ({table.rows:,} rows)")
        else:
            ax.step(xs, ys, where="post", lw=0.8, color="0.75")
    ax.set_xscale("log")
    ax.set_xlim(left=min(1.0 / t.rows for t in tables if t.rows) / 2, right=1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("fraction of the table's rows, most looked-up first (log scale)")
    ax.set_ylabel("share of the table's lookups")
    size = profile.table_size or "full size"
    ax.set_title(
        f"access skew · {profile.workload} {size} · {profile.lines:,} lines "
        f"({len(tables) - LABELLED} smaller tables in grey)",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _curve(table: TableProfile) -> tuple[list[float], list[float]]:
    """The knots as (fraction of rows, share of lookups), from the first row on."""
    pairs = [(r / table.rows, s) for r, s in zip(table.cdf_ranks, table.cdf_shares, strict=True)]
    pairs = [(x, y) for x, y in pairs if x > 0]
    return [x for x, _ in pairs], [y for _, y in pairs]
