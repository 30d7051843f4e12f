"""The fidelity table: each paper figure's claim (the numbers quoted in
shared/reference/paper.md), the same quantity computed from stored records, and whether
they agree by a rule stated in the row.

A claim reads the records through `Measured`: one-GPU training runs of the paper's
configuration (MLPerf DLRM, uniform access, pooling 1, batch 2048, 96 GB unless the claim
varies it), repeats pooled as the figures pool them (`points.resolve`), DP-SGD(F) under
its strongest noise engine where several ran (roundtrip, streamed, fused, host). Every
point one claim compares is read at one commit (the newest at which all of them ran) and
in one timing mode (graph replay, else end to end, else stage timing), named with the
machine in the row's number; where no mode holds a whole comparison (LazyDP's host
bookkeeping in `hybrid-host` cannot be captured in a CUDA graph, its baseline's step can),
each point is read in its own best of graph replay and end to end (never stage timing)
and the number names both. Rows come per machine and placement (the paper's tables were
in host RAM: `hybrid` and `hybrid-host` are its setting, `gpu` is beyond it); a claim
with no records anywhere gets one "not measured" row; a number that measures something
else than the claim (an engine past its modelled bound) is "not comparable".
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from lazydp_bench.data.distributions import LOCALITY_ALPHA
from lazydp_bench.report.figures import bench_frame, figure_frame
from lazydp_bench.report.points import (
    ENERGY,
    MODE_ORDER,
    STAGES,
    STEPS,
    Measure,
    Point,
    mode_of,
    pool_stages,
    resolve,
)
from lazydp_bench.units import format_bytes
from lazydp_bench.workloads import load_workload

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
NOT_COMPARABLE = "not comparable"  # our number measures something else than the claim
ABOVE_BOUND = 105.0  # % of a bound past which the bound, not the engine, is wrong


@dataclass(frozen=True)
class Verdict:
    """One row of the table: our number and whether it agrees with the claim."""

    ours: str
    verdict: str


Where = tuple[str, str]  # (machine, placement): one row of the table per pair


@dataclass(frozen=True)
class Claim:
    """A paper figure's claim, the rule that decides agreement and how to compute ours
    from one machine and placement's records (None: nothing measured there)."""

    figure: str
    text: str
    rule: str
    check: Callable[[Measured, Where], Verdict | None]


@dataclass(frozen=True)
class Row:
    figure: str
    placement: str
    claim: str
    ours: str
    rule: str
    verdict: str
    machine: str = "-"


PAPER_POINT = {
    "workload": "mlperf-dlrm",
    "table_bytes": GB96,
    "batch_size": 2048,
    "pooling": 1,
    "distribution": "uniform",
}


@dataclass(frozen=True)
class Ask:
    """One point a claim reads: `algo` at the paper's configuration with `fields` changed
    (a tuple value: any of its values), read by `measure`."""

    algo: str
    fields: tuple[tuple[str, object], ...] = ()
    measure: Measure = STEPS


def ask(algo: str, measure: Measure = STEPS, **fields: object) -> Ask:
    return Ask(algo, tuple(fields.items()), measure)


@dataclass(frozen=True)
class Together:
    """A claim's points, all on one commit and in one timing mode: for each group of
    points that ran there in full, its pooled points in the order asked. Where no mode
    holds a whole group and some point cannot be graph-captured, each point is read in
    its own best of graph replay and end to end, and `mode` names both; one matching run
    added later returns the claim to a single mode, with the groups that mode holds."""

    points: dict
    machine: str
    commit: str | None = None
    mode: str | None = None

    def label(self) -> str:
        """Where the numbers come from: `NVIDIA H200, commit c1fad1d, graph replay`."""
        return f"{self.machine}, commit {self.commit}, {self.mode}"


