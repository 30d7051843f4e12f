"""The fidelity table: each paper figure's claim (the numbers quoted in
shared/reference/paper.md), the same quantity computed from stored records, and whether
they agree by a rule stated in the row.

A claim reads the records through `Measured`: one-GPU training runs of the paper's
configuration (MLPerf DLRM, uniform access, pooling 1, batch 2048, 96 GB unless the claim
varies it), repeats pooled as the figures pool them (`points.resolve`), DP-SGD(F) under
its strongest noise engine where several ran (roundtrip, streamed, fused, host). Rows
come per placement (the paper's tables were in host RAM: `hybrid` and `hybrid-host` are
its setting, `gpu` is beyond it); a claim with no records anywhere gets one "not measured"
row.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from lazydp_bench.report.figures import bench_frame, figure_frame
from lazydp_bench.report.points import ENERGY, STAGES, STEPS, Measure, Point, pool_stages, resolve
from lazydp_bench.units import format_bytes

GB96 = 96_000_000_000
GB192 = 192_000_000_000
BATCHES = (1024, 2048, 4096)
ENGINE_ORDER = ("roundtrip", "streamed", "fused", "host-philox", "host", "torch")
PLACEMENTS = ("hybrid", "hybrid-host", "gpu", "cpu")  # the paper's setting first
NOISE_STAGES = ("noise_sampling", "noisy_grad", "param_update", "noisy_update_fused")
PAPER = {
    "hybrid": "paper's setting: tables in host RAM",
    "hybrid-host": "paper's setting, noise drawn on the host",
}
AGREE, DIFFER, NO_DATA = "agree", "differ", "not measured"


@dataclass(frozen=True)
class Verdict:
    """One row of the table: our number and whether it agrees with the claim."""

    ours: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    """A paper figure's claim, the rule that decides agreement and how to compute ours
    from one placement's records (None: nothing measured there)."""

    figure: str
    text: str
    rule: str
    check: Callable[[Measured, str], Verdict | None]


@dataclass(frozen=True)
class Row:
    figure: str
    placement: str
    claim: str
    ours: str
    rule: str
    verdict: str


class Measured:
    """The records' training runs and `bench noise` results, read point by point."""

    def __init__(self, records: list[dict]) -> None:
        df = figure_frame(records)
        if not df.empty:
            df = df[(df["gpus"] == 1) & (df["noise_impl"] != "torch")]
            df = df[df["noise_mode"].isna() | (df["noise_mode"] == "gaussian")]
        self.runs = df
        self.bench = bench_frame(records)

    def placements(self) -> list[str]:
        found = set(self.runs["placement"].dropna()) if not self.runs.empty else set()
        if not self.bench.empty:
            found |= set(self.bench["placement"])
        return [p for p in PLACEMENTS if p in found] + sorted(found - set(PLACEMENTS))

    def point(self, algo: str, placement: str, measure: Measure = STEPS, **fields) -> Point:
        """The pooled point of `algo` at the paper's configuration with `fields` changed."""
        want = {
            "workload": "mlperf-dlrm",
            "table_bytes": GB96,
            "batch_size": 2048,
            "pooling": 1,
            "distribution": "uniform",
            **fields,
        }
        df = self.runs
        if df.empty:
            return Point("not run", "not run")
        keep = (df["algo"] == algo) & (df["placement"] == placement)
        for name, value in want.items():
            keep &= df[name] == value
        rows = df[keep]
        engines = [e for e in ENGINE_ORDER if (rows["noise_impl"] == e).any()]
        if engines:  # the strongest engine's runs (and stubs that name none)
            rows = rows[(rows["noise_impl"] == engines[0]) | rows["noise_impl"].isna()]
        return resolve(rows, measure)

    def step(self, algo: str, placement: str, **fields) -> float | None:
        p = self.point(algo, placement, **fields)
        return float(p.stats.median_ms) if p.status == "ok" else None

    def ratio(self, top: str, bottom: str, placement: str, **fields) -> float | None:
        a, b = self.step(top, placement, **fields), self.step(bottom, placement, **fields)
        return a / b if a is not None and b else None

    def configs(self, placement: str) -> pd.DataFrame:
        """The distinct successful configurations measured in `placement`."""
        df = self.runs
        if df.empty:
            return df
        cols = ["workload", "table_bytes", "batch_size", "pooling", "distribution"]
        ok = df[(df["placement"] == placement) & (df["status"] == "ok")]
        return ok[cols].dropna().drop_duplicates()


