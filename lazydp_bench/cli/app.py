"""The `lazydp-bench` command line. Thin: each command builds configs and calls one library
function; `BenchError` becomes a one-line message and exit code 2 (no traceback)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lazydp_bench.algorithms import ALGORITHMS, get_algorithm
from lazydp_bench.cli import options as o
from lazydp_bench.cli.data_cmd import data_app
from lazydp_bench.cli.edge import err_console, user_errors, warnings_as_lines
from lazydp_bench.config import RunConfig
from lazydp_bench.errors import BenchError
from lazydp_bench.units import format_bytes, parse_size

app = typer.Typer(
    help="Measure what differential privacy costs for embedding-heavy recommendation models: "
    "SGD, the DP-SGD family and LazyDP on DLRM workloads, stage by stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


def split_list(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise BenchError(f"expected a comma list of one or more values, got {text!r}")
    return items


class RichProgress:
    """Trainer progress shown as one rich bar per phase (init, warm-up, measure, finalize)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = None

    def phase(self, label: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


Opt = typer.Option


@app.command()
@o.with_run_options
def run(
    algo: Annotated[str, Opt(help=o.ALGO_HELP)] = o.DEFAULT_ALGOS,
    workload: Annotated[
        str, Opt(help="Workload name (see `workloads`) or a .toml path.")
    ] = "mlperf-dlrm",
    table_size: Annotated[
        str,
        Opt(
            help="Total embedding bytes, e.g. 96MB, 9.6GB, 96GiB; or a scale factor x0.01; "
            "'full' keeps the workload's size."
        ),
    ] = "96MB",
    batch_size: Annotated[int | None, Opt(help="Batch size (default: the workload's).")] = None,
    pooling: Annotated[
        int | None, Opt(help="Lookups per table per example (default: the workload's).")
    ] = None,
    distribution: Annotated[
        str, Opt(help="Index distribution: uniform, zipf:<alpha>, low, medium, high.")
    ] = "uniform",
    placement: Annotated[
        str,
        Opt(
            help="auto, gpu, hybrid (tables in host RAM, MLPs on the GPU, which also draws "
            "table noise), hybrid-host (the paper's design: all table noise and LazyDP's "
            "bookkeeping on host cores) or cpu."
        ),
    ] = "auto",
    out: Annotated[
        Path, Opt(help="Directory whose runs.jsonl gets one record per run.", parser=o.out_dir)
    ] = Path("runs"),
    gpus: Annotated[
        int,
        Opt(
            help="Ranks: N > 1 shards each table row-wise over N GPUs (NCCL; --placement "
            "gpu) or N CPU processes (gloo; cpu), MLPs data-parallel (sgd, dpsgd-*, lazydp)."
        ),
    ] = 1,
    *,
    base: RunConfig,
) -> None:
    """Train a few steps of each algorithm and print the per-stage breakdown."""
    from lazydp_bench.records.store import append_record, ensure_writable
    from lazydp_bench.report.tables import run_table, summary_table
    from lazydp_bench.runtime.gpus import check_gpus, is_lead, launched_gpus

    with user_errors():
        gpus = launched_gpus(gpus)
        placement = check_gpus(gpus, placement) or placement
        names = split_list(algo)
        clipping = _clipping_per_algo(names, base.clipping)
        configs = [
            replace(
                base,
                algo=name,
                clipping=clipping[name],
                workload=workload,
                table_size=None if table_size.lower() == "full" else table_size,
                batch_size=batch_size,
                pooling=pooling,
                distribution=distribution,
                placement=placement,
                gpus=gpus,
            )
            for name in names
        ]
        plans = _plan_all(configs)  # every input checked before anything runs
        path = ensure_writable(out)
    records = []
    for plan in plans:
        record = _execute_with_progress(plan)
        if not is_lead():  # a torchrun rank above 0: rank 0 records and reports
            continue
        append_record(path, record)
        records.append(record)
        if record["status"] == "ok":
            console.print(run_table(record))
        else:
            err_console.print(
                f"[bold red]{record['config']['algo']}: {record['status']}[/] {record['error']}"
            )
    if not is_lead():
        return
    if len(records) > 1:
        console.print(summary_table(records))
    console.print(f"{len(records)} record(s) appended to {path}")
    if any(r["status"] == "error" for r in records):
        raise typer.Exit(1)


def _execute_with_progress(plan) -> dict | None:
    """One plan's record, with a progress bar (a spinner for a run on several ranks)."""
    from lazydp_bench.runtime.trainer import execute

    with progress_bar() as bar:
        gpus = plan.config.gpus
        if gpus > 1:
            from lazydp_bench.runtime.sharded_trainer import execute_sharded

            bar.add_task(f"{plan.config.algo}: {gpus} ranks ({plan.placement})", total=None)
            return execute_sharded(plan)
        hook = RichProgress(bar)
        record = execute(plan, hook)
        hook.close()
        return record


def _clipping_per_algo(names: list[str], clipping: str | None) -> dict[str, str | None]:
    """`--clipping` is for the private algorithms of the list (as in `sweep`), so
    `--algo sgd,lazydp --clipping bookkeeping` compares both in one process; a list with no
    private algorithm keeps it, and planning refuses it with the reason."""
    private = {name: name in ALGORITHMS and ALGORITHMS[name].private for name in names}
    if clipping is None or not any(private.values()):
        return dict.fromkeys(names, clipping)
    return {name: clipping if private[name] else None for name in names}


def _plan_all(configs: list[RunConfig]) -> list:
    """Each algorithm's plan, with a spinner naming the phase (privacy accounting and the
    memory fit take seconds); a refusal names the algorithm it is about. A config with
    `gpus` > 1 is planned per rank of a row-wise sharded run."""
    from lazydp_bench.runtime.trainer import plan_run

    plans = []
    with err_console.status("planning") as status:
        for config in configs:
            status.update(f"planning {config.algo}: privacy accounting and memory fit")
            try:  # the first plan's pass over --data files serves the others
                if config.gpus > 1:
                    from lazydp_bench.runtime.sharded_trainer import plan_sharded

                    plans.append(plan_sharded(config))
                    continue
                first = plans[0] if plans else None
                plans.append(
                    plan_run(
                        config,
                        data=first.data if first else None,
                        heldout=first.heldout if first else None,
                    )
                )
            except BenchError as exc:
                raise BenchError(f"{config.algo}: {exc}") if len(configs) > 1 else exc from None
    return plans


@app.command()
def workloads() -> None:
    """List the workloads with their full-scale embedding size."""
    from rich.console import Group

    from lazydp_bench.report.tables import FitWidth
    from lazydp_bench.workloads import available_workloads, load_workload

    with user_errors():
        rows = []
        for name in available_workloads():
            wl = load_workload(name)
            rows.append(
                (
                    wl.name,
                    str(wl.num_tables),
                    f"{wl.total_rows:,}",
                    str(wl.dim),
                    format_bytes(wl.table_bytes()),
                    str(wl.batch_size),
                    str(wl.pooling),
                    "-".join(map(str, (wl.dense_features, *wl.bottom_mlp))),
                    "-".join(map(str, (wl.interaction_features, *wl.top_mlp))),
                )
            )
    specs = ("name", "tables", "rows", "dim", "full size", "batch", "pooling")
    one = _plain_table("workloads", (*specs, "MLPs: bottom / top"))
    sizes = _plain_table("workloads", specs)
    mlps = _plain_table("MLP layer widths", ("name", "bottom MLP", "top MLP"))
    for row in rows:
        one.add_row(*row[:7], f"{row[7]} / {row[8]}")
        sizes.add_row(*row[:7])
        mlps.add_row(row[0], *row[7:])
    # one table where it fits; at narrower widths the MLPs get a table of their own
    console.print(FitWidth(one, Group(sizes, mlps)))


def _plain_table(title: str, columns: tuple[str, ...]) -> Table:
    """A table of names and numbers (right-aligned) that are never wrapped or cut."""
    table = Table(title=title)
    for col in columns:
        number = col in ("tables", "rows", "dim", "full size", "batch", "pooling")
        table.add_column(col, no_wrap=True, justify="right" if number else "left")
    return table


@app.command()
def info(
    host_mem_limit: Annotated[
        str | None, Opt(help="Host RAM to plan with (default: MemAvailable).")
    ] = None,
) -> None:
    """Show the machine: GPU, driver, torch/CUDA, energy counters, RAM, and the largest
    mlperf-dlrm table each placement can hold."""
    from lazydp_bench.measure.info import machine_report

    with user_errors():
        limit = parse_size(host_mem_limit) if host_mem_limit else None
        console.print(machine_report(limit))


@app.command()
def verify(
    algo: Annotated[
        str | None,
        Opt(
            help="Algorithms to check against DP-SGD(F) (default: lazydp,lazydp-noans,eana); "
            "with --gpus N > 1, to check on N ranks against one (default: sgd,dpsgd-f,lazydp)."
        ),
    ] = None,
    placement: Annotated[str, Opt(help="cpu, gpu, hybrid or hybrid-host, as for run.")] = "cpu",
    steps: Annotated[int, Opt(help="Training steps per check.")] = 12,
    seed: o.Seed = 0,
    gpus: Annotated[
        int,
        Opt(
            help="Ranks of a row-wise sharded table: N > 1 checks that N ranks (N GPUs over "
            "NCCL with --placement gpu, N CPU processes over gloo with cpu) train the model "
            "one rank trains, bit for bit, with noise off, unit and real noise."
        ),
    ] = 1,
) -> None:
    """Prove LazyDP gives DP-SGD's model: exact equality without noise and with unit noise,
    and the right noise distribution with real noise. Exit code 1 on any failure."""
    import torch

    from lazydp_bench.runtime.gpus import check_gpus, launched_gpus
    from lazydp_bench.runtime.verify import verify as run_checks

    with user_errors():
        gpus = launched_gpus(gpus)
        if sharded := check_gpus(gpus, placement):
            if steps < 2:
                raise BenchError(f"--steps must be at least 2, got {steps}")
            names = split_list(algo or "sgd,dpsgd-f,lazydp")
            _verify_sharded(names, sharded, gpus, steps, seed)
            return
        names = split_list(algo or "lazydp,lazydp-noans,eana")
        for name in names:
            if not get_algorithm(name).private:
                raise BenchError(
                    f"verify checks private algorithms against DP-SGD(F); {name!r} is not private"
                )
            if get_algorithm(name).own_noise:
                raise BenchError(
                    f"verify's unit-noise checks need our noise engines; {name!r} draws its "
                    "own (its noise-off equality is in tests/algorithms/test_opacus_peer.py)"
                )
        if placement not in VERIFY_PLACEMENTS:
            valid = ", ".join(VERIFY_PLACEMENTS)
            raise BenchError(f"--placement must be one of {valid}, got {placement!r}")
        if placement != "cpu" and not torch.cuda.is_available():
            raise BenchError(f"--placement {placement} needs a CUDA GPU, and none is available")
        if steps < 2:
            raise BenchError(f"--steps must be at least 2, got {steps}")
    with progress_bar() as bar:
        bar.add_task(f"verifying {', '.join(names)} on {placement}", total=None)
        checks = run_checks(names, placement, steps, seed)
    _report_checks(f"verify vs DP-SGD(F): tiny workload, fp64, {steps} steps, {placement}", checks)


def _verify_sharded(names: list[str], placement: str, gpus: int, steps: int, seed: int) -> None:
    """`verify --gpus N`: N ranks against one, bit for bit (runtime/sharded_verify.py)."""
    from lazydp_bench.runtime.gpus import is_lead
    from lazydp_bench.runtime.sharded_session import sharded_update
    from lazydp_bench.runtime.sharded_verify import verify_sharded

    for name in names:
        get_algorithm(name)
        sharded_update(name)
    with progress_bar() as bar:
        bar.add_task(f"verifying {', '.join(names)} on {gpus} ranks ({placement})", total=None)
        checks = verify_sharded(names, gpus, use_cuda=placement == "gpu", steps=steps, seed=seed)
    if not is_lead():  # a torchrun rank above 0: rank 0 reports
        return
    title = (
        f"verify --gpus {gpus}: row-wise sharded vs one rank, tiny workload, fp64, "
        f"{steps} steps, {placement}"
    )
    _report_checks(title, checks)


def _report_checks(title: str, checks: list) -> None:
    """The checks as a table and a count; exit 1 if any came out other than expected."""
    table = Table(title=title)
    for col in ("algo", "check", "result", "numbers"):
        table.add_column(col)
    for c in checks:
        style = "green" if c.ok else "bold red"
        table.add_row(c.algo, c.name, f"[{style}]{c.verdict}[/]", c.detail)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    console.print(f"{len(checks) - len(failed)}/{len(checks)} checks as expected")
    if failed:
        raise typer.Exit(1)


def _int_list(text: str, name: str) -> tuple[int, ...]:
    """A comma list of positive integers (0 would silently mean the workload's default)."""
    try:
        values = tuple(int(x) for x in split_list(text))
    except ValueError as exc:
        raise BenchError(f"--{name} takes a comma list of integers, got {text!r}") from exc
    if bad := [v for v in values if v < 1]:
        raise BenchError(f"--{name} values must be positive, got {bad[0]}")
    return values


def _algo_list(text: str) -> tuple[str, ...]:
    """Registered algorithm names (an unknown one is refused before any point runs)."""
    names = tuple(split_list(text))
    for name in names:
        get_algorithm(name)
    return names


@app.command()
@o.with_run_options
def sweep(
    preset: Annotated[
        str | None,
        Opt(
            help="Paper grid: fig3, fig5, fig10, fig11, fig12, fig13a-d, fig14, paper; "
            "beyond it: fig13a-x2 (2 GPUs), sparse."
        ),
    ] = None,
    algo: Annotated[
        str | None, Opt(help=f"Comma list (default: {o.DEFAULT_ALGOS}). " + o.ALGO_HELP)
    ] = None,
    table_size: Annotated[str | None, Opt(help="Comma list of sizes, e.g. 96MB,960MB.")] = None,
    batch_size: Annotated[str | None, Opt(help="Comma list of batch sizes.")] = None,
    pooling: Annotated[str | None, Opt(help="Comma list of pooling factors.")] = None,
    distribution: Annotated[str | None, Opt(help="Comma list: uniform, zipf:A, low, ...")] = None,
    workload: Annotated[str | None, Opt(help="Comma list of workloads.")] = None,
    placement: Annotated[
        str | None, Opt(help="Comma list: auto, gpu, hybrid, hybrid-host, cpu.")
    ] = None,
    gpus: Annotated[
        str | None,
        Opt(
            help="Comma list of rank counts (default 1): N > 1 shards each table row-wise "
            "over N GPUs (or N gloo CPU processes with placement cpu), as run --gpus."
        ),
    ] = None,
    point_timeout: Annotated[
        float, Opt(help="Seconds before a point is killed (timeout).")
    ] = 1800.0,
    resume: Annotated[bool, Opt(help="Skip points whose record is already in OUT.")] = False,
    retry_failed: Annotated[
        bool, Opt(help="With --resume, run again the points recorded as oom, timeout or error.")
    ] = False,
    dry_run: Annotated[bool, Opt(help="List the points and their memory estimates only.")] = False,
    gpu_mem: Annotated[
        str | None,
        Opt(
            help="With --dry-run only: plan for a GPU with this much free memory, e.g. 141GB, "
            "instead of this machine's (which may have none); with --host-mem-limit, plan "
            "for another machine. A real sweep plans against the GPU it runs on."
        ),
    ] = None,
    out: Annotated[
        Path, Opt(help="Directory whose runs.jsonl gets one record per point.", parser=o.out_dir)
    ] = Path("runs"),
    *,
    base: RunConfig,
) -> None:
    """Run a grid of points, each in its own process; OOM, crashes and hangs become records.
    Exit code 1 when a point failed (oom, timeout or error)."""
    from lazydp_bench.placement.layout import machine_limits
    from lazydp_bench.records.store import ensure_writable
    from lazydp_bench.sweep.presets import expand_preset
    from lazydp_bench.sweep.runner import FAILED, grid_configs, plan_points, run_sweep

    with user_errors():
        grids = expand_preset(preset) if preset else [{"algo": tuple(split_list(o.DEFAULT_ALGOS))}]
        overrides = {
            "algo": _algo_list(algo) if algo is not None else None,
            "table_size": tuple(split_list(table_size)) if table_size is not None else None,
            "batch_size": _int_list(batch_size, "batch-size") if batch_size is not None else None,
            "pooling": _int_list(pooling, "pooling") if pooling is not None else None,
            "distribution": tuple(split_list(distribution)) if distribution is not None else None,
            "workload": tuple(split_list(workload)) if workload is not None else None,
            "placement": tuple(split_list(placement)) if placement is not None else None,
            "gpus": _int_list(gpus, "gpus") if gpus is not None else None,
        }
        grids = [{**g, **{k: v for k, v in overrides.items() if v is not None}} for g in grids]
        if not (math.isfinite(point_timeout) and point_timeout > 0):
            raise BenchError(f"--point-timeout must be a finite number > 0, got {point_timeout}")
        if gpu_mem is not None and not dry_run:
            raise BenchError(
                "--gpu-mem states a GPU for --dry-run only; a sweep plans against its own GPU"
            )
        if not dry_run and overrides["gpus"]:  # a real sweep needs the GPUs it names
            from lazydp_bench.runtime.gpus import check_gpus

            for count in overrides["gpus"]:
                check_gpus(count, "auto")
        gpu_free = parse_size(gpu_mem) if gpu_mem is not None else None
        limits = machine_limits(base.host_mem_limit, gpu_free=gpu_free)
        points = plan_points(grid_configs(base, grids), limits)
        if not dry_run:
            ensure_writable(out)
    from lazydp_bench.sweep.view import SweepView, dry_run_table

    if dry_run:
        console.print(dry_run_table(points, limits))
        return
    for p in points:
        if p.plan is None and p.skip_reason and "not implemented" in p.skip_reason:
            err_console.print(f"[yellow]note:[/] {p.skip_reason}: recorded as skipped")
    view = SweepView(points, console)
    with user_errors(), warnings_as_lines(), view.live():
        records = run_sweep(
            points,
            out,
            point_timeout,
            limits,
            resume,
            retry_failed=retry_failed,
            on_start=view.start,
            on_done=view.done,
        )
    console.print(view.table())
    statuses = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(statuses.items())) or "nothing to run"
    failed = sum(statuses.get(k, 0) for k in FAILED)
    if failed:
        summary += f"; {failed} point(s) failed"
    console.print(f"{len(records)} record(s) appended to {out / 'runs.jsonl'}: {summary}")
    if failed:
        raise typer.Exit(1)