class Measured:
    """The records' training runs and `bench noise` results, read point by point."""

    def __init__(self, records: list[dict]) -> None:
        df = figure_frame(records)
        if not df.empty:
            df = df[df["gpus"] == 1]
            df = df[df["noise_mode"].isna() | (df["noise_mode"] == "gaussian")]
        if not df.empty:
            df = df.assign(mode=df.apply(mode_of, axis=1))
        self.runs = df
        self.bench = bench_frame(records)

    def panels(self) -> list[Where]:
        """Each (machine, placement) with runs or bench results, the paper's setting first."""
        found: set[Where] = set()
        if not self.runs.empty:
            known = self.runs[self.runs["placement"].notna()]
            found |= set(zip(known["machine"], known["placement"], strict=True))
        if not self.bench.empty:
            found |= set(zip(self.bench["machine"], self.bench["placement"], strict=True))
        rank = {p: i for i, p in enumerate(PLACEMENTS)}
        return sorted(found, key=lambda w: (rank.get(w[1], len(rank)), w[1], w[0]))

    def rows(self, where: Where, a: Ask) -> pd.DataFrame:
        """Every record of `a`'s point in `where`, any status, commit and mode; the torch
        noise engine's runs (fig. 5's split passes) only where `a` asks for them."""
        df = self.runs
        if df.empty:
            return df
        keep = (df["machine"] == where[0]) & (df["placement"] == where[1]) & (df["algo"] == a.algo)
        if "noise_impl" not in dict(a.fields):
            keep &= df["noise_impl"] != "torch"
        for name, value in {**PAPER_POINT, **dict(a.fields)}.items():
            keep &= df[name].isin(value) if isinstance(value, tuple) else df[name] == value
        return df[keep]

    def point(self, where: Where, a: Ask) -> Point:
        """`a`'s pooled point on its newest commit, or its newest failure (one point: one
        commit by construction)."""
        rows = self.rows(where, a)
        return Point("not run", "not run") if rows.empty else resolve(_strongest(rows), a.measure)

    def together(self, where: Where, groups: dict[object, tuple[Ask, ...]]) -> Together:
        """The groups' points at one commit and one timing mode: the (commit, mode) at
        which the most groups ran in full, the newest such commit, then the preferred
        mode; a group not complete there is left out."""
        if self.runs.empty:
            return Together({}, where[0])
        usable = {
            (k, i): self._usable(where, a) for k, asks in groups.items() for i, a in enumerate(asks)
        }
        pairs = {
            (c, m)
            for rows in usable.values()
            for c, m in zip(rows["commit"], rows["mode"], strict=True)
        }
        if not pairs:
            return Together({}, where[0])

        def complete(pair: tuple[str, str | None]) -> list:
            return [
                k
                for k, asks in groups.items()
                if all(_at(usable[(k, i)], pair).shape[0] for i in range(len(asks)))
            ]

        # newest among the claim's own runs: another engine's or claim's later run on an
        # older commit must not make that commit the newest
        claim_rows = pd.concat(usable.values())
        created = claim_rows.groupby("commit")["created"].max()
        best = max(pairs, key=lambda p: (len(complete(p)), created[p[0]], -MODE_ORDER.index(p[1])))
        if not complete(best) and _ungraphable(usable.values()):
            mixed = max(
                {(c, None) for c, _ in pairs}, key=lambda p: (len(complete(p)), created[p[0]])
            )
            best = mixed if complete(mixed) else best
        points = {
            k: tuple(
                resolve(_strongest(_at(usable[(k, i)], best)), a.measure)
                for i, a in enumerate(groups[k])
            )
            for k in complete(best)
        }
        modes = {p.rows["mode"].iloc[0] for group in points.values() for p in group}
        mode = " + ".join(m for m in MODE_ORDER if m in modes) if best[1] is None else best[1]
        return Together(points, where[0], best[0], mode)

    def _usable(self, where: Where, a: Ask) -> pd.DataFrame:
        """`a`'s successful runs that can give its measure, any commit and mode."""
        rows = self.rows(where, a)
        ok = rows[rows["status"] == "ok"]
        return ok[a.measure.usable(ok)] if not ok.empty else ok

    def configs(self, where: Where) -> pd.DataFrame:
        """The distinct successful configurations measured in `where`."""
        df = self.runs
        cols = ["workload", "table_bytes", "batch_size", "pooling", "distribution"]
        if df.empty:
            return pd.DataFrame(columns=cols)
        here = (df["machine"] == where[0]) & (df["placement"] == where[1])
        return df[here & (df["status"] == "ok")][cols].dropna().drop_duplicates()


# modes a comparison may mix where one point cannot be graph-captured; stage timing's
# per-stage syncs add to the step, so it is never mixed with the others
MIXABLE = ("graph replay", "end-to-end")