def _x(v: float) -> str:
    return f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def _by_batch(m: Measured, placement: str, fn: Callable[[int], float | None]) -> dict:
    return {b: v for b in BATCHES if (v := fn(b)) is not None}


def _listed(values: dict, fmt: Callable[[float], str]) -> str:
    return ", ".join(f"{fmt(v)} (batch {b})" for b, v in values.items())


def within(value: float, low: float, high: float, slack: float = 0.25) -> bool:
    """`value` inside [low, high] widened by `slack` of each end (low / (1 + slack) ..
    high * (1 + slack))."""
    return low / (1 + slack) <= value <= high * (1 + slack)


def _verdict(ok: bool) -> str:
    return AGREE if ok else DIFFER


# ---- the claims ------------------------------------------------------------------------


def fig3_growth(m: Measured, placement: str) -> Verdict | None:
    sizes = sorted(
        {
            int(c.table_bytes)
            for c in m.configs(placement).itertuples()
            if c.workload == "mlperf-dlrm" and c.batch_size == 2048 and c.pooling == 1
        }
    )
    have = [s for s in sizes if m.ratio("dpsgd-f", "sgd", placement, table_bytes=s)]
    if len(have) < 2:
        return None
    lo, hi = have[0], have[-1]
    r_lo = m.ratio("dpsgd-f", "sgd", placement, table_bytes=lo)
    r_hi = m.ratio("dpsgd-f", "sgd", placement, table_bytes=hi)
    sgd_growth = m.ratio("sgd", "sgd", placement, table_bytes=hi) and (
        m.step("sgd", placement, table_bytes=hi) / m.step("sgd", placement, table_bytes=lo)
    )
    ours = (
        f"DP-SGD(F) ÷ SGD {r_lo:.2f} at {format_bytes(lo)} -> {r_hi:.1f} at {format_bytes(hi)}; "
        f"SGD {format_bytes(hi)} ÷ {format_bytes(lo)} {sgd_growth:.2f}"
    )
    return Verdict(ours, _verdict(r_hi > r_lo and sgd_growth <= 1.25))


def fig5_noise_share(m: Measured, placement: str) -> Verdict | None:
    for size in sorted({int(s) for s in m.configs(placement)["table_bytes"]}, reverse=True):
        p = m.point("dpsgd-f", placement, STAGES, table_bytes=size)
        if p.status != "ok":
            continue
        stages = pool_stages(p.rows)
        update = stages.get("model_update")
        if not update:
            continue
        share = sum(stages.get(s, 0.0) for s in NOISE_STAGES) / update
        ours = f"{100 * share:.0f} % of DP-SGD(F)'s model update at {format_bytes(size)}"
        return Verdict(ours, _verdict(share > 0.5))
    return None


def fig6_roofline(m: Measured, placement: str) -> Verdict | None:
    b = m.bench
    if b.empty or placement not in set(b["placement"]):
        return None
    part = b[b["placement"] == placement].dropna(subset=["pct_of_bound"])
    if part.empty:
        return None
    best = part.sort_values("pct_of_bound").iloc[-1]
    engine = str(best["engine"]).split(" (")[0]
    ours = (
        f"{best['pct_of_bound']:.0f} % of its bound ({engine}, {format_bytes(best['table_bytes'])})"
    )
    return Verdict(ours, _verdict(best["pct_of_bound"] >= 81 / 1.25))


def fig10_speedup(m: Measured, placement: str) -> Verdict | None:
    speedups = _by_batch(
        m, placement, lambda b: m.ratio("dpsgd-f", "lazydp", placement, batch_size=b)
    )
    if not speedups:
        return None
    mean = statistics.mean(speedups.values())
    ours = f"{_listed(speedups, _x)}; mean {_x(mean)}"
    return Verdict(ours, _verdict(all(within(v, 85, 155) for v in speedups.values())))


