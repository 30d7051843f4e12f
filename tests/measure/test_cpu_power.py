"""Host CPU energy where RAPL is unreadable: the TDP table and a machine's share of a
socket, the estimate (rated W x busy CPU-seconds / CPUs) against hand computations from
fake /proc/stat samples, RAPL's precedence, an unknown CPU's reason, `--cpu-tdp` end to
end and its bad values, and records with and without the new fields."""

from __future__ import annotations

import json
import os

import pytest

from lazydp_bench.config import RunConfig
from lazydp_bench.errors import BenchError
from lazydp_bench.measure.cpu_power import (
    HostCpu,
    RatedPower,
    check_cpu_tdp,
    lookup,
    parse_cpuinfo,
    rated_power,
)
from lazydp_bench.measure.energy import CPU_ESTIMATE, EnergyMeter
from lazydp_bench.measure.host_cpu import busy_cpu_seconds
from lazydp_bench.records.store import append_record, load_records, upgrade
from lazydp_bench.sweep.runner import point_key
from tests.conftest import cli

HZ = os.sysconf("SC_CLK_TCK")
# /proc/stat "cpu" jiffies: user nice system idle iowait irq softirq steal
START = [100, 0, 50, 800, 10, 0, 0, 40]
END = [160, 0, 70, 900, 10, 0, 0, 60]  # +60 user +20 system +100 idle +20 steal: 80 busy


def cpuinfo(model: str, logical: int, siblings: int, cores: int) -> str:
    """A /proc/cpuinfo text of `logical` processors reporting `siblings`/`cores`."""
    block = (
        "processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
        "model name\t: {model}\nsiblings\t: {siblings}\ncpu cores\t: {cores}\n"
    )
    return "\n".join(
        block.format(i=i, model=model, siblings=siblings, cores=cores) for i in range(logical)
    )


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("Intel(R) Xeon(R) Platinum 8480+", "Intel Xeon Platinum 8480+"),
        ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K"),
        ("11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz", "Intel Core i7-1165G7"),
        ("AMD EPYC 7742 64-Core Processor", "AMD EPYC 7742"),
    ],
)
def test_table_finds_a_model_however_it_is_spelled(model, name):
    assert lookup(model).name == name


@pytest.mark.parametrize(
    "model",
    # generic names of virtual machines (the H200 hosts', this machine's), a SKU that is
    # not the table's (8480 without its +), nothing
    ["Intel(R) Xeon(R) Processor", "AMD EPYC", "Intel(R) Xeon(R) Platinum 8480", "", None],
)
def test_a_name_without_a_known_sku_finds_nothing(model):
    assert lookup(model) is None


def test_cpuinfo_gives_logical_cpus_and_threads_per_core():
    host = parse_cpuinfo(cpuinfo("Intel(R) Xeon(R) Platinum 8480+", 16, 16, 8))
    assert (host.logical_cpus, host.threads_per_core, host.cores) == (16, 2.0, 8.0)
    assert host.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert host.family_model == "family 6 model 143"


@pytest.mark.parametrize(
    ("logical", "siblings", "cores", "watts", "share"),
    [
        (16, 16, 8, 350 * 8 / 56, 8 / 56),  # a 16-vCPU VM reporting 2 threads per core
        (16, 16, 16, 350 * 16 / 56, 16 / 56),  # the same VM reporting 1 thread per core
        (224, 112, 56, 700.0, 2.0),  # two whole sockets
    ],
)
def test_table_tdp_is_scaled_to_this_machines_share_of_the_socket(
    logical, siblings, cores, watts, share
):
    host = parse_cpuinfo(cpuinfo("Intel(R) Xeon(R) Platinum 8480+", logical, siblings, cores))
    got = rated_power(None, host)
    assert got.watts == pytest.approx(watts) and got.share == pytest.approx(share)
    assert got.source == "table: Intel Xeon Platinum 8480+"
    assert got.logical_cpus == logical


def test_stated_tdp_is_used_as_given_and_wins_over_the_table():
    host = parse_cpuinfo(cpuinfo("Intel(R) Xeon(R) Platinum 8480+", 16, 16, 8))
    assert rated_power(120.0, host) == RatedPower(120.0, "--cpu-tdp", None, 16)