def _ungraphable(usable: Iterable[pd.DataFrame]) -> bool:
    """Whether some point of the claim has no graph replay because no CUDA graph can
    hold its step (its runs name a blocker other than `--cuda-graph off`, as LazyDP's
    host bookkeeping in hybrid-host): only then may modes mix, never for a run merely
    not yet made in the matching mode."""
    return any(
        (rows["mode"] == "end-to-end").any()
        and rows.loc[rows["mode"] == "end-to-end", "ungraphable"].all()
        and not (rows["mode"] == "graph replay").any()
        for rows in usable
    )


def _at(rows: pd.DataFrame, pair: tuple[str, str | None]) -> pd.DataFrame:
    """The rows at a (commit, mode); mode None: at the commit, in any `MIXABLE` mode
    (`resolve` then keeps the one the claim's measure ranks first)."""
    here = rows[rows["commit"] == pair[0]]
    return here[here["mode"].isin(MIXABLE if pair[1] is None else (pair[1],))]


def _strongest(rows: pd.DataFrame) -> pd.DataFrame:
    """The runs of the strongest noise engine among them (and those that name none)."""
    engines = [e for e in ENGINE_ORDER if (rows["noise_impl"] == e).any()]
    if not engines:
        return rows
    return rows[(rows["noise_impl"] == engines[0]) | rows["noise_impl"].isna()]


def _x(v: float) -> str:
    return f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def step_of(p: Point) -> float | None:
    """A point's pooled median step in ms; None for a point without a successful run."""
    return float(p.stats.median_ms) if p.status == "ok" else None


def _update(p: Point) -> float | None:
    return pool_stages(p.rows).get("model_update") if p.status == "ok" else None


def joules_of(p: Point) -> float | None:
    """A point's energy per step, GPU plus host (each the median of its runs' readings);
    None where neither was read."""
    if p.status != "ok":
        return None
    parts = [p.rows[c].dropna() for c in ("gpu_j_per_step", "cpu_j_per_step")]
    return sum(statistics.median(v) for v in parts if len(v)) or None


def _ratios(t: Together, value: Callable[[Point], float | None]) -> dict:
    """First point's value over the second's, per group where both have one."""
    out = {}
    for key, (top, bottom) in t.points.items():
        a, b = value(top), value(bottom)
        if a is not None and b:
            out[key] = a / b
    return out


def _by_batch(m: Measured, where: Where, top: str, bottom: str, measure: Measure = STEPS):
    """`top` and `bottom` at each batch size, at one commit and timing mode."""
    groups = {
        b: (ask(top, measure, batch_size=b), ask(bottom, measure, batch_size=b)) for b in BATCHES
    }
    return m.together(where, groups)


def _listed(values: dict, fmt: Callable[[float], str]) -> str:
    return ", ".join(f"{fmt(v)} (batch {b})" for b, v in values.items())


def _ours(text: str, t: Together) -> str:
    return f"{text} ({t.label()})"


def within(value: float, low: float, high: float, slack: float = 0.25) -> bool:
    """`value` inside [low, high] widened by `slack` of each end (low / (1 + slack) ..
    high * (1 + slack))."""
    return low / (1 + slack) <= value <= high * (1 + slack)


def _verdict(ok: bool) -> str:
    return AGREE if ok else DIFFER


# ---- the claims ------------------------------------------------------------------------


def fig3_growth(m: Measured, where: Where) -> Verdict | None:
    sizes = sorted(
        {
            int(c.table_bytes)
            for c in m.configs(where).itertuples()
            if c.workload == "mlperf-dlrm" and c.batch_size == 2048 and c.pooling == 1
        }
    )
    groups = {s: (ask("dpsgd-f", table_bytes=s), ask("sgd", table_bytes=s)) for s in sizes}
    t = m.together(where, groups)
    ratios = _ratios(t, step_of)
    if len(ratios) < 2:
        return None
    lo, hi = min(ratios), max(ratios)
    sgd_growth = step_of(t.points[hi][1]) / step_of(t.points[lo][1])
    ours = (
        f"DP-SGD(F) ÷ SGD {ratios[lo]:.2f} at {format_bytes(lo)} -> {ratios[hi]:.1f} at "
        f"{format_bytes(hi)}; SGD {format_bytes(hi)} ÷ {format_bytes(lo)} {sgd_growth:.2f}"
    )
    return Verdict(_ours(ours, t), _verdict(ratios[hi] > ratios[lo] and sgd_growth <= 1.25))