def fig10_parity(m: Measured, placement: str) -> Verdict | None:
    ratios = _by_batch(m, placement, lambda b: m.ratio("lazydp", "sgd", placement, batch_size=b))
    if not ratios:
        return None
    ours = "LazyDP ÷ SGD " + _listed(ratios, lambda v: f"{v:.2f}")
    return Verdict(ours, _verdict(all(v <= 1.25 for v in ratios.values())))


def _update_ms(m: Measured, algo: str, placement: str, batch: int) -> float | None:
    p = m.point(algo, placement, STAGES, batch_size=batch)
    return pool_stages(p.rows).get("model_update") if p.status == "ok" else None


def fig11_update(m: Measured, placement: str) -> Verdict | None:
    def ratio(b: int) -> float | None:
        f, lz = _update_ms(m, "dpsgd-f", placement, b), _update_ms(m, "lazydp", placement, b)
        return f / lz if f and lz else None

    ratios = _by_batch(m, placement, ratio)
    if not ratios:
        return None
    ours = "DP-SGD(F)'s model update ÷ LazyDP's " + _listed(ratios, _x)
    return Verdict(ours, _verdict(all(v > 1 for v in ratios.values())))


def _energy(m: Measured, algo: str, placement: str, batch: int) -> float | None:
    p = m.point(algo, placement, ENERGY, batch_size=batch)
    if p.status != "ok":
        return None
    parts = [p.rows[c].dropna() for c in ("gpu_j_per_step", "cpu_j_per_step")]
    return sum(statistics.median(v) for v in parts if len(v)) or None


def fig12_energy(m: Measured, placement: str) -> Verdict | None:
    def ratio(b: int) -> float | None:
        f, lz = _energy(m, "dpsgd-f", placement, b), _energy(m, "lazydp", placement, b)
        return f / lz if f and lz else None

    ratios = _by_batch(m, placement, ratio)
    if not ratios:
        return None
    ours = "DP-SGD(F) J/step ÷ LazyDP's " + _listed(ratios, _x)
    return Verdict(ours, _verdict(all(v > 1 for v in ratios.values())))


def fig13a_oom(m: Measured, placement: str) -> Verdict | None:
    p = m.point("dpsgd-f", placement, table_bytes=GB192)
    if p.status == "not run":
        return None
    if p.status == "ok":
        return Verdict(f"ran: {p.stats.median_ms:.4g} ms per step", DIFFER)
    return Verdict(f"did not run: {p.reason}", AGREE)


def fig13a_growth(m: Measured, placement: str) -> Verdict | None:
    sizes = (24_000_000_000, 48_000_000_000, GB96, GB192)
    speedups = {
        s: v for s in sizes if (v := m.ratio("dpsgd-f", "lazydp", placement, table_bytes=s))
    }
    if len(speedups) < 2:
        return None
    ours = ", ".join(f"{_x(v)} at {format_bytes(s)}" for s, v in speedups.items())
    values = list(speedups.values())
    return Verdict(ours, _verdict(all(a <= b for a, b in itertools.pairwise(values))))


def _sensitivity(m: Measured, placement: str) -> dict[str, float]:
    """DP-SGD(F) ÷ LazyDP at each fig. 13(b)-(d) configuration measured: pooling above 1,
    a non-uniform access pattern, or an RMC model."""
    out = {}
    for c in m.configs(placement).itertuples():
        varied = c.pooling != 1 or c.distribution != "uniform" or c.workload.startswith("rmc")
        if not varied:
            continue
        fields = {
            "workload": c.workload,
            "table_bytes": c.table_bytes,
            "batch_size": c.batch_size,
            "pooling": c.pooling,
            "distribution": c.distribution,
        }
        v = m.ratio("dpsgd-f", "lazydp", placement, **fields)
        if v is not None:
            size = format_bytes(c.table_bytes)
            out[f"{c.workload}, pooling {c.pooling}, {c.distribution}, {size}"] = v
    return out


def fig13_hardest(m: Measured, placement: str) -> Verdict | None:
    speedups = _sensitivity(m, placement)
    if not speedups:
        return None
    name, low = min(speedups.items(), key=lambda kv: kv[1])
    ours = f"lowest {_x(low)} ({name}; {len(speedups)} settings)"
    return Verdict(ours, _verdict(low >= 16.7 / 1.25))