def test_unknown_cpu_gives_a_reason_not_a_number():
    host = parse_cpuinfo(cpuinfo("Intel(R) Xeon(R) Processor", 16, 16, 8))
    reason = rated_power(None, host)
    assert isinstance(reason, str)
    assert "'Intel(R) Xeon(R) Processor', family 6 model 143" in reason
    assert "--cpu-tdp WATTS" in reason


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan"), float("inf")])
def test_bad_tdp_is_refused(bad):
    with pytest.raises(BenchError, match="--cpu-tdp must be a positive number of watts"):
        check_cpu_tdp(bad)
    with pytest.raises(BenchError, match="--cpu-tdp"):
        RunConfig(cpu_tdp_w=bad)


def test_busy_seconds_leave_out_idle_iowait_and_steal():
    assert busy_cpu_seconds(START, END) == pytest.approx(80 / HZ)
    assert busy_cpu_seconds(START, START) is None  # the clock did not tick: unknown
    assert busy_cpu_seconds(None, END) is None


def sampler(*samples):
    """A /proc/stat sampler returning `samples` in turn (begin, [pause, resume,] end)."""
    it = iter(samples)
    return lambda: next(it)


def test_estimate_is_rated_watts_times_busy_cpu_seconds_over_cpus(tmp_path):
    power = RatedPower(50.0, "table: Intel Xeon Platinum 8480+", 8 / 56, 4)
    meter = EnergyMeter(
        use_gpu=False, rapl_root=str(tmp_path), host_power=power, host_times=sampler(START, END)
    )
    meter.begin()
    got = meter.end(steps=5, batch_size=2)
    busy = 80 / HZ  # CPU-seconds
    assert got.cpu_source == CPU_ESTIMATE == "estimate (TDP x utilisation)"
    assert got.cpu_busy_s == pytest.approx(busy)
    # 50 W x (busy / (4 CPUs x window)) x window, over 5 steps
    assert got.cpu_j_per_step == pytest.approx(50.0 * busy / 4 / 5)
    assert (got.cpu_tdp_w, got.cpu_tdp_source, got.cpu_tdp_share) == (
        50.0,
        "table: Intel Xeon Platinum 8480+",
        8 / 56,
    )
    assert "RAPL" in got.reason  # why it is an estimate


def test_paused_span_is_left_out_of_the_busy_time(tmp_path):
    paused = [s + d for s, d in zip(START, [10, 0, 0, 0, 0, 0, 0, 0], strict=True)]
    resumed = [p + d for p, d in zip(paused, [30, 0, 0, 0, 0, 0, 0, 0], strict=True)]
    end = [r + d for r, d in zip(resumed, [5, 0, 0, 10, 0, 0, 0, 0], strict=True)]
    power = RatedPower(40.0, "--cpu-tdp", None, 2)
    meter = EnergyMeter(
        use_gpu=False,
        rapl_root=str(tmp_path),
        host_power=power,
        host_times=sampler(START, paused, resumed, end),
    )
    meter.begin()
    meter.pause()
    meter.resume()
    got = meter.end(steps=1, batch_size=1)
    assert got.cpu_busy_s == pytest.approx((10 + 5) / HZ)  # not the paused 30 jiffies
    assert got.cpu_j_per_step == pytest.approx(40.0 * 15 / HZ / 2)


def test_rapl_wins_where_readable(tmp_path):
    pkg = tmp_path / "intel-rapl:0"
    pkg.mkdir()
    (pkg / "max_energy_range_uj").write_text("10000000")
    (pkg / "energy_uj").write_text("1000000")
    power = RatedPower(50.0, "--cpu-tdp", None, 4)
    meter = EnergyMeter(
        use_gpu=False, rapl_root=str(tmp_path), host_power=power, host_times=sampler(START, END)
    )
    meter.begin()
    (pkg / "energy_uj").write_text("4000000")  # 3 J
    got = meter.end(steps=3, batch_size=1)
    assert got.cpu_source == "rapl" and got.cpu_j_per_step == pytest.approx(1.0)
    assert got.cpu_tdp_w is None and got.cpu_tdp_source is None
    assert got.cpu_busy_s == pytest.approx(80 / HZ)  # measured all the same


def test_unknown_cpu_leaves_host_energy_none_with_its_reason(tmp_path):
    reason = rated_power(None, HostCpu("AMD EPYC", 2, 1.0))
    meter = EnergyMeter(
        use_gpu=False, rapl_root=str(tmp_path), host_power=reason, host_times=sampler(START, END)
    )
    meter.begin()
    got = meter.end(steps=2, batch_size=1)
    assert got.cpu_source == "unavailable" and got.cpu_j_per_step is None
    assert got.cpu_tdp_w is None and "not in the TDP table" in got.reason


