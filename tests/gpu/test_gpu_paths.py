"""The GPU measurement paths on real NVIDIA hardware: CUDA sync, CUDA memory, NVML energy, power,
utilisation, clocks, temperature and throttle reasons, and the probe's GPU detection.

These run where CUDA and NVML are present (scripts/gpu_reference.sh runs them on the device
machine, without Ray) and skip elsewhere, saying so: nothing here can be faked on a CPU.
docs/measurement.md lists which paths these checks have verified on which GPU.
"""

from __future__ import annotations

import time

import pytest
import torch

from benchmarks import loadgen_harness as lgh
from benchmarks.environment import gpu_state, static_environment
from benchmarks.sensors import MeasurementWindow, energy_counter
from cluster.probe import nvml, probe_local

if not torch.cuda.is_available() or nvml() is None:
    pytest.skip("GPU path checks need an NVIDIA GPU with CUDA and NVML; this machine has neither "
                "(they run on a GPU machine through scripts/gpu_reference.sh)", allow_module_level=True)

DEVICE = torch.device("cuda", 0)


def busy_gpu(seconds: float) -> int:
    """Keep GPU 0 busy with matmuls for about `seconds`; returns how many ran."""
    a = torch.randn(4096, 4096, device=DEVICE)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(8):
            a = a @ a
            a = a / a.norm()
        torch.cuda.synchronize()
        n += 8
    return n


def test_probe_sees_the_gpu():
    hw = probe_local()
    assert hw.device_count >= 1 and hw.accelerator_type not in ("", "cpu")
    env = static_environment([0])
    assert env["env_gpu_name"] and env["env_gpu_driver"]


def test_nvml_energy_counter_rises_under_load():
    meter = energy_counter([0])
    assert meter is not None and meter.source == "nvml"
    e0 = meter.read_j()
    busy_gpu(1.0)
    e1 = meter.read_j()
    watts = (e1 - e0) / 1.0
    assert 20 < watts < 1500, f"{watts:.0f} W over a busy second is outside any NVIDIA GPU's range"


def test_window_records_energy_power_utilisation_and_gpu_state():
    with MeasurementWindow([0], torch.cuda.synchronize) as w:
        busy_gpu(1.5)
    s = w.stats
    assert s.energy_source == "nvml" and s.energy_j and s.energy_j > 0
    assert s.avg_power_w and 20 < s.avg_power_w < 1500
    assert s.gpu_util_pct is not None and s.gpu_util_pct > 10
    state = gpu_state([0])
    assert state["env_gpu_sm_clock_mhz"] and state["env_gpu_sm_clock_mhz"] > 100
    assert state["env_gpu_temperature_c"] and 10 < state["env_gpu_temperature_c"] < 110
    assert state["env_gpu_throttle_reasons"]  # "none" or the active reasons, never empty


def test_predictor_waits_for_the_gpu():
    # torch.cuda._sleep spins the GPU for a number of SM cycles: the synchronised predictor must
    # not return before the kernel is done, or every GPU latency would be the launch time.
    clock_hz = float(gpu_state([0])["env_gpu_sm_clock_mhz"] or 1000) * 1e6
    expected_s = 0.02
    cycles = int(clock_hz * expected_s)

    def run(batch: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(cycles)
        return batch[:, 0].long()

    predict = lgh.torch_predictor(run, DEVICE, torch.cuda.synchronize)
    x = torch.zeros(4, 3).pin_memory()
    with torch.inference_mode():
        predict(x)  # warm-up: the first call also loads the kernel
        t0 = time.perf_counter()
        out = predict(x)
        waited = time.perf_counter() - t0
    assert out.device.type == "cpu" and out.shape == (4,)
    assert waited >= 0.75 * expected_s, f"returned after {waited * 1e3:.1f} ms, before its ~20 ms kernel ended"


def test_gpu_trial_records_cuda_memory_energy_and_environment(tmp_path):
    from benchmarks.core import run_trial
    from benchmarks.spec import LoadGenSettings, SweepSpec, expand_trials

    hw = probe_local()
    spec = SweepSpec(name="gpu-check", asset="digits-mlp", hardware=[hw.name],
                     space={"batch_size": [32], "dtype": ["float32", "bfloat16"]},
                     loadgen=LoadGenSettings(scenarios=["SingleStream", "Offline"], min_duration_ms=300),
                     results_uri=str(tmp_path))
    for trial in expand_trials(spec, {hw.name: hw}):
        rows = run_trial(trial)
        for row in rows:
            assert row["status"] == "ok", row.get("error")
            assert row["peak_memory_mb"] and row["peak_memory_mb"] > 0  # torch.cuda.max_memory_allocated
            assert row["energy_source"] == "nvml" and row["energy_j"] > 0
            assert row["env_gpu_name"] and row["env_gpu_sm_clock_mhz"]
            assert row["accuracy"] and row["accuracy"] > 0.8