def fig14_eana(m: Measured, placement: str) -> Verdict | None:
    costs = _by_batch(m, placement, lambda b: m.ratio("lazydp", "eana", placement, batch_size=b))
    if not costs:
        return None
    ours = "LazyDP over EANA " + _listed(costs, lambda v: f"{100 * (v - 1):+.0f} %")
    return Verdict(ours, _verdict(all(within(v - 1, 0.27, 0.37) for v in costs.values())))


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "3",
        "DP-SGD's step grows linearly with table size (96 MB..96 GB) while SGD's stays flat",
        "DP-SGD(F) ÷ SGD larger at the largest table than at the smallest, SGD within 25 %",
        fig3_growth,
    ),
    Claim(
        "5",
        "the dense noise passes (sampling, noisy gradient, update) dominate DP-SGD's model update",
        "over 50 % of DP-SGD(F)'s model update at the largest table with a breakdown",
        fig5_noise_share,
    ),
    Claim(
        "6",
        "noise sampling ~81 % of AVX peak, the update ~85 % of DRAM bandwidth",
        "best engine at >= 81 % / 1.25 = 65 % of its bound (`bench noise` pct_of_bound)",
        fig6_roofline,
    ),
    Claim(
        "10",
        "LazyDP 85-155x faster than DP-SGD(F) at 96 GB, batch 1024-4096 (119x on average)",
        "every batch's speedup in 85/1.25..155x1.25 (68-194x)",
        fig10_speedup,
    ),
    Claim(
        "10",
        'LazyDP "on par with" SGD',
        "LazyDP ÷ SGD <= 1.25 at every batch",
        fig10_parity,
    ),
    Claim(
        "11",
        "LazyDP's model update (its overhead included) is far below DP-SGD(F)'s (no number quoted)",
        "same ordering at every batch",
        fig11_update,
    ),
    Claim(
        "12",
        "LazyDP uses less energy per step than DP-SGD(F) (normalized; no number quoted)",
        "same ordering at every batch (GPU + host J per step)",
        fig12_energy,
    ),
    Claim(
        "13a",
        "DP-SGD(F) ran out of memory at 192 GB",
        "DP-SGD(F) at 192 GB recorded as OOM or skipped",
        fig13a_oom,
    ),
    Claim(
        "13a",
        "LazyDP's speedup over DP-SGD(F) grows with the table (24..192 GB)",
        "same ordering: non-decreasing with size",
        fig13a_growth,
    ),
    Claim(
        "13b-d",
        "the hardest sensitivity setting is still 16.7x",
        "lowest speedup over pooling, locality and RMC settings >= 16.7 / 1.25 = 13.4x",
        fig13_hardest,
    ),
    Claim(
        "14",
        "LazyDP 27-37 % slower than EANA (batch 1024-4096)",
        "every batch in 27/1.25..37x1.25 % (22-46 %)",
        fig14_eana,
    ),
)


def fidelity_rows(records: list[dict], claims: Iterable[Claim] = CLAIMS) -> list[Row]:
    """One row per claim and placement with records for it; one "not measured" row for a
    claim none has."""
    measured = Measured(records)
    rows = []
    for claim in claims:
        found = False
        for placement in measured.placements():
            v = claim.check(measured, placement)
            if v is None:
                continue
            found = True
            where = f"{placement} ({PAPER[placement]})" if placement in PAPER else placement
            rows.append(Row(claim.figure, where, claim.text, v.ours, claim.rule, v.verdict))
        if not found:
            rows.append(Row(claim.figure, "-", claim.text, "-", claim.rule, NO_DATA))
    return rows


def markdown(rows: list[Row]) -> str:
    """The rows as a markdown table (pipes in cells escaped)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    head = "| fig | placement | paper's claim | ours | rule | verdict |\n|---|---|---|---|---|---|"
    body = [
        "| "
        + " | ".join(cell(x) for x in (r.figure, r.placement, r.claim, r.ours, r.rule, r.verdict))
        + " |"
        for r in rows
    ]
    return "\n".join([head, *body]) + "\n"