@app.command()
def plot(
    results: Annotated[
        list[Path], typer.Argument(help="runs.jsonl files or folders holding them.")
    ],
    figure: Annotated[
        str,
        Opt(
            help="Comma list: fig3, fig5, fig10, fig11, fig12, fig13a-d, fig14, "
            "noise-roofline, utility, all."
        ),
    ] = "all",
    out: Annotated[Path, Opt(help="Directory for the images and CSVs.")] = Path("figures"),
    format: Annotated[str, Opt(help="Comma list of image formats: png, pdf, svg.")] = "png,pdf",
    allow_mixed_commits: Annotated[
        bool,
        Opt(
            "--allow-mixed-commits",
            show_default=False,
            help="Draw records of different commits side by side. Without it each panel "
            "draws only its newest commit's records (the commit of its newest successful "
            "run) and a note names the records left out; with it each point draws its own "
            "newest commit. Repeats are pooled only within one commit either way.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        Opt(
            "--verbose",
            show_default=False,
            help="Also print the numbers behind each figure (its CSV) as tables.",
        ),
    ] = False,
) -> None:
    """Redraw the paper's figures from stored records; write the numbers behind each as CSV.
    Each panel (one machine and placement) fixes every configuration field off the
    figure's axis to one reference value, named under the panel and in a note; repeated
    runs of a point are pooled (median and IQR of all their raw steps, or the median of
    their medians for records without raw steps; run count); a point
    without a successful run is an empty hatched bar labelled with why (not run, OOM,
    skipped: needs N GB, timeout, error); the footer names the commits drawn. Prints one
    line per figure: points drawn and missing, and the files written.
    """
    import matplotlib.pyplot as plt
    from rich.markup import escape

    from lazydp_bench.records.store import load_records
    from lazydp_bench.report.figures import ALL_FIGURES, FIGURES, make_figure
    from lazydp_bench.report.save import save_figure, save_table
    from lazydp_bench.report.tables import figure_points

    with user_errors():
        names = ALL_FIGURES if figure == "all" else split_list(figure)
        unknown = [n for n in names if n not in ALL_FIGURES]
        if unknown:
            raise BenchError(
                f"unknown figure {unknown[0]!r} (valid: {', '.join(ALL_FIGURES)}, all)"
            )
        formats = split_list(format)
        bad = [f for f in formats if f not in ("png", "pdf", "svg")]
        if bad:
            raise BenchError(f"unknown format {bad[0]!r} (valid: png, pdf, svg)")
        with warnings_as_lines():
            records = load_records(results)
        if not records:
            raise BenchError("no records in " + ", ".join(map(str, results)))
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot write figures to {out}: {exc.strerror or exc}") from exc
    for name in names:
        res = make_figure(name, records, allow_mixed_commits=allow_mixed_commits)
        for note in res.notes:
            err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        if res.figure is None:
            err_console.print(f"[yellow]{name}: skipped, nothing to draw[/]", soft_wrap=True)
            continue
        paths = [out / f"{name}.{fmt}" for fmt in (*formats, "csv")]
        with user_errors():  # a full disk, or a folder where a figure goes: one line
            for path in paths[:-1]:
                save_figure(res.figure, path)
            save_table(res.data, paths[-1])
        plt.close(res.figure)
        files = ", ".join(str(p) for p in paths)
        line = f"{name}: {figure_points(res.data)} -> {files}"
        console.print(escape(line), highlight=False, soft_wrap=True)
        if verbose:
            spec = FIGURES.get(name)
            for table in _figure_tables(res.data, name, spec.ylabel if spec else "value"):
                console.print(table)