def test_no_clock_tick_is_unknown_not_zero(tmp_path):
    power = RatedPower(50.0, "--cpu-tdp", None, 4)
    meter = EnergyMeter(
        use_gpu=False, rapl_root=str(tmp_path), host_power=power, host_times=sampler(START, START)
    )
    meter.begin()
    got = meter.end(steps=2, batch_size=1)
    assert got.cpu_j_per_step is None and "did not advance" in got.reason


def test_cpu_tdp_is_no_part_of_a_sweep_points_identity():
    assert point_key(RunConfig(cpu_tdp_w=80.0)) == point_key(RunConfig())
    assert RunConfig.from_dict(RunConfig(cpu_tdp_w=80.0).to_dict()).cpu_tdp_w == 80.0


@pytest.mark.parametrize(
    ("command", "value"),
    [("run", "0"), ("run", "nan"), ("run", "abc"), ("sweep", "-3"), ("sweep", "inf")],
)
def test_bad_cpu_tdp_is_one_line_exit_2_and_writes_nothing(tmp_path, command, value):
    out = tmp_path / "never"
    res = cli(command, "--cpu-tdp", value, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "--cpu-tdp" in res.stderr
    assert not out.exists()


def test_run_records_the_estimate_from_a_stated_tdp(tmp_path):
    args = ("--workload", "tiny", "--table-size", "full", "--placement", "cpu")
    res = cli(
        "run", "--algo", "sgd", *args, "--iterations", "30", "--warmup", "1",
        "--cpu-tdp", "40", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "runs.jsonl").read_text())
    energy, steps = rec["energy"], rec["timing"]["measured_iters"]
    if energy["cpu_busy_s"] is None:  # the 10 ms clock did not tick in the window
        assert energy["cpu_j_per_step"] is None and "did not advance" in energy["reason"]
        return
    assert energy["cpu_source"] == CPU_ESTIMATE and energy["cpu_tdp_source"] == "--cpu-tdp"
    assert energy["cpu_tdp_w"] == 40.0 and energy["cpu_tdp_share"] is None
    cpus = rec["env"]["cpu_count"]
    want = 40.0 * energy["cpu_busy_s"] / cpus / steps
    assert energy["cpu_j_per_step"] == pytest.approx(want)
    # busy CPU-seconds cannot exceed the CPUs' time in the window (one tick of slack each)
    assert energy["cpu_busy_s"] <= cpus * (energy["window_s"] + 2 / HZ)
    assert "host CPU J/step" in res.stdout and "--cpu-tdp" in res.stdout


def test_records_round_trip_the_new_fields_and_old_ones_load(tmp_path):
    from lazydp_bench.records.schema import new_header

    old_energy = {"source": "nvml", "gpu_j_per_step": 1.5, "cpu_source": "unavailable"}
    new_energy = {
        **old_energy,
        "cpu_source": CPU_ESTIMATE,
        "cpu_j_per_step": 0.25,
        "cpu_tdp_w": 50.0,
        "cpu_tdp_source": "table: Intel Xeon Platinum 8480+",
        "cpu_tdp_share": 8 / 56,
        "cpu_busy_s": 12.0,
    }
    base = {"config": {"algo": "sgd"}, "env": {}, "timing": {}, "stages": [], "memory": {}}
    path = tmp_path / "runs.jsonl"
    append_record(path, {**new_header("ok"), **base, "energy": new_energy})
    v1 = {**base, "schema_version": 1, "run_id": "old", "status": "ok", "energy": old_energy}
    with open(path, "a") as f:
        f.write(json.dumps(v1) + "\n")  # a record written before the host estimate
    new, old = load_records([path])
    assert new["energy"] == new_energy
    assert old["energy"]["cpu_source"] == "unavailable" and old["energy"]["gpu_j_per_step"] == 1.5
    assert all(old["energy"][k] is None for k in ("cpu_tdp_w", "cpu_tdp_source", "cpu_busy_s"))
    assert upgrade({"schema_version": 2, "energy": None})["energy"] is None


def test_info_names_the_rated_power_or_why_there_is_none():
    from lazydp_bench.measure.info import rated_power_text

    host = parse_cpuinfo(cpuinfo("AMD EPYC 9654 96-Core Processor", 16, 16, 8))
    text = rated_power_text(rated_power(None, host))
    assert text == "30.0 W (table: AMD EPYC 9654, x 0.0833 of a socket)"  # 360 W x 8/96
    assert rated_power_text("no TDP") == "no TDP"
