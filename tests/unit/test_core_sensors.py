"""Sensors and environment: honest Nones without a sensor, RAPL wraparound, background load, versions."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks import environment, sensors


def test_window_without_energy_sensor_says_none(monkeypatch):
    monkeypatch.setattr(sensors, "RAPL_ROOT", "/nonexistent")
    monkeypatch.setattr(sensors, "rapl_zones", lambda root="/nonexistent": [])
    with sensors.MeasurementWindow() as w:
        t0 = sensors.process_cpu_s()
        while sensors.process_cpu_s() - t0 < 0.05:  # 50 ms of CPU, however busy the machine is
            sum(i * i for i in range(10_000))
    s = w.stats
    assert s.energy_source == "none" and s.energy_j is None and s.avg_power_w is None
    assert s.wall_s > 0 and s.cpu_util_pct > 0 and s.peak_memory_mb > 1
    assert s.gpu_util_pct is None and s.start_time.endswith("+00:00")


def test_rapl_counter_handles_wraparound(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (zone / "energy_uj").write_text("900000\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone: must not be counted twice
    zones = sensors.rapl_zones(str(tmp_path))
    assert zones == [zone]
    meter = sensors.RaplEnergy(zones)
    (zone / "energy_uj").write_text("950000\n")
    meter.poll()
    (zone / "energy_uj").write_text("50000\n")  # wrapped: +50000 to the top, +50000 after
    assert meter.read_j() == pytest.approx(0.15)


def test_rapl_on_this_machine_is_used_only_if_readable():
    zones = sensors.rapl_zones()
    counter = sensors.energy_counter([])
    assert (counter is None) == (not zones)


def test_nvml_energy_absent_without_gpu():
    if sensors.nvml() is not None:
        pytest.skip("NVML present")
    assert sensors.energy_counter([0]) is None
    assert environment.gpu_state([0]) == {"env_gpu_sm_clock_mhz": None, "env_gpu_temperature_c": None,
                                          "env_gpu_throttle_reasons": ""}


HOG = "import time\nt=time.time()\nwhile time.time()-t<{s}: pass"


def start_detached_hog(seconds: float) -> None:
    """A CPU hog that is not this process's child (a child would count as part of the trial)."""
    subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0" >/dev/null 2>&1 &', HOG.format(s=seconds)], check=True)


def test_background_load_is_flagged():
    start_detached_hog(2.5)
    time.sleep(0.4)
    with sensors.MeasurementWindow() as w:
        time.sleep(0.8)
    assert w.stats.other_cpu_cores is not None and w.stats.other_cpu_cores > 0.5
    assert w.stats.background_load is True


def test_own_children_are_part_of_the_trial_not_background(monkeypatch):
    child = subprocess.Popen([sys.executable, "-c", HOG.format(s=1.5)])
    try:
        before = sensors.other_processes_cpu()
        assert child.pid not in before.own
    finally:
        child.kill()
        child.wait()


def test_visible_gpu_indices_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert sensors.visible_gpu_indices(1) == [3]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert sensors.visible_gpu_indices(2) == [0, 1]
    assert sensors.visible_gpu_indices(0) == []


def test_static_environment_and_ray_version_without_importing_ray():
    env = environment.static_environment()
    assert env["env_python_version"] and env["env_torch_version"] and env["env_cpu_count"] >= 1
    assert env["env_gpu_name"] == "" or sensors.nvml() is not None
    if "ray" not in sys.modules:
        environment.ray_version()
        assert "ray" not in sys.modules


def test_core_never_imports_ray():
    code = "import sys, benchmarks.core, benchmarks.local_runner; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip() == "False"


def test_throttle_reasons_decode():
    assert environment.decode_throttle_reasons(0) == "none"
    assert environment.decode_throttle_reasons(0x4 | 0x40) == "sw_power_cap,hw_thermal_slowdown"
    assert environment.decode_throttle_reasons(0x1000) == "other_0x1000"


def test_process_started_inside_the_window_is_counted():
    with sensors.MeasurementWindow() as w:
        start_detached_hog(2.0)
        time.sleep(1.0)
    # the hog (plus whatever else runs here) used well over a quarter of a core during the window
    assert w.stats.other_cpu_cores > 0.25


def test_cpu_accounting_of_exited_children():
    b = sensors.ProcessCpu(own={1: 5.0, 2: 3.0}, reaped={1: 0.0, 2: 0.0}, started={1: 0.0, 2: 10.0}, uptime=100.0)
    # pid 2 exited (3 s before the window + 1 s inside), reaped by pid 1; pid 3 started inside the window
    a = sensors.ProcessCpu(own={1: 5.5, 3: 0.25}, reaped={1: 4.0, 3: 0.0}, started={1: 0.0, 3: 100.5}, uptime=101.0)
    assert sensors.other_cpu_between(b, a) == pytest.approx(0.5 + 4.0 + 0.25 - 3.0)