# The CSV has every column; the printed tables leave out the step quartiles and pooling
# details so they fit a terminal.
PLOT_TABLE_HIDDEN = ("step_p25_ms", "step_p75_ms", "steps", "pooled", "mode")
# columns that name what a row is: always a column, never wrapped
PLOT_TABLE_KEYS = ("algo", "stage", "engine")
PLOT_TABLE_HEADERS = {"table_bytes": "table", "step_median_ms": "step ms", "step_iqr_pct": "IQR %"}


def _figure_tables(data, name: str, value_label: str) -> list[Table]:
    """The numbers behind a figure as rich tables, one per panel (or machine). The value
    column is named by the figure's y axis, table sizes are in bytes units, None and NaN
    are '-'; a column with no value is left out, and one with a single value in every
    row of a table is named in its title instead."""
    from rich.markup import escape

    group = next((c for c in ("panel", "machine") if c in data.columns), None)
    parts = data.groupby(group, sort=False) if group else [(None, data)]
    headers = {**PLOT_TABLE_HEADERS, "value": value_label}
    tables = []
    for title, part in parts:
        columns = [c for c in part.columns if c not in (*PLOT_TABLE_HIDDEN, group)]
        cells = [
            [_cell(v, c) for v, c in zip(row, columns, strict=True)]
            for row in part[columns].itertuples(index=False)
        ]
        shared, kept = [], []
        for i, col in enumerate(columns):
            values = {row[i] for row in cells}
            if values == {"-"}:
                continue
            if len(cells) > 1 and len(values) == 1 and col not in (*PLOT_TABLE_KEYS, "value"):
                shared.append(f"{headers.get(col, col.replace('_', ' '))} {values.pop()}")
            else:
                kept.append(i)
        heading = " · ".join([f"{name}: {title}" if group else name, *shared])
        table = Table(title=escape(heading))
        for i in kept:
            col = str(columns[i])
            label = headers.get(col, col.replace("_", " "))
            table.add_column(label, no_wrap=col in PLOT_TABLE_KEYS, overflow="fold")
        for row in cells:
            table.add_row(*(escape(row[i]) for i in kept))
        tables.append(table)
    return tables