def fig5_noise_share(m: Measured, where: Where) -> Verdict | None:
    for size in sorted({int(s) for s in m.configs(where)["table_bytes"]}, reverse=True):
        t = m.together(where, {size: (ask("dpsgd-f", STAGES, table_bytes=size),)})
        if not t.points:
            continue
        stages = pool_stages(t.points[size][0].rows)
        update = stages.get("model_update")
        if not update:
            continue
        share = sum(stages.get(s, 0.0) for s in NOISE_STAGES) / update
        ours = f"{100 * share:.0f} % of DP-SGD(F)'s model update at {format_bytes(size)}"
        return Verdict(_ours(ours, t), _verdict(share > 0.5))
    return None


def fig6_roofline(m: Measured, where: Where) -> Verdict | None:
    """The best engine's share of its bound, from the newest commit's `bench noise`
    records of this machine and placement (a later commit may measure another bound). An
    engine past its bound says the bound was mismeasured or mismodelled, not that the
    engine agrees: that row is not comparable."""
    b = m.bench
    if b.empty:
        return None
    part = b[(b["machine"] == where[0]) & (b["placement"] == where[1])]
    part = part.dropna(subset=["pct_of_bound"])
    if part.empty:
        return None
    newest = part.groupby("commit")["created"].max().idxmax()
    part = part[part["commit"] == newest]
    best = part.sort_values("pct_of_bound").iloc[-1]
    engine = str(best["engine"]).split(" (")[0]
    ours = (
        f"{best['pct_of_bound']:.0f} % of its bound ({engine}, "
        f"{format_bytes(best['table_bytes'])}; {where[0]}, commit {best['commit']})"
    )
    if best["pct_of_bound"] > ABOVE_BOUND:
        return Verdict(f"{ours}: above the bound, which is too low", NOT_COMPARABLE)
    return Verdict(ours, _verdict(best["pct_of_bound"] >= 81 / 1.25))


def fig10_speedup(m: Measured, where: Where) -> Verdict | None:
    t = _by_batch(m, where, "dpsgd-f", "lazydp")
    speedups = _ratios(t, step_of)
    if not speedups:
        return None
    mean = statistics.mean(speedups.values())
    ours = f"{_listed(speedups, _x)}; mean {_x(mean)}"
    return Verdict(_ours(ours, t), _verdict(all(within(v, 85, 155) for v in speedups.values())))


def fig10_parity(m: Measured, where: Where) -> Verdict | None:
    t = _by_batch(m, where, "lazydp", "sgd")
    ratios = _ratios(t, step_of)
    if not ratios:
        return None
    ours = "LazyDP ÷ SGD " + _listed(ratios, lambda v: f"{v:.2f}")
    return Verdict(_ours(ours, t), _verdict(all(v <= 1.25 for v in ratios.values())))


def fig11_update(m: Measured, where: Where) -> Verdict | None:
    t = _by_batch(m, where, "dpsgd-f", "lazydp", STAGES)
    ratios = _ratios(t, _update)
    if not ratios:
        return None
    ours = "DP-SGD(F)'s model update ÷ LazyDP's " + _listed(ratios, _x)
    return Verdict(_ours(ours, t), _verdict(all(v > 1 for v in ratios.values())))


def fig12_energy(m: Measured, where: Where) -> Verdict | None:
    t = _by_batch(m, where, "dpsgd-f", "lazydp", ENERGY)
    ratios = _ratios(t, joules_of)
    if not ratios:
        return None
    ours = "DP-SGD(F) J/step ÷ LazyDP's " + _listed(ratios, _x)
    return Verdict(_ours(ours, t), _verdict(all(v > 1 for v in ratios.values())))


