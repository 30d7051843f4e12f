"""The CLI end to end on the tiny workload, and every bad input's one-line error."""

import json

import pytest

from lazydp_bench.measure.stages import Stage
from tests.conftest import ROOT, cli

TINY = ("--workload", "tiny", "--table-size", "full", "--iterations", "3", "--warmup", "1")


def test_run_writes_one_complete_record_with_every_stage(tmp_path):
    out = tmp_path / "res"
    res = cli(
        "run",
        "--algo",
        "lazydp",
        *TINY,
        "--noise-multiplier",
        "1.1",
        "--noise-impl",
        "torch",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["status"] == "ok" and rec["schema_version"] == 2
    assert rec["config"]["algo"] == "lazydp" and rec["config"]["placement"] == "cpu"
    assert rec["privacy"]["noise_multiplier"] == 1.1 and rec["privacy"]["dp_equivalent"] is True
    assert rec["privacy"]["epsilon_rdp"] > 0 and rec["privacy"]["epsilon_prv"] > 0
    names = {s["name"] for s in rec["stages"]}
    one_process = {Stage.NOISY_UPDATE_FUSED.value, Stage.SELECTION.value, Stage.COMM.value}
    want = {s.value for s in Stage} - one_process
    assert names == want
    top = sum(s["mean_ms"] for s in rec["stages"] if s["parent"] is None)
    assert top == pytest.approx(rec["timing"]["step_mean_ms"], rel=1e-6)
    assert rec["timing"]["measured_iters"] == 3 and len(rec["timing"]["step_ms_raw"]) == 3
    assert rec["timing"]["mode"] == "sync_wall"
    assert rec["memory"]["history_table_bytes"] == 467 * 4
    assert rec["memory"]["history_table_device"] == "cpu"
    assert rec["config"]["noise_update"] == "merged"  # the host's threaded merge
    assert rec["timing"]["cuda_graph"] is False
    assert "cpu placement" in rec["timing"]["cuda_graph_blocker"]
    assert rec["config"]["cuda_graph"] == "auto"
    assert rec["timing"]["flush_ms"] is not None
    assert rec["energy"]["gpu_j_per_step"] is None and rec["energy"]["reason"]
    assert rec["env"]["torch"] and "commit" in rec["env"]
    assert "transparent_hugepage" in rec["env"]
    assert rec["memory"]["table_huge_pages_advised"] is False  # smaller than one huge page
    assert "host_huge_pages_bytes" in rec["memory"]
    assert rec["timing"]["host_cpu"] is None or rec["timing"]["host_cpu"]["steal_pct"] >= 0
    assert "Forward" in res.stdout and "step time" in res.stdout


def test_run_several_algorithms_appends_one_record_each(tmp_path):
    """One record per algorithm; --clipping is for the private ones of the list."""
    res = cli(
        "run",
        "--algo",
        "sgd,eana",
        *TINY,
        "--clipping",
        "bookkeeping",
        "--noise-multiplier",
        "1",
        "--no-breakdown",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["config"]["algo"] for r in recs] == ["sgd", "eana"]
    assert [r["config"]["clipping"] for r in recs] == ["none", "bookkeeping"]
    assert recs[0]["privacy"] == {"private": False, "dp_equivalent": None}
    assert recs[1]["privacy"]["dp_equivalent"] is False
    assert recs[1]["privacy"]["epsilon"] is None
    assert all(r["stages"] == [] for r in recs)
    assert "NOT DP-SGD-equivalent" in res.stdout
    assert "summary" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workload", "nope"), "unknown workload 'nope' (valid:"),
        (("--algo", "sgd,bogus"), "unknown algorithm 'bogus' (valid: dpsgd-b"),
        (("--table-size", "12XB"), "unknown size unit"),
        (("--table-size", "lots"), "cannot parse size"),
        (("--batch-size", "0"), "--batch-size must be positive"),
        (("--iterations", "-1"), "--iterations must be positive"),
        (("--placement", "tpu"), "unknown placement"),
        (("--distribution", "gauss"), "unknown distribution"),
        (("--table-size", "30TB", "--placement", "cpu"), "does not fit in placement 'cpu'"),
        (("--table-size", "1GB", "--host-mem-limit", "100MB", "--placement", "cpu"), "host needs"),
        (("--algo", "lazydp", "--momentum", "0.9"), "plain SGD"),
        (("--algo", "sgd", "--clipping", "ghost"), "--clipping applies to private"),
        (("--placement", "hybrid"), "needs a CUDA GPU"),
        (("--chunk-size", "1KB"), "chunk bound must be at least 4 KiB"),
        (("--cuda-graph", "always"), "unknown --cuda-graph"),
        (("--cuda-graph", "on", "--placement", "cpu"), "cuda-graph on: cpu placement runs no GPU"),
        (("--table-size", "1e400GB"), "size '1e400GB' is not a finite number of bytes"),
        (("--seed", "-1"), "Invalid value for '--seed'"),
        (("--iterations", "1000000000000"), "above 1,000,000 steps"),
        (("--algo", ""), "expected a comma list of one or more values"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    res = cli("run", *args, "--out", str(out))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert message in " ".join(res.stderr.split())
    assert not out.exists()


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = cli("run", *TINY, "--algo", "sgd", "--out", str(blocker / "sub"))
    assert res.returncode == 2 and "cannot write results" in res.stderr
    assert "Traceback" not in res.stderr


def test_workloads_and_info_and_help():
    res = cli("workloads")
    assert res.returncode == 0
    for name in ("mlperf-dlrm", "rmc1", "rmc2", "rmc3", "criteo-kaggle", "96.1 GB"):
        assert name in res.stdout
    info = cli("info")
    assert info.returncode == 0 and "largest mlperf-dlrm table, cpu" in info.stdout
    helps = cli("run", "--help")
    assert "--table-size" in helps.stdout and "lazydp" in helps.stdout


def test_verify_cli_passes_on_cpu():
    res = cli("verify", "--algo", "lazydp", "--steps", "6", "--placement", "cpu")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5/5 checks as expected" in res.stdout
    for algo, bad, message in (
        ("lazydp", "cuda", "--placement must be one of cpu, gpu, hybrid, hybrid-host"),
        ("lazydp", "gpu", "needs a"),
        ("opacus", "cpu", "draws its own"),
    ):
        res = cli("verify", "--algo", algo, "--placement", bad)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_bench_noise_host_writes_records(tmp_path):
    res = cli(
        "bench",
        "noise",
        "--placement",
        "cpu",
        "--size",
        "8MiB",
        "--repeats",
        "2",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["config"]["noise_impl"] for r in recs] == ["torch", "fused"]
    assert all(r["bench"]["achieved_bytes_per_s"] > 0 for r in recs)
    bad = cli("bench", "noise", "--placement", "gpu", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "needs a CUDA GPU" in bad.stderr
    old = cli("bench", "noise", "--placement", "host", "--out", str(tmp_path / "y"))
    assert old.returncode == 2 and "--placement must be gpu, cpu or hybrid" in old.stderr
    hybrid = cli("bench", "noise", "--placement", "hybrid", "--out", str(tmp_path / "z"))
    assert hybrid.returncode == 2 and "placement 'hybrid' needs a CUDA GPU" in hybrid.stderr
    for impl in ("streamed", "roundtrip"):
        helped = cli("bench", "noise", "--placement", "cpu", "--impl", impl)
        assert helped.returncode == 2 and f"the {impl} engine" in helped.stderr


def test_sweep_accepts_every_run_option():
    """One option set: every option of `run` is an option of `sweep` (axes as comma lists),
    with the same default, so no run configuration is out of a sweep's reach."""
    import typer.main

    from lazydp_bench.cli import app

    commands = typer.main.get_command(app).commands
    run = {p.name: p for p in commands["run"].params}
    sweep = {p.name: p for p in commands["sweep"].params}
    assert set(run) <= set(sweep), set(run) - set(sweep)
    axes = {"algo", "workload", "table_size", "batch_size", "pooling", "distribution"}
    axes |= {"placement", "gpus"}
    for name, param in run.items():
        if name not in axes:
            assert sweep[name].default == param.default, name


def test_sweep_passes_run_options_into_its_points(tmp_path):
    """Options that only `run` had before (--lr, --lr-decay, --epsilon, --dtype,
    --chunk-size, --host-threads) reach the sweep's records."""
    res = cli(
        "sweep",
        "--workload",
        "tiny",
        "--algo",
        "sgd",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--lr",
        "0.25",
        "--lr-decay",
        "0.5",
        "--dtype",
        "float64",
        "--chunk-size",
        "1MiB",
        "--host-threads",
        "1",
        "--out",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    (rec,) = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    config = rec["config"]
    assert rec["status"] == "ok"
    assert (config["lr"], config["lr_decay"], config["dtype"]) == (0.25, 0.5, "float64")
    assert (config["chunk_bytes"], config["host_threads"]) == (2**20, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--noise-multiplier", "nan"), "--noise-multiplier must be a finite number"),
        (("--noise-multiplier", "inf"), "--noise-multiplier must be a finite number"),
        (("--lr", "inf"), "--lr must be a finite number > 0"),
        (("--lr-decay", "nan"), "--lr-decay must be a finite number >= 0"),
        (("--clip-norm", "inf"), "--clip-norm must be a finite number > 0"),
        (("--epsilon", "inf"), "--epsilon must be a finite number > 0"),
        (("--epochs", "inf"), "--epochs must be a finite number > 0"),
        (("--noise-multiplier", "1", "--epsilon", "3"), "not both"),
        (("--epsilon", "1e-9"), "no noise multiplier reaches epsilon 1e-09"),
    ],
)
def test_nonsense_privacy_and_lr_values_are_refused(tmp_path, args, message):
    """nan/inf once ran (recording `lr: null`, or sigma 10 for epsilon inf) or hung the
    RDP accountant; a sigma and an epsilon together silently ignored the epsilon."""
    out = tmp_path / "never"
    res = cli("run", "--algo", "dpsgd-f", *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert message in " ".join(res.stderr.split())
    assert not out.exists()


def test_plot_names_bad_lines_in_one_warning_line(tmp_path):
    """A bad line never breaks a command: `plot` draws from the good records and says what
    it skipped on one line (no Python warning dump)."""
    records = (ROOT / "tests" / "data" / "h100_records.jsonl").read_text()
    (tmp_path / "runs.jsonl").write_text(records + "[1, 2]\n")
    res = cli("plot", str(tmp_path), "--figure", "fig13a", "--out", str(tmp_path / "figs"))
    assert res.returncode == 0, res.stderr
    assert "warning: skipped 1 malformed line(s)" in " ".join(res.stderr.split())
    assert "UserWarning" not in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "figs" / "fig13a.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--bogus"), "error: No such option: --bogus"),
        (("run", "--batch-size", "x"), "error: Invalid value for '--batch-size'"),
        (("sweep", "--pooling"), "error: Option '--pooling' requires an argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, message):
    """Typer's usage errors printed a 5-line box without `error:`; now like every other
    bad input."""
    res = cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr


def test_a_bench_error_outside_a_commands_checks_is_still_one_line(monkeypatch, capsys):
    """E.g. the record store failing to append after a run: no traceback, exit 2."""
    import importlib

    from lazydp_bench.errors import BenchError

    app_module = importlib.import_module("lazydp_bench.cli.app")  # the module, not the Typer

    def failing(**_kwargs):
        raise BenchError("cannot append to runs.jsonl: No space left on device")

    monkeypatch.setattr(app_module, "app", failing)
    with pytest.raises(SystemExit) as exited:
        app_module.main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: cannot append to runs.jsonl: No space left on device"


def test_empty_out_is_refused_not_the_current_directory(tmp_path):
    """`--out ""` once wrote runs.jsonl into the current directory."""
    res = cli("run", *TINY, "--algo", "sgd", "--out", "", cwd=tmp_path)
    assert res.returncode == 2
    assert "Invalid value for '--out': needs a directory" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--algo", "foo"), "unknown algorithm 'foo'"),
        (("--algo", ""), "expected a comma list"),
        (("--batch-size", "0"), "--batch-size values must be positive, got 0"),
        (("--pooling", "4,0"), "--pooling values must be positive, got 0"),
        (("--point-timeout", "nan"), "--point-timeout must be a finite number > 0"),
        (("--point-timeout", "inf"), "--point-timeout must be a finite number > 0"),
    ],
)
def test_sweep_refuses_bad_axes_before_any_point(tmp_path, args, message):
    """`--algo foo` once exited 0 with a `skipped` record, `--algo ""` was ignored,
    `--batch-size 0` fell back to the workload's batch, `--point-timeout nan` started a
    worker first."""
    out = tmp_path / "never"
    res = cli("sweep", "--workload", "tiny", "--placement", "cpu", *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert message in " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--host-threads", "0"), "--host-threads must be positive, got 0"),
        (("--host-threads", "-1"), "--host-threads must be positive, got -1"),
        (("--chunk-size", "1KB"), "chunk bound must be at least 4 KiB"),
        (("--size", "1PB"), "unknown size unit"),
        (("--size", "1000TB"), "needs 1e+03 TB"),
    ],
)
def test_bench_noise_refuses_bad_input_before_allocating(tmp_path, args, message):
    """`--host-threads 0` silently meant all cores, 1 KB chunks were accepted, and a size
    larger than the machine started filling memory (or a traceback after creating
    runs.jsonl)."""
    out = tmp_path / "never"
    res = cli("bench", "noise", "--placement", "cpu", *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert message in " ".join(res.stderr.split())
    assert not out.exists()


def test_verify_refuses_a_negative_seed():
    res = cli("verify", "--seed", "-1")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: Invalid value for '--seed'")


def test_host_mem_limit_above_physical_ram_is_warned():
    res = cli(
        "sweep",
        "--workload",
        "tiny",
        "--placement",
        "cpu",
        "--algo",
        "sgd",
        "--host-mem-limit",
        "900TB",
        "--dry-run",
    )
    assert res.returncode == 0, res.stderr
    assert "warning: --host-mem-limit 900 TB is above this machine's RAM" in " ".join(
        res.stderr.split()
    )


def test_bad_workload_toml_refused_before_a_record(tmp_path):
    """pooling = 0 in a TOML once ran, wrote an error record and exited 1."""
    toml = (ROOT / "workloads" / "tiny.toml").read_text().replace("pooling = 3", "pooling = 0")
    (tmp_path / "bad.toml").write_text(toml)
    out = tmp_path / "never"
    res = cli(
        "run", "--workload", str(tmp_path / "bad.toml"), "--algo", "lazydp", "--out", str(out)
    )
    assert res.returncode == 2
    assert "pooling must be positive" in res.stderr
    assert not out.exists()
