"""scripts/reproduce_paper.sh: every listed part runs commands the CLI accepts (each sweep
planned by `sweep --dry-run` for the H200 it names), sweeps resume, repeats and the x2
parts write where they say, bad parts are refused before anything runs, and the plot part
draws the figures and the fidelity table from a results folder."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from lazydp_bench.cli.app import app
from lazydp_bench.config import RunConfig
from lazydp_bench.sweep.presets import PRESETS, expand_preset
from lazydp_bench.sweep.runner import grid_configs
from tests.conftest import ROOT
from tests.report.test_plots import FIXTURE

SCRIPT = ROOT / "scripts" / "reproduce_paper.sh"
RECORDER = "#!/bin/sh\nprintf 'LDP'\nfor a in \"$@\"; do printf '\\t%s' \"$a\"; done\necho\n"


def _script(*args: str, out=None, cli: str | None = None, data=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    env.pop("OUT", None)
    if out is not None:
        env["OUT"] = str(out)
    if cli is not None:
        env["LAZYDP_BENCH"] = cli
    if data is not None:
        env["DATA"] = str(data)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )


def _parts() -> dict[str, str]:
    res = _script("--list")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n\n")[1].splitlines()[1:]
    return {line.split()[0]: line.split()[1] for line in lines}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Each part's CLI commands (argument lists), recorded instead of run."""
    tmp = tmp_path_factory.mktemp("reproduce")
    recorder = tmp / "rec.sh"
    recorder.write_text(RECORDER)
    out = {}
    for part in _parts():
        if part == "plot":
            continue
        res = _script(part, out=tmp / "out", cli=f"sh {recorder}", data=tmp / "data")
        assert res.returncode == 0, (part, res.stderr)
        out[part] = [
            line.split("\t")[1:] for line in res.stdout.splitlines() if line.startswith("LDP")
        ]
    return tmp, out


def test_every_part_has_a_machine_an_estimate_and_commands(recorded):
    _, commands = recorded
    listing = _script("--list").stdout
    for part, machine in _parts().items():
        assert machine in ("h200", "x2", "any")
        line = next(x for x in listing.splitlines() if x.startswith(part + " "))
        minutes = int(line.split()[2].lstrip("~"))
        assert 1 <= minutes <= 9, line  # each fits a 10-minute window
        if part != "plot":
            assert commands[part], part


def test_every_sweep_resumes_and_is_accepted_by_a_dry_run(recorded, tmp_path):
    tmp, commands = recorded
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    runner = CliRunner()
    for name in ("utility-train.tsv", "utility-heldout.tsv"):  # one batch of 512 each
        made = runner.invoke(app, ["data", "make-criteo", str(data / name), "--lines", "600"])
        assert made.exit_code == 0, made.output
    sweeps = [(p, c) for p, cs in commands.items() for c in cs if c[0] == "sweep"]
    assert len(sweeps) >= 30
    for part, argv in sweeps:
        assert "--resume" in argv, (part, argv)
        plan = [*argv, "--dry-run", "--gpu-mem", "141GB"]
        if "--host-mem-limit" not in argv:
            plan += ["--host-mem-limit", "128GiB"]
        res = runner.invoke(app, plan, env={"COLUMNS": "200"})
        assert res.exit_code == 0, (part, argv, res.output[-2000:])


def test_the_other_commands_are_known_subcommands(recorded):
    _, commands = recorded
    seen = {
        tuple(c[:2]) if c[0] in ("bench", "data") else (c[0],)
        for cs in commands.values()
        for c in cs
    }
    assert seen <= {("sweep",), ("bench", "noise"), ("data", "make-criteo"), ("data", "profile")}
    assert ("data", "profile") in seen and ("bench", "noise") in seen


def test_x2_parts_shard_over_two_gpus_and_plan_256_gib_of_host_ram(recorded):
    _, commands = recorded
    [gpus] = commands["x2-gpus"]
    assert gpus[gpus.index("--preset") + 1] == "fig13a-x2"
    [hybrid] = commands["x2-hybrid-192"]
    assert hybrid[hybrid.index("--host-mem-limit") + 1] == "256GiB"
    assert hybrid[hybrid.index("--table-size") + 1] == "192GB"
    assert all(
        "--gpus" not in c and "fig13a-x2" not in c
        for part, cs in commands.items()
        if not part.startswith("x2-")
        for c in cs
    )


def test_x2_parts_write_apart_and_time_like_the_one_gpu_host(recorded):
    """The x2 records go to $OUT/x2 (a resumed H200 sweep's skipped 192 GB stub would
    otherwise stand for x2-hybrid-192's point), at the one-GPU host's 16 threads, and
    the 2-GPU bars are timed end to end as the one-GPU bars beside them are."""
    tmp, commands = recorded
    for part in ("x2-gpus", "x2-hybrid-192"):
        [argv] = commands[part]
        assert argv[argv.index("--out") + 1] == str(tmp / "out" / "x2"), part
        assert argv[argv.index("--host-threads") + 1] == "16", part
        assert "--no-breakdown" in argv, part
    assert all(
        c[c.index("--out") + 1] == str(tmp / "out")
        for part, cs in commands.items()
        if not part.startswith(("x2-", "utility", "criteo"))
        for c in cs
        if c[0] == "sweep"
    )


