"""Rich tables of result records (what `run` prints; `plot` prints the numbers behind figures).

Every table reads at 80 columns: names, algorithms and sizes are never cut; where the full
layout is wider than the terminal, a narrower layout of the same content is printed."""

from __future__ import annotations

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from lazydp_bench.measure.stages import LABELS, Stage
from lazydp_bench.records.tidy import noise_label
from lazydp_bench.units import format_bytes


class FitWidth:
    """The first of several layouts of the same content whose natural (unwrapped) width
    fits the width it is printed in; the last layout when none does."""

    def __init__(self, *layouts: RenderableType) -> None:
        self.layouts = layouts

    def choose(self, console: Console, options: ConsoleOptions) -> RenderableType:
        wide = options.update_width(10**6)
        for layout in self.layouts[:-1]:
            if Measurement.get(console, wide, layout).maximum <= options.max_width:
                return layout
        return self.layouts[-1]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.choose(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.choose(console, options))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def algo_name(config: dict) -> str:
    """The algorithm with its clipping mode where that is not the algorithm's own
    (`lazydp [bookkeeping]`): two runs that differ only there must not read alike."""
    from lazydp_bench.algorithms import ALGORITHMS

    algo, clipping = config["algo"], config.get("clipping")
    cls = ALGORITHMS.get(algo)
    if cls is None or clipping in (None, "none", cls.default_clipping):
        return algo
    return f"{algo} [{clipping}]"


def run_title(rec: dict) -> str:
    c = rec["config"]
    size = format_bytes(c["table_bytes"])
    place = c["placement"]
    if (c.get("gpus") or 1) > 1:  # a row-wise sharded run (older records have no field)
        place = f"{place} x{c['gpus']} {c.get('sharding') or 'sharded'}"
    return (
        f"{algo_name(c)} · {c['workload']} {size} · {place} · "
        f"batch {c['batch_size']} · pooling {c['pooling']} · {c['distribution']}"
    )


