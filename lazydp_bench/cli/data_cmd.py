"""`lazydp-bench data`: Criteo files for training runs (`run --data criteo:PATH`): write a
format-exact sample, profile the access skew of real data, measure the reader's speed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lazydp_bench.cli.edge import err_console, user_errors
from lazydp_bench.errors import BenchError
from lazydp_bench.files import check_output_file
from lazydp_bench.units import format_bytes

data_app = typer.Typer(
    help="Criteo TSV data: generate a sample, profile access skew, measure the reader.",
    no_args_is_help=True,
)
console = Console()
Opt = typer.Option


def _progress(total: int | None, unit: str) -> Progress:
    columns = [TextColumn("{task.description}")]
    if total is not None:
        columns.append(BarColumn())
    columns += [TextColumn(f"{{task.completed:,.0f}} {unit}"), TimeElapsedColumn()]
    return Progress(*columns, console=err_console, transient=True)


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


@data_app.command("make-criteo")
def make_criteo_cmd(
    out: Annotated[
        Path, typer.Argument(help="File to write (gzip with --gzip); written whole or not at all.")
    ],
    lines: Annotated[int, Opt(help="Lines (examples) to write.")] = 100_000,
    seed: Annotated[int, Opt(help="Seed: the same seed writes the same bytes.")] = 0,
    alpha: Annotated[
        float, Opt(help="Zipf exponent of every categorical column's id ranks.")
    ] = 1.05,
    gzip: Annotated[bool, Opt(help="Compress the file (gzip, as Criteo ships it).")] = False,
) -> None:
    """Write a Criteo-format file: label, I1-I13 (ints, some negative, some empty), C1-C26
    (8-hex-digit ids, some empty) per line, ids Zipf-distributed over the criteo-kaggle
    table sizes, labels from a planted logistic model (~25 % clicks)."""
    from lazydp_bench.data.criteo_gen import GenSpec, make_criteo

    with user_errors():
        spec = GenSpec(lines=lines, seed=seed, alpha=alpha, gzip=gzip)
        check_output_file(out)
        start = time.perf_counter()
        with _progress(lines, "lines") as bar:
            task = bar.add_task(f"writing {out.name}", total=lines)
            summary = make_criteo(out, spec, lambda done: bar.update(task, completed=done))
        took = time.perf_counter() - start
    console.print(
        f"{summary.lines:,} lines ({format_bytes(summary.bytes)}, "
        f"{100 * summary.label_rate:.1f} % clicks) -> {out} in {took:.1f} s "
        f"({_rate(summary.lines, took)} lines/s)",
        highlight=False,
    )


Paths = Annotated[
    list[Path],
    typer.Argument(help="Criteo files (plain or gzip) or folders of day_* files or train.txt."),
]
Categorical = Annotated[
    str,
    Opt(help="Ids to rows: hash (id modulo the table's rows) or vocab (ids by frequency)."),
]
OnBadLine = Annotated[str, Opt(help="error (stop at the first bad line) or skip (count it).")]


def _data_config(paths: list[Path], categorical: str, on_bad_line: str):
    from lazydp_bench.config import DataConfig

    return DataConfig(
        paths=tuple(str(p) for p in paths), categorical=categorical, on_bad_line=on_bad_line
    )


@data_app.command("profile")
def profile_cmd(
    paths: Paths,
    workload: Annotated[
        str, Opt(help="Workload whose table sizes the ids map to (26 tables).")
    ] = "criteo-kaggle",
    table_size: Annotated[
        str,
        Opt(help="Embedding bytes the tables are scaled to, as for run (e.g. 96MB); 'full'."),
    ] = "full",
    batch_size: Annotated[
        int | None,
        Opt(help="Batch size of the distinct-rows-per-batch count (default: the workload's)."),
    ] = None,
    categorical: Categorical = "hash",
    on_bad_line: OnBadLine = "error",
    out: Annotated[
        Path,
        Opt(
            help="JSON file for the profile (replay: --distribution profile:FILE); the "
            "figure is written beside it, as OUT with .png."
        ),
    ] = Path("profile.json"),
    figure: Annotated[
        bool, Opt(help="Also draw the access-skew curves next to the JSON (OUT with .png).")
    ] = True,
) -> None:
    """Per table: rows touched, share of lookups to the top 0.1 / 1 / 10 % of rows, and
    distinct rows per batch (what LazyDP's input queue holds per step); writes the access
    curves as JSON for `run --distribution profile:FILE` and draws them (cumulative share
    of lookups vs the fraction of rows, one line per table)."""
    from lazydp_bench.data.profile import profile_data, save_profile
    from lazydp_bench.runtime.trainer import resolve_workload

    with user_errors():
        config = _data_config(paths, categorical, on_bad_line)
        wl = resolve_workload(workload, None if table_size.lower() == "full" else table_size)
        batch = wl.batch_size if batch_size is None else batch_size
        if batch < 1:
            raise BenchError(f"--batch-size must be positive, got {batch}")
        _check_outputs(out, figure=figure)
        with _progress(None, "lines") as bar:
            task = bar.add_task("profiling", total=None)
            profile = profile_data(
                config,
                wl.rows,
                batch_size=batch,
                workload=wl.name,
                table_size=table_size,
                progress=lambda done: bar.update(task, completed=done),
            )
        save_profile(profile, out)
        if figure:
            _save_figure(profile, out.with_suffix(".png"))
    console.print(profile_table(profile))
    total = profile.unique_per_batch
    per_batch = "-" if total is None else f"{total:,.1f} of {26 * batch:,} lookups"
    console.print(
        f"{profile.lines:,} lines ({profile.skipped_lines:,} skipped), {profile.batches:,} "
        f"full batches of {batch}; distinct rows per batch, all tables: {per_batch}",
        highlight=False,
    )
    console.print(f"profile -> {out} (replay: --distribution profile:{out})", highlight=False)
    if figure:
        console.print(f"access skew -> {out.with_suffix('.png')}", highlight=False)


def _check_outputs(out: Path, *, figure: bool) -> None:
    """Both files `profile` writes, checked before it reads any data: the JSON, and with
    the figure OUT with .png, which must not be the JSON itself."""
    check_output_file(out)
    if figure:
        if out.suffix.lower() == ".png":
            raise BenchError(
                f"--out {out} ends in .png, the figure's name: give the profile another "
                "suffix (e.g. .json), or --no-figure"
            )
        check_output_file(out.with_suffix(".png"))


def _save_figure(profile, path: Path) -> None:
    """The access-skew figure, written whole or not at all."""
    from lazydp_bench.report.profile_figure import access_figure
    from lazydp_bench.report.save import save_figure

    save_figure(access_figure(profile), path)


def profile_table(profile) -> Table:
    """One row per table: its rows, rows touched, top-row shares and rows per batch."""
    table = Table(title=f"access profile · {profile.workload} {profile.table_size or 'full'}")
    for col in ("table", "rows", "touched", "top 0.1%", "top 1%", "top 10%", "rows/batch"):
        table.add_column(col, justify="left" if col == "table" else "right", no_wrap=True)
    for t in profile.tables:
        unique = "-" if t.unique_per_batch is None else f"{t.unique_per_batch:,.1f}"
        table.add_row(
            t.name,
            f"{t.rows:,}",
            f"{t.rows_touched:,}",
            *(f"{100 * s:.1f}%" for s in t.top_shares),
            unique,
        )
    return table


@data_app.command("speed")
def speed_cmd(
    paths: Paths,
    batch_size: Annotated[int, Opt(help="Batch size of the batch-source pass.")] = 2048,
    source_lines: Annotated[
        int | None, Opt(help="Lines each batch-source pass reads (default: all).")
    ] = None,
    categorical: Categorical = "hash",
    on_bad_line: OnBadLine = "error",
    threads: Annotated[
        int | None, Opt(help="Parse threads (default: one per core, as a run's --host-threads).")
    ] = None,
) -> None:
    """Measure the reader (and name its parser: the compiled C one, or numpy where no C
    compiler works): lines/s of parsing alone, and of the batch source a run uses
    (parse, dense transform, row mapping, batches) with its reader in threads of this
    process and in a child process, on criteo-kaggle's full table sizes, over every line
    of the files, with --threads parse threads. While each source streams, the main
    thread times a burst of 32 small torch ops per batch (a step's launches stand-in):
    the burst's p50 / p99 / max, against the same burst with no reader, show whether the
    reader slows the thread that trains."""
    from lazydp_bench.data.criteo import data_files, iter_chunks, parse_threads, parser_name, scan
    from lazydp_bench.measure.main_latency import Burst, probe

    with user_errors():
        if batch_size < 1:
            raise BenchError(f"--batch-size must be positive, got {batch_size}")
        if source_lines is not None and source_lines < batch_size:
            raise BenchError(f"--source-lines must be at least one batch, got {source_lines}")
        config = _data_config(paths, categorical, on_bad_line)
        files = data_files(config.paths)
        threads = parse_threads(threads)
        with _progress(None, "lines") as bar:
            task = bar.add_task("parsing", total=None)
            start, lines = time.perf_counter(), 0
            for chunk in iter_chunks(files, on_bad_line, threads=threads):
                lines += chunk.lines
                bar.update(task, completed=lines)
            parse_s = time.perf_counter() - start
            bar.update(task, description="first pass (vocab)" if categorical == "vocab" else "")
            need = None if categorical == "vocab" else batch_size
            data = scan(config, need_lines=need, threads=threads)
        batches = max(2, min(lines, source_lines or lines) // batch_size)
        burst = Burst()
        idle = probe(None, batches - 1, burst)
        passes = {
            mode: _source_pass(data, mode, batches, batch_size, threads, burst)
            for mode in ("thread", "process")
        }
    console.print(
        f"{threads} parse thread{'s' if threads > 1 else ''}\n"
        f"parser: {parser_name()}\n"
        f"parse: {lines:,} lines in {parse_s:.2f} s = {_rate(lines, parse_s)} lines/s",
        highlight=False,
    )
    for mode, (took, start_s, _) in passes.items():
        startup = f" (+ {start_s:.2f} s process start)" if start_s is not None else ""
        console.print(
            f"batch source, {_WHERE[mode]}: {batches:,} batches of {batch_size} in "
            f"{took:.2f} s = {_rate(batches * batch_size, took)} lines/s{startup}",
            highlight=False,
        )
    console.print(f"main thread, {burst.ops} small torch ops per batch, p50 / p99 / max:")
    console.print(f"  no reader: {idle.describe()}", highlight=False)
    for mode, (_, _, latency) in passes.items():
        console.print(f"  {_WHERE[mode]}: {latency.describe()}", highlight=False)


_WHERE = {"thread": "reader in threads", "process": "reader in a process"}


def _source_pass(data, mode: str, batches: int, batch_size: int, threads: int, burst):
    """(seconds, process start-up or None, main-thread latency) of `batches` batches
    through a CPU batch source with its reader in `mode`; the seconds leave out a reader
    process's start (spawn and imports, until its first batch)."""
    import torch

    from lazydp_bench.data.criteo import CriteoBatchSource
    from lazydp_bench.data.criteo_gen import KAGGLE_ROWS
    from lazydp_bench.measure.main_latency import probe

    err_console.print(f"batch source, {_WHERE[mode]} ...", highlight=False)
    cpu = torch.device("cpu")
    start = time.perf_counter()
    source = CriteoBatchSource(
        data,
        KAGGLE_ROWS,
        batch_size=batch_size,
        table_device=cpu,
        mlp_device=cpu,
        dtype=torch.float32,
        threads=threads,
        reader=mode,
    )
    try:
        latency = probe(source.advance, batches - 1, burst)
        took = time.perf_counter() - start
        start_s = source.stats()["reader_start_s"]
    finally:
        source.close()
    return took - (start_s or 0.0), start_s, latency
