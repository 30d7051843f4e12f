"""The paper's experiment grids as sweep presets (figure -> axes). Flags given on the
command line override a preset's axes, e.g. smaller sizes on a small machine."""

from __future__ import annotations

from lazydp_bench.errors import BenchError

MAIN = ("sgd", "dpsgd-f", "lazydp")
BATCHES = (1024, 2048, 4096)

PRESETS: dict[str, dict[str, tuple]] = {
    "fig3": {
        "algo": ("sgd", "dpsgd-b", "dpsgd-r", "dpsgd-f"),
        "table_size": ("96MB", "960MB", "9.6GB", "96GB"),
    },
    "fig5": {
        "algo": ("sgd", "dpsgd-b", "dpsgd-r", "dpsgd-f"),
        "table_size": ("96MB", "960MB", "9.6GB", "96GB"),
    },
    "fig10": {"algo": MAIN, "batch_size": BATCHES, "table_size": ("96GB",)},
    "fig11": {"algo": MAIN, "batch_size": BATCHES, "table_size": ("96GB",)},
    "fig12": {"algo": MAIN, "batch_size": BATCHES, "table_size": ("96GB",)},
    "fig13a": {
        "algo": MAIN,
        "table_size": ("24GB", "48GB", "96GB", "192GB"),
        "batch_size": (2048,),
    },
    "fig13b": {"algo": MAIN, "pooling": (1, 10, 20, 30), "table_size": ("96GB",)},
    "fig13c": {"algo": MAIN, "workload": ("rmc1", "rmc2", "rmc3"), "table_size": ("full",)},
    "fig13d": {"algo": MAIN, "distribution": ("low", "medium", "high"), "table_size": ("96GB",)},
    "fig14": {"algo": ("eana", "lazydp"), "batch_size": BATCHES, "table_size": ("96GB",)},
}
PRESETS["paper"] = {"figures": tuple(k for k in PRESETS)}
# beyond the paper, on a two-GPU machine only (not in `paper`): fig. 13(a)'s 96 GB and
# 192 GB points with each table sharded row-wise over 2 GPUs, drawn beside the one-GPU
# series; 192 GB fits two H200s (2 x 139 GiB) but not one
PRESETS["fig13a-x2"] = {
    "algo": MAIN,
    "table_size": ("96GB", "192GB"),
    "batch_size": (2048,),
    "placement": ("gpu",),
    "gpus": (2,),
}
# beyond the paper: DP-FEST / DP-AdaFEST (Ghazi et al. 2023) beside LazyDP (figures
# sparse-step, sparse-grad); in hybrid their selection and row noise run on the GPU and
# only the selected rows' updates cross to the host table
PRESETS["sparse"] = {
    "algo": ("dpsgd-f", "lazydp", "dp-fest", "dp-adafest"),
    "table_size": ("96MB", "960MB", "9.6GB", "96GB"),
    "placement": ("gpu", "hybrid"),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def expand_preset(name: str) -> list[dict[str, tuple]]:
    """The axis grids of a preset (`paper` is every figure's grid)."""
    if name not in PRESETS:
        raise BenchError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)})")
    if name == "paper":
        return [dict(PRESETS[f]) for f in PRESETS["paper"]["figures"]]
    return [dict(PRESETS[name])]
