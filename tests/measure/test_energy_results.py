"""Energy meter with a mocked NVML (autospec) and fake RAPL files; the results store."""

import json
from unittest import mock

import pynvml
import pytest

from lazydp_bench.measure.energy import EnergyMeter
from lazydp_bench.records.store import append_record, load_records


def fake_nvml(readings_mj):
    nvml = mock.create_autospec(pynvml, instance=True)
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = list(readings_mj)
    nvml.nvmlDeviceGetPowerUsage.return_value = 60_000  # mW
    return nvml


def test_joules_per_step_from_counter_deltas(tmp_path):
    nvml = fake_nvml([1_000, 5_000, 45_000])  # probe, begin, end
    meter = EnergyMeter(use_gpu=True, nvml_module=nvml, rapl_root=str(tmp_path))
    assert meter.measure_idle(seconds=0.01, samples=2) == 60.0
    meter.begin()
    result = meter.end(steps=10, batch_size=4)
    assert result.source == "nvml"
    assert result.gpu_j_per_step == pytest.approx(4.0)  # 40 J over 10 steps
    assert result.gpu_j_per_sample == pytest.approx(1.0)  # 40 J over 40 samples
    assert result.gpu_avg_w == pytest.approx(40.0 / result.window_s)
    assert result.gpu_idle_w == 60.0
    assert result.warning is not None  # a window this short is flagged
    nvml.nvmlDeviceGetHandleByIndex.assert_called_once_with(0)


def test_counter_that_did_not_tick_is_unknown_not_zero(tmp_path):
    meter = EnergyMeter(use_gpu=True, nvml_module=fake_nvml([7, 7, 7]), rapl_root=str(tmp_path))
    meter.begin()
    result = meter.end(steps=3, batch_size=2)
    assert result.gpu_j_per_step is None and "did not advance" in result.reason


def test_without_nvml_fields_are_null_with_reason(tmp_path):
    nvml = mock.create_autospec(pynvml, instance=True)
    nvml.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    meter = EnergyMeter(use_gpu=True, nvml_module=nvml, rapl_root=str(tmp_path))
    meter.begin()
    result = meter.end(steps=5, batch_size=2)
    assert result.source == "unavailable"
    assert result.gpu_j_per_step is None and result.gpu_avg_w is None
    assert "NVML" in result.reason and "RAPL" in result.reason
    assert meter.measure_idle() is None


def test_rapl_package_energy_with_wraparound(tmp_path):
    pkg = tmp_path / "intel-rapl:0"
    sub = tmp_path / "intel-rapl:0:0"  # a sub-domain: must not be double counted
    for d in (pkg, sub):
        d.mkdir()
        (d / "max_energy_range_uj").write_text("1000000")
    (pkg / "energy_uj").write_text("900000")
    (sub / "energy_uj").write_text("5")
    meter = EnergyMeter(use_gpu=False, rapl_root=str(tmp_path))
    meter.begin()
    (pkg / "energy_uj").write_text("100000")  # wrapped: 0.2 J used
    result = meter.end(steps=2, batch_size=1)
    assert result.cpu_source == "rapl"
    assert result.cpu_j_per_step == pytest.approx(0.1)


def test_append_is_one_line_per_record_and_loads_back(tmp_path):
    from lazydp_bench.records.schema import new_header

    def record(run_id: str, algo: str, step_ms: float) -> dict:
        head = {**new_header("ok"), "run_id": run_id}
        timing = {"step_median_ms": step_ms}
        return {**head, "config": {"algo": algo}, "env": {}, "timing": timing, "stages": []} | {
            "memory": {}
        }

    path = tmp_path / "runs.jsonl"
    append_record(path, record("a", "sgd", float("inf")))
    append_record(path, record("b", "lazydp", 1.0))
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["timing"]["step_median_ms"] is None
    with open(path, "a") as f:
        f.write('{"schema_version": 1, "run_id": "torn"')  # a crash mid-write
    with pytest.warns(UserWarning, match="malformed"):
        records = load_records([tmp_path])
    assert [r["run_id"] for r in records] == ["a", "b"]
    assert [r["config"]["algo"] for r in records] == ["sgd", "lazydp"]


def test_v1_bench_noise_record_is_upgraded():
    """v1 spelled the host placement `host` and had no key width or bounds."""
    from lazydp_bench.records.store import SCHEMA_VERSION, upgrade

    v1 = {
        "schema_version": 1,
        "kind": "bench_noise",
        "config": {"placement": "host"},
        "noise": {"engine": "host-threaded", "rng": "torch mt19937"},
        "bench": {"pct_of_copy": 18.6},
    }
    got = upgrade(v1)
    assert got["schema_version"] == SCHEMA_VERSION == 2
    assert got["config"]["placement"] == "cpu"
    assert got["noise"]["key_bits"] is None
    assert got["bench"]["pct_of_bound"] is None and got["bench"]["pct_of_copy"] == 18.6


def test_nvml_is_opened_in_one_place_and_never_raises():
    from types import SimpleNamespace

    from lazydp_bench.measure.nvml import NvmlDevice, open_device

    def broken_init():
        raise RuntimeError("Driver Not Loaded")

    ok = SimpleNamespace(nvmlInit=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i))
    assert open_device(1, ok) == NvmlDevice(ok, ("gpu", 1))
    broken = SimpleNamespace(nvmlInit=broken_init)
    assert open_device(0, broken) == "NVML unavailable: Driver Not Loaded"