def test_plot_part_reads_the_x2_records(tmp_path):
    recorder = tmp_path / "rec.sh"
    recorder.write_text(RECORDER)
    out = tmp_path / "o"
    for folder in (out, out / "repeat-2", out / "x2", out / "x2" / "repeat-2"):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURE, folder / "runs.jsonl")
    res = _script("plot", out=out, cli=f"sh {recorder}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| machine · placement |" in (out / "headline.md").read_text()
    [plot] = [line.split("\t")[1:] for line in res.stdout.splitlines() if line.startswith("LDP")]
    files = plot[1 : plot.index("--figure")]
    assert files == [
        str(out / "runs.jsonl"),
        str(out / "repeat-2" / "runs.jsonl"),
        str(out / "x2" / "runs.jsonl"),
        str(out / "x2" / "repeat-2" / "runs.jsonl"),
    ]
    (out / "runs.jsonl").unlink()  # the x2 machine alone (all-x2): only $OUT/x2
    shutil.rmtree(out / "repeat-2")
    res = _script("plot", out=out, cli=f"sh {recorder}")
    assert res.returncode == 0, res.stderr[-2000:]
    [plot] = [line.split("\t")[1:] for line in res.stdout.splitlines() if line.startswith("LDP")]
    assert plot[1 : plot.index("--figure")] == files[2:]


def test_graph_replay_parts_measure_long_enough_for_the_energy_counter(recorded):
    _, commands = recorded
    for argv in commands["fig10-gpu"] + commands["fig10-hybrid"] + commands["fig10-hybrid-host"]:
        assert int(argv[argv.index("--iterations") + 1]) >= 1000
        assert float(argv[argv.index("--max-seconds") + 1]) >= 1


def test_a_repeat_writes_to_its_own_folder(tmp_path):
    recorder = tmp_path / "rec.sh"
    recorder.write_text(RECORDER)
    res = _script("fig3-hybrid:2", out=tmp_path / "o", cli=f"sh {recorder}")
    assert res.returncode == 0, res.stderr
    [argv] = [line.split("\t")[1:] for line in res.stdout.splitlines() if line.startswith("LDP")]
    assert argv[argv.index("--out") + 1] == str(tmp_path / "o" / "repeat-2")


@pytest.mark.parametrize(
    ("args", "out", "message"),
    [
        (("bogus",), True, "error: unknown part bogus"),
        (("roofline:1",), True, "error: unknown part roofline:1"),
        (("fig3-gpu", "nope"), True, "error: unknown part nope"),
        (("plot",), False, "error: set OUT"),
    ],
)
def test_bad_parts_are_refused_before_anything_runs(tmp_path, args, out, message):
    recorder = tmp_path / "rec.sh"
    recorder.write_text(RECORDER)
    res = _script(*args, out=tmp_path / "o" if out else None, cli=f"sh {recorder}")
    assert res.returncode == 2
    assert res.stderr.strip().startswith(message)
    assert "LDP" not in res.stdout
    assert not (tmp_path / "o").exists()


def test_fig13a_x2_preset_shards_the_two_largest_sizes_and_is_not_in_paper():
    configs = grid_configs(RunConfig(), expand_preset("fig13a-x2"))
    assert {(c.algo, c.table_size, c.gpus, c.placement) for c in configs} == {
        (a, s, 2, "gpu") for a in ("sgd", "dpsgd-f", "lazydp") for s in ("96GB", "192GB")
    }
    assert "fig13a-x2" not in PRESETS["paper"]["figures"]
    paper = grid_configs(RunConfig(), expand_preset("paper"))
    assert {c.gpus for c in paper} == {1}


def test_plot_part_draws_figures_and_the_fidelity_table(tmp_path):
    out = tmp_path / "ref"
    (out / "repeat-2").mkdir(parents=True)
    shutil.copy(FIXTURE, out / "runs.jsonl")
    shutil.copy(FIXTURE, out / "repeat-2" / "runs.jsonl")
    res = _script("plot", out=out)
    assert res.returncode == 0, res.stderr[-3000:]
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"fig13a.png", "fig13a.pdf", "fig13a.csv", "noise-roofline.png"} <= figures
    table = (out / "fidelity.md").read_text()
    assert table.startswith("| fig | placement | paper's claim |")


def test_plot_part_leaves_the_tables_whole_when_a_step_fails(tmp_path):
    """A fidelity script that dies half-way leaves the previous table and no temporary
    file, and the part (and the script) fails; the headline table after it is still
    written, whole and with the umask's mode."""
    recorder = tmp_path / "rec.sh"
    recorder.write_text(RECORDER)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(
        '#!/bin/sh\ncase "$1" in *headline.py) echo "| headline |"; exit 0 ;; esac\n'
        "echo '| fig | half a table'\nexit 1\n"
    )
    (bin_dir / "python3").chmod(0o755)
    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(FIXTURE, out / "runs.jsonl")
    (out / "fidelity.md").write_text("old fidelity\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(
        ["bash", str(SCRIPT), "plot"],
        capture_output=True,
        text=True,
        env={**env, "OUT": str(out), "LAZYDP_BENCH": f"sh {recorder}"},
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert res.returncode == 1, res.stderr
    assert (out / "fidelity.md").read_text() == "old fidelity\n"
    assert (out / "headline.md").read_text() == "| headline |\n"
    assert (out / "headline.md").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["fidelity.md", "headline.md", "runs.jsonl"]