def run_table(rec: dict) -> Group:
    """The title line, the stage breakdown (median ms, share of the step, IQR) with the
    step time, then step, memory, energy and privacy facts as label / value lines."""
    table = Table()
    table.add_column("stage", no_wrap=True)
    table.add_column("median ms", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    table.add_column("p25-p75 ms", justify="right", no_wrap=True)
    timing = rec.get("timing") or {}
    step = timing.get("step_median_ms")
    for s in rec.get("stages") or []:
        label = LABELS[Stage(s["name"])]
        if s["parent"]:
            label = f"  └ {label}"
        share = f"{100 * s['median_ms'] / step:.1f}%" if step else "-"
        table.add_row(label, _ms(s["median_ms"]), share, f"{_ms(s['p25_ms'])}-{_ms(s['p75_ms'])}")
    table.add_section()
    iqr = f"{_ms(timing.get('step_p25_ms'))}-{_ms(timing.get('step_p75_ms'))}"
    table.add_row("[bold]step time[/]", f"[bold]{_ms(step)}[/]", "100%", iqr)
    facts = Table.grid(padding=(0, 2), pad_edge=True)
    facts.add_column()
    facts.add_column(overflow="fold")
    for label, value in _facts(rec):
        facts.add_row(label, value)
    return Group(Text(run_title(rec), style="table.title"), table, facts)


def _graph_line(timing: dict) -> str:
    if timing.get("cuda_graph"):
        return "on: each measured step replays one captured graph"
    return "off: " + escape(str(timing.get("cuda_graph_blocker") or "not recorded"))


def _facts(rec: dict) -> list[tuple[str, str]]:
    timing, memory = rec.get("timing") or {}, rec.get("memory") or {}
    energy, privacy = rec.get("energy") or {}, rec.get("privacy") or {}
    facts = [
        ("throughput (samples/s)", _num(timing.get("throughput_samples_per_s"))),
        ("measured steps", str(timing.get("measured_iters"))),
        (
            "timer",
            str(timing.get("mode")) + ("" if rec["config"]["breakdown"] else ", no breakdown"),
        ),
        ("CUDA graph", _graph_line(timing)),
        ("table init (s)", _num(timing.get("init_s"), 2)),
        ("peak GPU memory", format_bytes(memory.get("gpu_peak_bytes"))),
        ("peak host memory (RSS)", format_bytes(memory.get("host_peak_bytes"))),
    ]
    if cpu := timing.get("host_cpu"):
        shares = f"{cpu['busy_pct']:.0f} / {cpu['steal_pct']:.1f}"
        facts.append(("host CPU busy / stolen %", shares))
    if memory.get("history_table_bytes") is not None:
        facts.append(("history table", format_bytes(memory["history_table_bytes"])))
    if timing.get("flush_ms") is not None:
        keys = ("flush_ms", "flush_ms_per_step", "flush_ms_per_epoch_step")
        flush, per, epoch = (_ms(timing.get(k)) for k in keys)
        amortized = f"{flush}; per step run {per}; per step of an epoch {epoch}"
        facts.append(("final flush ms", amortized))
    if energy.get("gpu_j_per_step") is not None:
        facts.append(("GPU energy J/step", _num(energy["gpu_j_per_step"], 3)))
        facts.append(
            (
                "GPU avg W (idle W)",
                f"{_num(energy['gpu_avg_w'], 1)} ({_num(energy.get('gpu_idle_w'), 1)})",
            )
        )
    else:
        reason = escape(str(energy.get("reason") or "not measured"))
        facts.append(("GPU energy", "n/a: " + reason))
    if energy.get("cpu_j_per_step") is not None:
        facts.append(("host CPU J/step", host_energy_line(energy)))
    elif energy.get("gpu_j_per_step") is not None:  # else the GPU line gave the reason
        reason = escape(str(energy.get("reason") or "not measured"))
        facts.append(("host CPU energy", "n/a: " + reason))
    facts.append(("privacy", privacy_line(privacy)))
    if (utility := rec.get("utility")) and utility.get("final_auc") is not None:
        held = f"{_num(utility['final_auc'], 4)} / {_num(utility.get('final_logloss'), 4)}"
        facts.append(("held-out AUC / log-loss", f"{held} ({utility['eval_lines']:,} lines)"))
    return facts


def host_energy_line(energy: dict) -> str:
    """Host CPU energy per step and where it came from: RAPL, or an estimate from the
    rated power it used (and that power's source)."""
    value = _num(energy["cpu_j_per_step"], 3)
    if energy.get("cpu_source") == "rapl":
        return f"{value} (RAPL)"
    source = escape(str(energy.get("cpu_tdp_source") or "?"))
    return f"{value} (estimated: {_num(energy.get('cpu_tdp_w'), 1)} W x utilisation, {source})"


def _host_cell(energy: dict) -> str:
    """A summary cell of host J per step; an estimate is marked `~`."""
    value = energy.get("cpu_j_per_step")
    if value is None:
        return "-"
    return ("" if energy.get("cpu_source") == "rapl" else "~") + _num(value, 3)


def privacy_line(privacy: dict) -> str:
    if not privacy.get("private"):
        return "non-private"
    sigma = f"sigma={privacy.get('noise_multiplier'):.4g}, C={privacy.get('clip_norm')}"
    eps_rdp, eps_prv = privacy.get("epsilon_rdp"), privacy.get("epsilon_prv")
    if privacy.get("dp_equivalent") is False and eps_rdp is None:
        return f"{sigma}; [bold red]NOT DP-SGD-equivalent[/] (no epsilon)"
    eps = f"epsilon={_num(eps_rdp, 3)} (RDP), {_num(eps_prv, 3)} (PRV)"
    line = f"{sigma}; {eps} at delta={privacy.get('delta')}"
    if privacy.get("dp_equivalent") is False:  # sparse noise whose mechanisms compose to sigma
        line += "; [bold red]NOT DP-SGD-equivalent[/]"
    return line


def _num(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


SUMMARY_COLUMNS = (
    "algo",
    "size",
    "placement",
    "batch",
    "status",
    "step ms",
    "x SGD",
    "samples/s",
    "GPU J",
    "vs DP-SGD(F)",
)
HOST_ESTIMATE_NOTE = "~ host J estimated: rated CPU W x utilisation"
# columns whose values are names or sizes: never wrapped, never cut
SUMMARY_KEYS = ("size", "placement", "batch", "status")
# the point's columns: in the narrow layout, the title of the point's own table
SUMMARY_POINT = ("size", "placement", "batch")


def summary_table(records: list[dict]) -> FitWidth:
    """One line per record: step time, ratio to SGD at the same point, throughput, energy,
    and DP-SGD(F)'s step time over this one with the engine DP-SGD(F) noised with. Where
    that is too wide, each point gets a table of its own with the point in its title,
    columns with no value are left out, and an algorithm's noise engine wraps under its
    name."""
    sgd, dpsgd = _steps_of(records, "sgd"), _steps_of(records, "dpsgd-f")
    rows = [_summary_row(r, sgd, dpsgd) for r in records]
    columns = list(SUMMARY_COLUMNS)
    if any(row["host J"] != "-" for row in rows):  # host energy beside the GPU's
        columns.insert(columns.index("GPU J") + 1, "host J")
    columns += ["AUC"] if any(r.get("utility") for r in records) else []
    full = _summary_layout("summary", columns, rows)
    kept = [
        c
        for c in columns
        if c not in SUMMARY_POINT
        and (c in ("algo", "status") or any(row[c] != "-" for row in rows))
    ]
    points: dict[tuple, list[dict[str, str]]] = {}
    for r, row in zip(records, rows, strict=True):
        points.setdefault(_point(r), []).append(row)
    narrow = [
        _summary_layout(f"summary · {_point_title(point)}", kept, point_rows)
        for point, point_rows in points.items()
    ]
    return FitWidth(full, Group(*narrow))


def _point_title(point: tuple) -> str:
    workload, table_bytes, placement, batch, pooling, distribution = point
    return (
        f"{workload} {format_bytes(table_bytes)} · {placement} · batch {batch} · "
        f"pooling {pooling} · {distribution}"
    )


def _summary_row(r: dict, sgd: dict[tuple, dict], dpsgd: dict[tuple, dict]) -> dict[str, str]:
    """A record's summary cells; `sgd` and `dpsgd` are the baselines' records by point."""
    c, timing = r["config"], r.get("timing") or {}
    step = timing.get("step_median_ms")
    base = sgd.get(_point(r))
    ratio = f"{step / base['timing']['step_median_ms']:.2f}" if step and base else "-"
    energy = r.get("energy") or {}
    f_rec = dpsgd.get(_point(r))
    vs_f = "-"
    if step and f_rec and c["algo"] != "dpsgd-f":
        vs_f = f"{f_rec['timing']['step_median_ms'] / step:.1f}x [{noise_label(f_rec)}]"
    return {
        "algo": algo_name(c) + (f" [{noise_label(r)}]" if r.get("noise") else ""),
        "size": format_bytes(c["table_bytes"]),
        "placement": c["placement"],
        "batch": str(c["batch_size"]),
        "status": str(r.get("status")),
        "step ms": _ms(step),
        "x SGD": ratio,
        "samples/s": _num(timing.get("throughput_samples_per_s")),
        "GPU J": _num(energy.get("gpu_j_per_step"), 3),
        "host J": _host_cell(energy),
        "vs DP-SGD(F)": vs_f,
        "AUC": _num((r.get("utility") or {}).get("final_auc"), 4),  # held-out, final
    }


def _summary_layout(title: str, columns: list[str], rows: list[dict[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    names = [row["algo"].split(" [")[0] for row in rows]
    for col in columns:
        if col == "algo":  # the name whole on its first line; the engine may wrap
            table.add_column(col, min_width=max(map(len, names), default=4))
        elif col == "vs DP-SGD(F)":
            table.add_column(col, justify="right")
        else:
            left = col in ("placement", "status")
            table.add_column(col, justify="left" if left else "right", no_wrap=col in SUMMARY_KEYS)
    for row in rows:
        table.add_row(*(escape(row[col]) for col in columns))
    if "host J" in columns and any(row["host J"].startswith("~") for row in rows):
        table.caption, table.caption_justify = HOST_ESTIMATE_NOTE, "left"
    return table


def _steps_of(records: list[dict], algo: str) -> dict[tuple, dict]:
    """The fastest ok record of `algo` at each point: a speedup is quoted against the
    strongest baseline measured there (its engine is printed beside it)."""
    best: dict[tuple, dict] = {}
    for r in records:
        step = (r.get("timing") or {}).get("step_median_ms")
        if r["config"]["algo"] != algo or r.get("status") != "ok" or step is None:
            continue
        key = _point(r)
        if key not in best or step < best[key]["timing"]["step_median_ms"]:
            best[key] = r
    return best


def _point(rec: dict) -> tuple:
    c = rec["config"]
    return (
        c["workload"],
        c["table_bytes"],
        c["placement"],
        c["batch_size"],
        c["pooling"],
        c["distribution"],
    )


def figure_points(data) -> str:
    """How many points a figure's data (`FigureResult.data`) draws and how many it misses,
    by status: a point is one panel, axis value and algorithm (its stages are one point);
    a frame without a status column (the noise roofline) draws every row."""
    if "status" not in data.columns:
        return f"{_count(len(data), 'point')} drawn, 0 missing"
    columns = list(data.columns)
    keys = [c for c in columns[: columns.index("status")] if c != "stage"]
    missing: dict[str, int] = {}
    drawn = 0
    for _, point in data.groupby(keys, dropna=False, sort=False):
        statuses = list(point["status"])
        if "ok" in statuses:
            drawn += 1
        else:
            missing[str(statuses[0])] = missing.get(str(statuses[0]), 0) + 1
    text = f"{_count(drawn, 'point')} drawn, {sum(missing.values())} missing"
    if missing:
        text += " (" + ", ".join(f"{n} {status}" for status, n in missing.items()) + ")"
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