def fig13a_oom(m: Measured, where: Where) -> Verdict | None:
    """DP-SGD(F) failing at 192 GB supports the claim only where LazyDP ran at 192 GB in
    the same machine and placement: a size nothing fits says nothing of DP-SGD(F)."""
    p = m.point(where, ask("dpsgd-f", table_bytes=GB192))
    if p.status == "not run":
        return None
    if p.status == "ok":
        return Verdict(_ours(f"ran: {p.stats.median_ms:.4g} ms per step", _one(p, where)), DIFFER)
    lazy = m.point(where, ask("lazydp", table_bytes=GB192))
    if lazy.status != "ok":
        why = "LazyDP did not run at 192 GB either" + (
            f" ({lazy.reason})" if lazy.status != "not run" else ""
        )
        return Verdict(f"did not run: {p.reason}; {why} ({where[0]})", NO_DATA)
    ours = f"did not run: {p.reason}; LazyDP ran, {lazy.stats.median_ms:.4g} ms per step"
    return Verdict(_ours(ours, _one(lazy, where)), AGREE)


def _one(p: Point, where: Where) -> Together:
    return Together({}, where[0], p.commit, p.mode)


def fig13a_growth(m: Measured, where: Where) -> Verdict | None:
    sizes = (24_000_000_000, 48_000_000_000, GB96, GB192)
    groups = {s: (ask("dpsgd-f", table_bytes=s), ask("lazydp", table_bytes=s)) for s in sizes}
    t = m.together(where, groups)
    speedups = _ratios(t, step_of)
    if len(speedups) < 2:
        return None
    ours = ", ".join(f"{_x(v)} at {format_bytes(s)}" for s, v in speedups.items())
    values = list(speedups.values())
    return Verdict(_ours(ours, t), _verdict(all(a <= b for a, b in itertools.pairwise(values))))


BASE_SETTING = "pooling 1"  # the paper's configuration itself


def _paper_settings() -> dict[str, dict[str, object]]:
    """Fig. 13(b)-(d)'s settings: MLPerf DLRM at 96 GB with pooling 1/10/20/30 and with
    low/medium/high locality (named, or as the Zipf exponents they stand for), and the
    RMC models at full size, each at its own batch size and pooling."""
    out: dict[str, dict[str, object]] = {}
    for pooling in (1, 10, 20, 30):
        out[f"pooling {pooling}"] = {"pooling": pooling}
    for name, alpha in LOCALITY_ALPHA.items():
        out[f"{name} locality"] = {"distribution": (name, f"zipf:{alpha:g}")}
    for name in ("rmc1", "rmc2", "rmc3"):
        wl = load_workload(name)
        out[f"{name} full"] = {
            "workload": name,
            "table_bytes": wl.table_bytes(),
            "batch_size": wl.batch_size,
            "pooling": wl.pooling,
        }
    return out


def fig13_hardest(m: Measured, where: Where) -> Verdict | None:
    groups = {
        name: (ask("dpsgd-f", **fields), ask("lazydp", **fields))
        for name, fields in _paper_settings().items()
    }
    t = m.together(where, groups)
    speedups = _ratios(t, step_of)
    if set(speedups) <= {BASE_SETTING}:  # fig. 10's point alone varies nothing
        return None
    name, low = min(speedups.items(), key=lambda kv: kv[1])
    ours = f"lowest {_x(low)} ({name}; {len(speedups)} of the paper's {len(groups)} settings)"
    return Verdict(_ours(ours, t), _verdict(low >= 16.7 / 1.25))


def fig14_eana(m: Measured, where: Where) -> Verdict | None:
    t = _by_batch(m, where, "lazydp", "eana")
    costs = _ratios(t, step_of)
    if not costs:
        return None
    ours = "LazyDP over EANA " + _listed(costs, lambda v: f"{100 * (v - 1):+.0f} %")
    return Verdict(_ours(ours, t), _verdict(all(within(v - 1, 0.27, 0.37) for v in costs.values())))


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
        "DP-SGD(F) at 192 GB recorded as OOM or skipped while LazyDP ran at 192 GB there",
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
        "lowest speedup over the paper's settings (pooling 1/10/20/30 and low/medium/high "
        "locality at 96 GB, RMC1-3 full) >= 16.7 / 1.25 = 13.4x",
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
    """One row per claim and (machine, placement) with records for it; one "not
    measured" row for a claim none has."""
    measured = Measured(records)
    rows = []
    for claim in claims:
        found = False
        for machine, placement in measured.panels():
            v = claim.check(measured, (machine, placement))
            if v is None:
                continue
            found = True
            where = f"{placement} ({PAPER[placement]})" if placement in PAPER else placement
            rows.append(
                Row(claim.figure, where, claim.text, v.ours, claim.rule, v.verdict, machine)
            )
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