def _cell(value, column: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if column == "table_bytes":
        return format_bytes(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


bench_app = typer.Typer(help="Micro-benchmarks of single mechanisms.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")


@bench_app.command("noise")
def bench_noise_cmd(
    size: Annotated[str, Opt(help="Table size to noise, e.g. 8GiB.")] = "1GiB",
    placement: Annotated[
        str,
        Opt(
            help="gpu (a table in GPU memory), cpu (a table in host RAM, host engines) or "
            "hybrid (a table in host RAM with the GPU's help: PCIe and host-add bounds too)."
        ),
    ] = "gpu",
    impl: Annotated[
        str | None,
        Opt(
            help="Comma list of engines: torch, fused, streamed, roundtrip (default: "
            "torch,fused; hybrid: fused,streamed,roundtrip)."
        ),
    ] = None,
    repeats: Annotated[int, Opt(help="Timed passes per engine (median reported).")] = 10,
    host_threads: Annotated[int | None, Opt(help="Host threads (default: all cores).")] = None,
    chunk_size: Annotated[str, Opt(help="Bound on any noise buffer.")] = "256MiB",
    out: Annotated[
        Path, Opt(help="Directory whose runs.jsonl gets one record per engine.", parser=o.out_dir)
    ] = Path("runs/bench"),
) -> None:
    """Dense noisy update of each engine vs its bounds (the Fig. 6 roofline): the measured
    copy bandwidth (memory) and, for the fused GPU kernel and host-philox, its draw rate
    with no memory traffic (arithmetic)."""
    import os

    import torch

    from lazydp_bench.config import MIN_CHUNK_BYTES
    from lazydp_bench.dp.noise import NOISE_ENGINES
    from lazydp_bench.dp.noise.registry import GPU_HELPED
    from lazydp_bench.measure.noise_bench import bench_noise, check_bench_fits
    from lazydp_bench.records.store import append_record, ensure_writable

    with user_errors():
        size_bytes = parse_size(size)
        if placement not in BENCH_IMPLS:
            raise BenchError(f"--placement must be gpu, cpu or hybrid, got {placement!r}")
        impls = split_list(impl if impl is not None else BENCH_IMPLS[placement])
        for name in impls:
            if name not in NOISE_ENGINES:
                raise BenchError(
                    f"unknown noise engine {name!r} (valid: {', '.join(NOISE_ENGINES)})"
                )
        if placement != "cpu" and not torch.cuda.is_available():
            raise BenchError(f"placement {placement!r} needs a CUDA GPU, and none is available")
        helped = [i for i in impls if i in GPU_HELPED]
        if helped and placement != "hybrid":
            raise BenchError(
                f"the {helped[0]} engine noises a host table with a GPU: --placement hybrid"
            )
        if repeats < 1:
            raise BenchError(f"--repeats must be positive, got {repeats}")
        if host_threads is not None and host_threads < 1:
            raise BenchError(f"--host-threads must be positive, got {host_threads}")
        threads = host_threads or os.cpu_count() or 1
        chunk = parse_size(chunk_size)
        if chunk < MIN_CHUNK_BYTES:
            raise BenchError("chunk bound must be at least 4 KiB")
        check_bench_fits(size_bytes, placement, threads=threads, chunk_bytes=chunk)
        path = ensure_writable(out)
    with progress_bar() as bar:
        task = bar.add_task("noise bench", total=None)
        records = bench_noise(
            size_bytes,
            placement,
            impls,
            repeats=repeats,
            threads=threads,
            chunk_bytes=chunk,
            progress=lambda msg: bar.update(task, description=msg),
        )
    from lazydp_bench.report.tables import FitWidth

    for rec in records:
        append_record(path, rec)
    title = f"dense noisy update, {format_bytes(records[0]['config']['table_bytes'])}, {placement}"
    # where one-line headers do not fit, each wraps onto two lines; an engine's
    # description wraps under its name, which is never cut
    console.print(FitWidth(_bench_table(title, records, " "), _bench_table(title, records, "\n")))
    copy = records[0]["bench"]["copy_bytes_per_s"]
    console.print(
        f"memory bound: copy {copy / 1e9:.0f} GB/s (r+w) = {copy / 8e9:.1f} G samples/s in place"
    )
    if (hybrid := records[0]["bench"]["hybrid"]) is not None:
        console.print(hybrid_lines(hybrid))
    for rec in records:
        bound = rec["bench"]["arithmetic_bound_samples_per_s"]
        if bound is not None:
            console.print(
                f"arithmetic bound of {rec['noise']['engine']}: {bound / 1e9:.1f} G samples/s"
            )
        console.print(
            f"{rec['noise']['engine']}: {rec['noise']['rng']}; {rec['noise']['key_bits']}"
        )
    console.print(f"{len(records)} record(s) -> {path}")


VERIFY_PLACEMENTS = ("cpu", "gpu", "hybrid", "hybrid-host")
BENCH_IMPLS = {"gpu": "torch,fused", "cpu": "torch,fused", "hybrid": "fused,streamed,roundtrip"}


def _bench_table(title: str, records: list[dict], sep: str) -> Table:
    """`bench noise`'s results, one row per engine; `sep` joins each header's two parts."""
    from rich.markup import escape

    table = Table(title=title)
    names = [str(rec["noise"]["engine"]) for rec in records]
    table.add_column("engine", min_width=max(len(n.split(" (")[0]) for n in names))
    for head in ("median ms", "GB/s (r+w)", "% of copy", "G samples/s", "% of bound"):
        first, _, rest = head.rpartition(" ")
        table.add_column(f"{first}{sep}{rest}", justify="right", no_wrap=True)
    for name, rec in zip(names, records, strict=True):
        b = rec["bench"]
        table.add_row(
            escape(name),
            f"{rec['timing']['step_median_ms']:.2f}",
            f"{b['achieved_bytes_per_s'] / 1e9:.0f}",
            f"{b['pct_of_copy']:.1f}%",
            f"{b['samples_per_s'] / 1e9:.3f}",
            f"{b['pct_of_bound']:.1f}%",
        )
    return table


def hybrid_lines(h: dict) -> str:
    """The hybrid bound's rates and designs, for the terminal."""
    return (
        f"PCIe pinned: H2D {h['h2d_bytes_per_s'] / 1e9:.1f} GB/s, D2H "
        f"{h['d2h_bytes_per_s'] / 1e9:.1f} GB/s, both at once {h['duplex_bytes_per_s'] / 1e9:.1f}"
        f" GB/s; host add {h['host_add_bytes_per_s'] / 1e9:.1f} GB/s of table; GPU draw "
        f"{h['gpu_draw_samples_per_s'] / 1e9:.0f} G samples/s\n"
        f"bound: noise down {h['bound_noise_down_ms']:.1f} ms, rows round trip "
        f"{h['bound_round_trip_ms']:.1f} ms -> {h['bound_ms']:.1f} ms ({h['bound_design']}; "
        f"host DRAM {h['host_dram_bytes_per_s'] / 1e9:.0f} GB/s shared by copies and adds; "
        f"{h['bound_unshared_ms']:.1f} ms if each resource ran alone)"
    )


@app.command()
def report(
    results: Annotated[
        list[Path],
        typer.Argument(help="Record files (.jsonl) or folders (every .jsonl file under them)."),
    ],
    csv: Annotated[
        Path | None,
        Opt(help="Write the tidy runs table (lazydp_bench.load_runs: one row per run) as CSV."),
    ] = None,
) -> None:
    """Print the summary of stored records: one line per training run (step time, ratio to
    SGD, throughput, energy, DP-SGD(F)'s time over it) and one per `bench noise` engine."""
    from lazydp_bench.records.tidy import benches_table, read_records, runs_table
    from lazydp_bench.report.save import save_table
    from lazydp_bench.report.tables import summary_table

    with user_errors():
        with warnings_as_lines():
            records = read_records(results)
        if not records:
            raise BenchError("no records in " + ", ".join(map(str, results)))
        runs = [r for r in records if r["kind"] == "run"]
        if csv is not None:
            save_table(runs_table(runs), csv)
    if runs:
        console.print(summary_table(runs))
    benches = benches_table(records)
    if len(benches):
        console.print(_bench_report_table(benches))
    if csv is not None:
        console.print(f"{len(runs)} run(s) -> {csv}")


def _bench_report_table(benches) -> Table:
    """One line per `bench noise` record: the pass's time, bandwidth and shares of its
    bounds ('-' where not measured)."""

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    table = Table(title="bench noise", title_justify="left")
    columns = ("engine", "size", "placement", "median ms", "GB/s (r+w)")
    for col in (*columns, "% of copy", "% of bound", "hybrid bound ms"):
        table.add_column(col, justify="left" if col in columns[:3] else "right")
    rows = benches.astype(object).where(benches.notna(), None)
    for b in rows.itertuples(index=False):
        table.add_row(
            str(b.engine),
            format_bytes(b.table_bytes),
            str(b.placement),
            fmt(b.median_ms, ".2f"),
            fmt(b.gb_per_s, ".0f"),
            fmt(b.pct_of_copy, ".1f"),
            fmt(b.pct_of_bound, ".1f"),
            fmt(b.bound_ms, ".1f"),
        )
    return table


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, raised wherever the main thread is. Not a KeyboardInterrupt, so
    no library turns it into an exit code of its own (typer 0.29 returns 130 for one,
    silently), and every `finally` and `except BaseException` runs: a sweep ends its
    running point, a file being written is removed, a store's lock is released."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


INTERRUPT_GRACE_S = 30.0  # then the signal's default action ends the process


def _interrupt(signum: int, _frame) -> None:
    """Raise Interrupted once; a second signal, or the same one resent after the grace
    period by a watchdog, ends the process at once (Python drops an exception raised
    while it runs a finalizer, so the first may be lost)."""
    import os
    import signal
    import threading

    signal.signal(signum, signal.SIG_DFL)
    watchdog = threading.Timer(INTERRUPT_GRACE_S, os.kill, (os.getpid(), signum))
    watchdog.daemon = True
    watchdog.start()
    raise Interrupted(signum)


def main() -> None:
    """Run the app; a usage error (unknown flag, a value of the wrong type) is one
    `error:` line and exit code 2, like every other bad input; Ctrl-C and SIGTERM are one
    `interrupted` line and exit code 128 + the signal (130, 143)."""
    import signal
    import sys

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        code = app(standalone_mode=False)
    except Interrupted as exc:
        how = "Ctrl-C" if exc.signum == signal.SIGINT else signal.Signals(exc.signum).name
        err_console.print(
            f"[bold red]interrupted[/] ({how}): files and records already complete are kept",
            highlight=False,
            soft_wrap=True,
        )
        code = 128 + exc.signum
    except BenchError as exc:  # raised outside a command's `user_errors`: still one line
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        code = 2
    except Exception as exc:  # click's exceptions (typer may vendor its own click)
        code = _usage_exit(exc)
    sys.exit(code or 0)


def _usage_exit(exc: Exception) -> int:
    """The exit code of a click usage error or abort, after saying it in one line; any
    other exception is re-raised."""
    name = type(exc).__name__
    if name == "Abort":
        return 130
    if getattr(exc, "exit_code", None) != 2 or not callable(getattr(exc, "format_message", None)):
        raise exc
    if name == "NoArgsIsHelpError":
        exc.show()  # the command's help, as no arguments ask for
    else:
        err_console.print(
            f"[bold red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True
        )
    return 2
