"""Rich tables of result records (what `run` prints; `plot` prints the numbers behind figures)."""

from __future__ import annotations

from rich.table import Table

from lazydp_bench.measure.stages import LABELS, Stage
from lazydp_bench.units import format_bytes


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def run_title(rec: dict) -> str:
    c = rec["config"]
    size = format_bytes(c["table_bytes"])
    return (
        f"{c['algo']} · {c['workload']} {size} · {c['placement']} · batch {c['batch_size']} · "
        f"pooling {c['pooling']} · {c['distribution']}"
    )


def run_table(rec: dict) -> Table:
    """Stage breakdown (median ms, share of the step) plus step time, memory and energy."""
    table = Table(title=run_title(rec), title_justify="left")
    table.add_column("stage")
    table.add_column("median ms", justify="right")
    table.add_column("share", justify="right")
    table.add_column("p25-p75 ms", justify="right")
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
    for label, value in _facts(rec):
        table.add_row(label, value, "", "")
    return table


def _graph_line(timing: dict) -> str:
    if timing.get("cuda_graph"):
        return "on: each measured step replays one captured graph"
    return "off: " + str(timing.get("cuda_graph_blocker") or "not recorded")


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
        per, epoch = timing.get("flush_ms_per_step"), timing.get("flush_ms_per_epoch_step")
        facts.append(
            (
                "final flush ms (per step run; per step of an epoch)",
                f"{_ms(timing['flush_ms'])} ({_ms(per)}; {_ms(epoch)})",
            )
        )
    if energy.get("gpu_j_per_step") is not None:
        facts.append(("GPU energy J/step", _num(energy["gpu_j_per_step"], 3)))
        facts.append(
            (
                "GPU avg W (idle W)",
                f"{_num(energy['gpu_avg_w'], 1)} ({_num(energy.get('gpu_idle_w'), 1)})",
            )
        )
    else:
        facts.append(("GPU energy", "n/a: " + str(energy.get("reason") or "not measured")))
    if energy.get("cpu_j_per_step") is not None:
        facts.append(("CPU package J/step", _num(energy["cpu_j_per_step"], 3)))
    facts.append(("privacy", privacy_line(privacy)))
    return facts


def privacy_line(privacy: dict) -> str:
    if not privacy.get("private"):
        return "non-private"
    sigma = f"sigma={privacy.get('noise_multiplier'):.4g}, C={privacy.get('clip_norm')}"
    if privacy.get("dp_equivalent") is False:
        return f"{sigma}; [bold red]NOT DP-SGD-equivalent[/] (no epsilon)"
    eps_rdp, eps_prv = privacy.get("epsilon_rdp"), privacy.get("epsilon_prv")
    eps = f"epsilon={_num(eps_rdp, 3)} (RDP), {_num(eps_prv, 3)} (PRV)"
    return f"{sigma}; {eps} at delta={privacy.get('delta')}"


def _num(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def summary_table(records: list[dict]) -> Table:
    """One line per record: step time, ratio to SGD at the same point, throughput, energy."""
    table = Table(title="summary", title_justify="left")
    for col in (
        "algo",
        "size",
        "placement",
        "batch",
        "status",
        "step ms",
        "x SGD",
        "samples/s",
        "J/step",
        "DP-SGD(F) / this",
    ):
        table.add_column(col, justify="left" if col in ("algo", "placement", "status") else "right")
    sgd, dpsgd = _steps_of(records, "sgd"), _steps_of(records, "dpsgd-f")
    for r in records:
        c, timing = r["config"], r.get("timing") or {}
        step = timing.get("step_median_ms")
        base = sgd.get(_point(r))
        ratio = f"{step / base['timing']['step_median_ms']:.2f}" if step and base else "-"
        energy = (r.get("energy") or {}).get("gpu_j_per_step")
        f_rec = dpsgd.get(_point(r))
        vs_f = "-"
        if step and f_rec and c["algo"] != "dpsgd-f":
            vs_f = f"{f_rec['timing']['step_median_ms'] / step:.1f}x [{noise_label(f_rec)}]"
        table.add_row(
            c["algo"] + (f" [{noise_label(r)}]" if r.get("noise") else ""),
            format_bytes(c["table_bytes"]),
            c["placement"],
            str(c["batch_size"]),
            str(r.get("status")),
            _ms(step),
            ratio,
            _num(timing.get("throughput_samples_per_s")),
            _num(energy, 3),
            vs_f,
        )
    return table


def _steps_of(records: list[dict], algo: str) -> dict[tuple, dict]:
    """The ok records of `algo`, by point."""
    return {
        _point(r): r for r in records if r["config"]["algo"] == algo and r.get("status") == "ok"
    }


def noise_label(rec: dict) -> str:
    """The engine of a private record's table noise in one word: streamed (drawn on the
    GPU for a host table), host (host threads), fused (the Triton kernel) or torch: the
    name a speedup over this record prints as its baseline."""
    noise = rec.get("noise") or {}
    engine = str((noise.get("table") or {}).get("engine", ""))
    for prefix, label in (
        ("streamed", "streamed"),
        ("host-threaded", "host"),
        ("triton", "fused"),
        ("torch", "torch"),
    ):
        if engine.startswith(prefix):
            return label
    return str(noise.get("impl") or rec["config"].get("noise_impl") or "?")


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
