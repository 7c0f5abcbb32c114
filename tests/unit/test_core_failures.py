"""Failed trials return rows (status failed, error said); bad specs raise a clear ValueError."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.core import resolve_threads, run_trial
from benchmarks.spec import LoadGenSettings, TrialSpec
from cluster.hardware import HardwareSpec

CPU = HardwareSpec(name="test-cpu", accelerator_type="cpu", cpu_cores=2)
GPU = HardwareSpec(name="test-a10g", accelerator_type="A10G", device_count=1, cpu_cores=4)
FIXTURE = str(Path(__file__).resolve().parent.parent / "fixtures" / "user_asset.py")
FAST = LoadGenSettings(scenarios=["SingleStream", "Offline"], min_duration_ms=30, min_query_count=8, offline_samples=32)


def spec(tmp_path, asset="digits-mlp", hardware=CPU, config=None, task="infer"):
    return TrialSpec(sweep_id="unit", trial_id="f", repeat=0, asset=asset, task=task, hardware=hardware,
                     config=config if config is not None else {"batch_size": 4, "threads": 1}, seed=0,
                     loadgen=FAST, log_dir=str(tmp_path / "logs"))


def test_unknown_asset_raises_naming_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown asset 'nope'.*digits-mlp.*tiny-cnn"):
        run_trial(spec(tmp_path, asset="nope"))


def test_task_the_asset_lacks_raises(tmp_path):
    with pytest.raises(ValueError, match="tiny-cnn.*supports tasks"):
        run_trial(spec(tmp_path, asset="tiny-cnn", task="train"))


def test_model_error_gives_failed_rows(tmp_path):
    rows = run_trial(spec(tmp_path, asset=f"{FIXTURE}:Broken"))
    assert [r["scenario"] for r in rows] == ["SingleStream", "Offline"]
    for r in rows:
        assert r["status"] == "failed" and "broken on purpose" in r["error"]
        assert r["throughput_samples_per_s"] is None and r["latency_p50_ms"] is None and r["accuracy"] is None
        assert r["hardware"] == "test-cpu" and r["cfg_batch_size"] == 4 and r["duration_s"] > 0
    assert (tmp_path / "logs" / "unit" / "f-r0" / "error.txt").exists()


def test_error_during_one_scenario_fails_only_that_row(tmp_path):
    s = spec(tmp_path, asset=f"{FIXTURE}:FailsInWorker")
    s.loadgen = LoadGenSettings(scenarios=["SingleStream", "Server", "Offline"], min_duration_ms=30,
                                min_query_count=8, offline_samples=32, server_target_qps=200)
    ss, server, off = run_trial(s)
    assert ss["status"] == "ok" and off["status"] == "ok"
    assert server["status"] == "failed" and "model failed in a worker thread" in server["error"]
    assert (tmp_path / "logs" / "unit" / "f-r0" / "error-Server.txt").exists()


def test_gpu_hardware_without_gpu_fails_clearly(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rows = run_trial(spec(tmp_path, hardware=GPU))
    assert all(r["status"] == "failed" for r in rows)
    assert "asks for 1 x A10G GPU" in rows[0]["error"] and "torch.cuda.is_available() is False" in rows[0]["error"]
    assert rows[0]["accelerator_type"] == "A10G" and rows[0]["device_count"] == 0


def test_float16_on_cpu_fails_with_reason(tmp_path):
    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "dtype": "float16"}))
    assert all(r["status"] == "failed" and "float16 is not benchmarked on CPU" in r["error"] for r in rows)


def test_bad_dtype_is_a_failed_row_naming_the_field(tmp_path):
    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "dtype": "int3"}))
    assert "config 'dtype' must be one of" in rows[0]["error"]


def test_progress_callback_errors_do_not_fail_the_trial(tmp_path):
    def bad(_event):
        raise RuntimeError("dashboard down")

    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "threads": 1}), progress=bad)
    assert all(r["status"] == "ok" for r in rows)


def test_threads_resolution():
    import os

    s = TrialSpec(sweep_id="s", trial_id="t", repeat=0, asset="digits-mlp", task="infer", hardware=CPU,
                  config={"threads": 3}, seed=0)
    assert resolve_threads(s) == 3
    s.config = {}
    s.num_cpus = 1
    assert resolve_threads(s) == 1
    s.num_cpus = None
    assert resolve_threads(s) == min(2, len(os.sched_getaffinity(0)))


def test_bad_threads_value_is_a_failed_row(tmp_path):
    rows = run_trial(spec(tmp_path, config={"batch_size": 4, "threads": 0}))
    assert all(r["status"] == "failed" and "'threads' must be a positive integer" in r["error"] for r in rows)
    assert rows[0]["num_threads"] is None
