"""What the commands print at an 80-column terminal: names and sizes whole, no line past
the width; help text with its bracketed defaults; `plot`'s one line per figure."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import typer.main
from rich.text import Text

from lazydp_bench.cli.app import app
from lazydp_bench.workloads import available_workloads
from tests.conftest import ROOT, cli

WIDTH = 80


def cli80(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess at an 80-column terminal."""
    return cli(*args, columns=WIDTH)


def assert_fits(text: str) -> None:
    """Nothing cut (rich's ellipsis) and no line wider than the terminal."""
    assert "…" not in text, text
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not long, long


def rows_naming(text: str, name: str) -> list[str]:
    """The table rows whose first cell starts with `name`."""
    return [line for line in text.splitlines() if line.startswith(f"│ {name}")]


def test_workloads_names_whole_at_80_columns():
    res = cli80("workloads")
    assert res.returncode == 0, res.stderr
    assert_fits(res.stdout)
    for name in available_workloads():
        assert rows_naming(res.stdout, f"{name} "), name
    assert "96.1 GB" in res.stdout and "479-1024-1024-512-256-1" in res.stdout


def test_run_tables_read_at_80_columns(tmp_path):
    res = cli80(
        "run",
        "--workload",
        "tiny",
        "--table-size",
        "full",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--placement",
        "cpu",
        "--algo",
        "dpsgd-b,dpsgd-f",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    assert_fits(res.stdout)
    for algo in ("dpsgd-b", "dpsgd-f"):  # the summary's rows, with their noise engine
        assert any("ok" in row for row in rows_naming(res.stdout, f"{algo} ")), algo
    assert "└ Noisy gradient generation" in res.stdout  # a stage name on one line
    assert "summary" in res.stdout and "vs DP-SGD(F)" in res.stdout


def test_bench_noise_table_reads_at_80_columns(tmp_path):
    res = cli80(
        "bench",
        "noise",
        "--placement",
        "cpu",
        "--size",
        "1MiB",
        "--repeats",
        "1",
        "--impl",
        "torch,fused",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    assert_fits(res.stdout)
    assert any("%" in row for row in rows_naming(res.stdout, "torch-chunked "))
    # `fused` on the host: the compiled engine, or host threads where it cannot be built
    from lazydp_bench.dp.noise.host_philox import find_compiler, load_kernels

    host = "host-philox (" if load_kernels(find_compiler()).lib else "host-threaded ("
    assert any("%" in row for row in rows_naming(res.stdout, host))


def test_help_shows_bracketed_defaults():
    want = {
        ("run",): ["Batch size (default: the workload's)", "(default: MemAvailable)"],
        ("sweep",): ["(default: sgd,dpsgd-f,lazydp)", "(default: all cores)"],
        ("bench", "noise"): ["torch,fused; hybrid: fused,streamed,roundtrip)", "(default: all"],
        ("info",): ["Host RAM to plan with (default: MemAvailable)."],
        ("plot",): ["--allow-mixed-commits <bool> Draw records", "--verbose <bool> Also print"],
    }
    with ThreadPoolExecutor() as pool:  # each call is a fresh interpreter: run them at once
        helps = list(pool.map(lambda command: cli80(*command, "--help"), want))
    for (command, texts), res in zip(want.items(), helps, strict=True):
        assert res.returncode == 0, res.stderr
        assert_fits(res.stdout)
        flat = " ".join(res.stdout.replace("│", " ").split())
        for text in texts:
            assert text in flat, (command, text)
        assert not re.search(r"\w \.(\s|$)", flat), (command, flat)  # "Host threads ."


def test_no_help_text_is_eaten_as_markup():
    """Every command's description and every option's help prints as written: rich
    markup (what typer's help renders) leaves none of it out."""

    def commands(cmd, path: str):
        yield path, cmd
        if hasattr(cmd, "commands"):  # a group (of typer's click, which may be vendored)
            for name, sub in cmd.commands.items():
                yield from commands(sub, f"{path} {name}".strip())

    every = list(commands(typer.main.get_command(app), ""))
    assert {"run", "sweep", "plot", "info", "workloads", "bench noise"} <= {p for p, _ in every}
    eaten = [
        (path, name, text)
        for path, cmd in every
        for name, text in [
            ("", cmd.help),
            *((p.name, getattr(p, "help", None)) for p in cmd.params),
        ]
        if text and Text.from_markup(text).plain != text
    ]
    assert not eaten, eaten


def test_plot_prints_one_line_per_figure(tmp_path):
    out = tmp_path / "figs"
    data = str(ROOT / "tests" / "data" / "h100_records.jsonl")
    res = cli80("plot", data, "--out", str(out), "--format", "png")
    assert res.returncode == 0, res.stderr
    drawn = sorted(p.stem for p in out.glob("*.png"))
    assert drawn
    lines = res.stdout.splitlines()
    assert len(lines) == len(drawn), res.stdout  # no tables
    for name in drawn:
        (line,) = [line for line in lines if line.startswith(f"{name}: ")]
        assert re.search(r"\d+ points? drawn, \d+ missing", line), line
        assert str(out / f"{name}.png") in line and str(out / f"{name}.csv") in line
    assert "fig3: 6 points drawn, 3 missing (2 not run, 1 no baseline)" in res.stdout
    for line in res.stderr.splitlines():  # notes and warnings one line each
        assert re.match(r"(note|warning): |[\w-]+: skipped", line), line

    verbose = cli80(
        "plot", data, "--out", str(out), "--format", "png", "--figure", "fig13a", "--verbose"
    )
    assert verbose.returncode == 0, verbose.stderr
    first, *tables = verbose.stdout.splitlines()
    assert first.startswith("fig13a: 9 points drawn")
    assert any(line.startswith("┃ table") for line in tables)
    assert any(line.startswith("│ 9.6 GB") for line in tables)  # sizes in bytes units
    assert_fits("\n".join(tables))
